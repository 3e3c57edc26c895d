"""Callbacks that subprocess tests load through the CLI (``--trainer.callbacks+=crash_helpers.Slowdown``)."""

from __future__ import annotations

import time

import lightning as L


class Slowdown(L.Callback):
    """Sleep after every training batch so a test can kill the process mid-epoch."""

    def __init__(self, seconds: float = 0.3) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)
