"""W&B media: sample images with labels and predictions, per-class AUROC tables, task weights.

Scalars already reach W&B through ``self.log`` (``{split}/{task}/{metric}``, ``weights/{task}``); this callback
adds what a clinician or engineer looks at: for each image task, the first validation images with their
labels and predicted probabilities (``val/{task}/samples``); for each task, a table of per-class AUROC
(``val/{task}/auroc_table``); and a table of the current task weights (``weights/table``). It does nothing
when the trainer has no ``WandbLogger``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from ldoctor.tasks import TaskSpec


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """``[3, H, W]`` or ``[V, 3, H, W]`` (first view) -> ``[H, W, 3]`` uint8, min-max scaled per image."""
    if image.dim() == 4:
        image = image[0]
    image = image.float()
    low, high = image.min(), image.max()
    scaled = (image - low) / (high - low) if high > low else torch.zeros_like(image)
    return (scaled * 255).round().to(torch.uint8).permute(1, 2, 0).cpu()


def caption(spec: TaskSpec, label: torch.Tensor, probs: torch.Tensor, top: int = 3) -> str:
    """Short caption: the true positive classes and the most probable predictions."""
    names = spec.class_names
    if spec.kind == "binary":
        truth = "unknown" if torch.isnan(label).all() else f"{names[0]}={int(label.view(-1)[0])}"
        return f"label: {truth} | p({names[0]}) = {float(probs.view(-1)[0]):.2f}"
    if spec.kind == "multiclass":
        truth = "unknown" if torch.isnan(label).all() else names[int(label.view(-1)[0])]
        best = int(probs.argmax())
        return f"label: {truth} | predicted: {names[best]} ({float(probs[best]):.2f})"
    positives = [names[i] for i in torch.nonzero(label == 1).flatten().tolist()] or ["none"]
    order = torch.argsort(probs, descending=True)[:top].tolist()
    return f"labels: {', '.join(positives)} | top: " + ", ".join(f"{names[i]} {float(probs[i]):.2f}" for i in order)


class WandbMediaLogger(Callback):
    """Log sample predictions, per-class AUROC tables and task weights to W&B after each validation.

    Args:
        num_samples: images per task and validation run.
    """

    def __init__(self, num_samples: int = 8) -> None:
        super().__init__()
        self.num_samples = num_samples
        self._samples: dict[str, dict[str, Any]] = {}

    @staticmethod
    def _wandb_logger(trainer: L.Trainer) -> WandbLogger | None:
        return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx != 0 or trainer.sanity_checking or self._wandb_logger(trainer) is None:
            return
        name = pl_module.task_for_dataloader(dataloader_idx)
        spec = pl_module.task_specs[name]
        n = self.num_samples
        if "image" not in batch or spec.input_key != "image":
            return
        small = {k: (v[:n] if torch.is_tensor(v) else v[:n] if isinstance(v, list) else v) for k, v in batch.items()}
        with torch.no_grad():
            logits = pl_module.net.forward_task(name, small)
        probs = torch.softmax(logits, 1) if spec.kind == "multiclass" else torch.sigmoid(logits)
        self._samples[name] = {"image": small["image"].cpu(), "label": small["label"].cpu(), "probs": probs.cpu()}

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self._wandb_logger(trainer)
        if logger is None or trainer.sanity_checking:
            return
        step = trainer.global_step
        for name, sample in self._samples.items():
            spec = pl_module.task_specs[name]
            images = [to_uint8(img).numpy() for img in sample["image"]]
            captions = [caption(spec, lab, p) for lab, p in zip(sample["label"], sample["probs"])]
            logger.log_image(key=f"val/{name}/samples", images=images, caption=captions, step=step)
        self._samples = {}
        metrics = trainer.callback_metrics
        for name, spec in pl_module.task_specs.items():
            rows = [[c, float(metrics[f"val/{name}/auroc_{c}"])] for c in spec.class_names
                    if f"val/{name}/auroc_{c}" in metrics]
            if rows:
                logger.log_table(key=f"val/{name}/auroc_table", columns=["class", "auroc"], data=rows, step=step)
        weights = pl_module.weighting.weights()
        logger.log_table(key="weights/table", columns=["task", "weight"], data=[[t, w] for t, w in weights.items()],
                         step=step)
