"""Lightning callbacks of ldoctor."""

from ldoctor.callbacks.feature_stacking import FeatureStacking
from ldoctor.callbacks.operating_points import OperatingPoints, read_operating_points
from ldoctor.callbacks.staged_finetuning import StagedFinetuning, UnfreezeStep
from ldoctor.callbacks.wandb_media import WandbMediaLogger

__all__ = [
    "FeatureStacking",
    "OperatingPoints",
    "StagedFinetuning",
    "UnfreezeStep",
    "WandbMediaLogger",
    "read_operating_points",
]
