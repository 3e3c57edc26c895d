"""Lightning DDP on CPU with two processes (gloo): parameters stay in sync, metrics cover the whole val set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from ldoctor.cli import LDoctorCLI
from ldoctor.module import MultiTaskModule
from tests.helpers import tiny_trainer_kwargs

ROOT = Path(__file__).resolve().parents[1]


def run_ddp(config: Path, tmp_path: Path, train_batches: int) -> tuple[dict, dict]:
    """``train.py fit`` with ``config`` on two CPU processes (gloo); each rank's ``RankDump`` state."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    args = [
        sys.executable, str(ROOT / "train.py"), "fit", "--config", str(config),
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.strategy=ddp", "--trainer.accelerator=cpu", "--trainer.devices=2",
        "--trainer.max_epochs=1", f"--trainer.limit_train_batches={train_batches}",
        "--trainer.limit_val_batches=1.0", "--trainer.enable_progress_bar=false",
        "--trainer.callbacks+=tests.crash_helpers.RankDump", f"--trainer.callbacks.out_dir={tmp_path}",
    ]
    run = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr[-4000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    return rank0, rank1


def single_process_metrics(config: Path, tmp_path: Path) -> dict:
    """Validation metrics of the DDP run's checkpoint computed by one process on the whole validation set."""
    checkpoint = next(tmp_path.glob("lightning_logs/version_0/checkpoints/*.ckpt"))
    model = MultiTaskModule.load_from_checkpoint(checkpoint)
    cli = LDoctorCLI(args=["--config", str(config), "--trainer.limit_val_batches=1.0"], run=False)
    trainer = L.Trainer(**tiny_trainer_kwargs(tmp_path / "single", limit_val_batches=1.0))
    trainer.validate(model, datamodule=cli.datamodule, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs the gloo backend")
def test_ddp_two_cpu_processes(tmp_path):
    config = ROOT / "configs" / "smoke.yaml"
    rank0, rank1 = run_ddp(config, tmp_path, train_batches=3)
    assert (rank0["world_size"], rank1["rank"]) == (2, 1)
    assert rank0["val_samples"] == 16  # each rank sees half of the 32 validation samples ...
    # ... the weighting parameters moved and are identical on both ranks, as is every trunk tensor
    assert not torch.equal(rank0["log_vars"], torch.zeros(3))
    assert torch.equal(rank0["log_vars"], rank1["log_vars"])
    assert all(torch.equal(rank0["trunk"][k], rank1["trunk"][k]) for k in rank0["trunk"])

    # ... and the metrics were computed over all 32: one process on the full set with the final weights agrees
    single = single_process_metrics(config, tmp_path)
    for task in ("tumor", "disease", "drug"):
        key = f"val/{task}/auroc"
        assert rank0["val_metrics"][key] == rank1["val_metrics"][key]
        assert rank0["val_metrics"][key] == pytest.approx(single[key], abs=1e-6), key


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs the gloo backend")
def test_ddp_rank_without_labels_for_a_task_neither_hangs_nor_skews_metrics(tmp_path):
    # every odd validation index is unlabelled for tumor, so rank 1 never sees a tumor label
    config = tmp_path / "odd.yaml"
    config.write_text((ROOT / "configs" / "smoke.yaml").read_text().replace(
        "datamodules.synthetic.SyntheticTumorDataModule", "tests.crash_helpers.OddUnlabelledTumor"))
    rank0, rank1 = run_ddp(config, tmp_path, train_batches=2)
    single = single_process_metrics(config, tmp_path)
    # both ranks report the metrics of all 16 labelled tumor samples (all on rank 0), as one process does
    for key in ("val/tumor/auroc", "val/tumor/loss", "val/disease/auroc", "val/drug/auroc"):
        assert rank0["val_metrics"][key] == rank1["val_metrics"][key], key
        assert rank0["val_metrics"][key] == pytest.approx(single[key], abs=1e-5), key
