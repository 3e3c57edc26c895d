"""Shared test set-up: offline W&B, quiet Lightning, small CPU trainers."""

from __future__ import annotations

import logging
import os
import warnings

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _quiet_lightning():
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*No positive samples in targets.*")
        warnings.filterwarnings("ignore", message=".*No negative samples in targets.*")
        yield


@pytest.fixture()
def one_thread():
    """One intra-op thread for a test: on a shared 2-core machine this is several times faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
