"""Lightning callbacks of ldoctor."""

from ldoctor.callbacks.feature_stacking import FeatureStacking
from ldoctor.callbacks.staged_finetuning import StagedFinetuning, UnfreezeStep
from ldoctor.callbacks.wandb_media import WandbMediaLogger

__all__ = ["FeatureStacking", "StagedFinetuning", "UnfreezeStep", "WandbMediaLogger"]
