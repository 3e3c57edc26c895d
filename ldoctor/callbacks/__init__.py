"""Lightning callbacks of ldoctor."""

from ldoctor.callbacks.staged_finetuning import StagedFinetuning, UnfreezeStep

__all__ = ["StagedFinetuning", "UnfreezeStep"]
