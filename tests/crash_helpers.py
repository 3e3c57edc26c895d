"""Callbacks that subprocess tests load through the CLI (``--trainer.callbacks+=tests.crash_helpers.Slowdown``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L


class Slowdown(L.Callback):
    """Sleep after every training batch so a test can kill the process mid-epoch; with ``progress``, first write
    ``"<epoch> <batches done in it>"`` to that file (replaced atomically), so the test knows where training is."""

    def __init__(self, seconds: float = 0.3, progress: str | None = None) -> None:
        self.seconds = seconds
        self.progress = progress

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.progress is not None:
            tmp = Path(f"{self.progress}.tmp")
            tmp.write_text(f"{trainer.current_epoch} {batch_idx + 1}")
            os.replace(tmp, self.progress)
        time.sleep(self.seconds)


class RankDump(L.Callback):
    """Write each rank's weighting parameters, trunk weights and last validation metrics to ``out_dir``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.val_metrics: dict[str, float] = {}

    def on_validation_end(self, trainer, pl_module) -> None:
        self.val_metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}

    def on_train_end(self, trainer, pl_module) -> None:
        import torch

        state = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "log_vars": pl_module.weighting.log_vars.detach().clone(),
            "trunk": {k: v.detach().clone() for k, v in pl_module.backbone.state_dict().items()},
            "val_metrics": self.val_metrics,
            "val_samples": len(trainer.val_dataloaders["tumor"].sampler),
        }
        torch.save(state, f"{self.out_dir}/rank{trainer.global_rank}.pt")


class _OddUnlabelled:
    """Wrap a dataset: samples at odd indices lose their label (NaN = unknown)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        import torch

        item = dict(self.dataset[index])
        if index % 2:
            item["label"] = torch.full_like(torch.as_tensor(item["label"], dtype=torch.float32), float("nan"))
        return item


def _odd_unlabelled_tumor():
    from datamodules.synthetic import SyntheticTumorDataModule

    class OddUnlabelledTumor(SyntheticTumorDataModule):
        """Synthetic tumor data whose validation samples at odd indices are unlabelled: with two DDP processes and
        Lightning's distributed sampler (rank r gets indices r, r + 2, ...), rank 1 sees no tumor label at all."""

        def setup(self, stage: str) -> None:
            super().setup(stage)
            self.val_dataset = _OddUnlabelled(self.val_dataset)

    return OddUnlabelledTumor


OddUnlabelledTumor = _odd_unlabelled_tumor()
