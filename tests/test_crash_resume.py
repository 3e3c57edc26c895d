"""A training process killed with SIGKILL mid-epoch resumes from ``last.ckpt`` with step count and schedule intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ldoctor.checkpoint_io import AtomicCheckpointIO

ROOT = Path(__file__).resolve().parents[1]


def cli_args(tmp_path: Path, ckpt_dir: Path) -> list[str]:
    return [
        sys.executable, str(ROOT / "train.py"), "fit",
        "--config", str(ROOT / "configs" / "smoke.yaml"),
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=8",
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        f"--trainer.callbacks.dirpath={ckpt_dir}",
        "--trainer.callbacks.every_n_train_steps=2",
        "--trainer.callbacks.save_last=true",
        "--trainer.callbacks.save_top_k=-1",
        "--trainer.callbacks+=ldoctor.callbacks.StagedFinetuning",
        '--trainer.callbacks.schedule={1: {stages: [layer4], lr_factor: 0.1}}',
    ]


def read(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def staged_state(checkpoint: dict) -> list:
    (state,) = [v for k, v in checkpoint["callbacks"].items() if k.startswith("StagedFinetuning")]
    return state["unfrozen"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    slow = ["--trainer.callbacks+=tests.crash_helpers.Slowdown", "--trainer.callbacks.seconds=0.4"]
    process = subprocess.Popen(cli_args(tmp_path, ckpt_dir) + slow, env=env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    killed_at = None
    while time.time() < deadline and process.poll() is None:
        last = ckpt_dir / "last.ckpt"
        if last.exists():
            try:
                step = read(last)["global_step"]
            except Exception:  # noqa: BLE001 - a reader may race the atomic replace only on non-POSIX systems
                step = -1
            if step >= 4:  # epoch 0 has 8 steps: 4 is mid-epoch
                process.send_signal(signal.SIGKILL)
                killed_at = step
                break
        time.sleep(0.05)
    process.wait(timeout=30)
    assert killed_at is not None, process.stderr.read().decode()[-3000:]
    assert process.returncode == -signal.SIGKILL

    interrupted = read(ckpt_dir / "last.ckpt")  # loads: never corrupt
    assert 4 <= interrupted["global_step"] < 8 and interrupted["epoch"] == 0
    assert staged_state(interrupted) == []  # the schedule had not reached epoch 1 yet

    resumed = subprocess.run(cli_args(tmp_path, ckpt_dir) + ["--ckpt_path=last"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = read(ckpt_dir / "last.ckpt")
    assert final["global_step"] == 16 and final["epoch"] == 1
    assert staged_state(final) == [{"epoch": 1, "stage": "layer4", "lr_factor": 0.1}]
    groups = {g["name"]: g["lr"] for g in final["optimizer_states"][0]["param_groups"]}
    assert groups["trunk.layer4"] == pytest.approx(1e-4) and groups["heads"] == pytest.approx(1e-3)
    assert not list(ckpt_dir.glob(".*.tmp-*"))  # the resumed run finished its saves cleanly


class Explodes:
    """Pickles halfway and then fails, like a process dying in the middle of ``torch.save``."""

    def __reduce__(self):
        raise RuntimeError("killed while saving")


def test_failed_save_keeps_the_previous_checkpoint(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 3, "weights": torch.ones(1000)}, path)
    with pytest.raises(RuntimeError, match="killed while saving"):
        io.save_checkpoint({"global_step": 4, "weights": torch.zeros(1000), "bad": Explodes()}, path)
    assert read(path)["global_step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
