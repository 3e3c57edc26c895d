"""README "Crashes and resuming", end to end: ``train.py fit --config configs/smoke.yaml`` (the shipped config's own
checkpointing) killed with SIGKILL mid-epoch, then the same command with ``--ckpt_path=last``, continues from the last
completed epoch with step count and fine-tuning schedule intact."""

from __future__ import annotations

import csv
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
STEPS = 6  # training batches per epoch


def command(run_dir: Path, progress: Path) -> list[str]:
    """The user's command: the shipped smoke config, made small, with a fine-tuning schedule whose state must
    survive the crash; ``Slowdown`` only paces training and reports progress (checkpointing is the config's)."""
    return [
        sys.executable, str(ROOT / "train.py"), "fit",
        "--config", str(ROOT / "configs" / "smoke.yaml"),
        f"--trainer.default_root_dir={run_dir}",
        "--trainer.max_epochs=2",
        f"--trainer.limit_train_batches={STEPS}",
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.callbacks+=ldoctor.callbacks.StagedFinetuning",
        "--trainer.callbacks.schedule={1: {stages: [layer4], lr_factor: 0.1}}",
        "--trainer.callbacks+=tests.crash_helpers.Slowdown",
        "--trainer.callbacks.seconds=0.25",
        f"--trainer.callbacks.progress={progress}",
    ]


def read(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def staged_state(checkpoint: dict) -> list:
    (state,) = [v for k, v in checkpoint["callbacks"].items() if k.startswith("StagedFinetuning")]
    return state["unfrozen"]


def progress_of(path: Path) -> tuple[int, int]:
    try:
        epoch, done = path.read_text().split()
    except (FileNotFoundError, ValueError):
        return -1, 0
    return int(epoch), int(done)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_the_readme_resume_command(tmp_path):
    run_dir, progress = tmp_path / "run", tmp_path / "progress"
    ckpt_dir = run_dir / "checkpoints"  # smoke.yaml: `dirpath: checkpoints`, under trainer.default_root_dir
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    args = command(run_dir, progress)
    log = (tmp_path / "killed.log").open("w")  # a file, not a pipe nobody reads while it runs
    process = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log)
    deadline, killed = time.time() + 240, False
    while time.time() < deadline and process.poll() is None:
        epoch, done = progress_of(progress)
        if epoch == 1 and done >= 2 and (ckpt_dir / "last.ckpt").exists():  # epoch 0 saved, epoch 1 under way
            process.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.02)
    process.wait(timeout=30)
    log.close()
    assert killed, (tmp_path / "killed.log").read_text()[-3000:]
    assert process.returncode == -signal.SIGKILL

    interrupted = read(ckpt_dir / "last.ckpt")  # loads: never corrupt
    assert (interrupted["epoch"], interrupted["global_step"]) == (0, STEPS)  # the last completed epoch
    assert staged_state(interrupted) == []  # the schedule had not reached epoch 1 yet
    # partial files as a save killed mid-write leaves them: the dead run's goes, a live process's and the user's stay
    stale = ckpt_dir / f".last.ckpt.tmp-{process.pid}"
    live = ckpt_dir / f".last.ckpt.tmp-{os.getpid()}"
    mine = ckpt_dir / "notes.tmp-1"
    for path in (stale, live, mine):
        path.write_bytes(b"partial")

    resumed = subprocess.run([*args, "--ckpt_path=last"], env=env, cwd=tmp_path, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Restored all states from the checkpoint at {ckpt_dir / 'last.ckpt'}" in resumed.stderr
    final = read(ckpt_dir / "last.ckpt")
    assert (final["epoch"], final["global_step"]) == (1, 2 * STEPS)
    # the rerun logged epoch 1 only (into the logger's next version folder): it did not start again from epoch 0
    versions = sorted((run_dir / "lightning_logs").glob("version_*"))
    assert [v.name for v in versions] == ["version_0", "version_1"]
    with open(versions[1] / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and {int(float(r["epoch"])) for r in rows if r["epoch"]} == {1}
    assert min(int(r["step"]) for r in rows if r.get("train/loss")) >= STEPS
    assert staged_state(final) == [{"epoch": 1, "stage": "layer4", "lr_factor": 0.1}]
    groups = {g["name"]: g["lr"] for g in final["optimizer_states"][0]["param_groups"]}
    assert groups["trunk.layer4"] == pytest.approx(1e-4) and groups["heads"] == pytest.approx(1e-3)
    assert not stale.exists() and live.exists() and mine.exists()
    assert sorted(p.name for p in ckpt_dir.glob(".*.tmp-*")) == [live.name]  # the resumed run's saves finished


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
