"""Small helpers shared by the tests (imported as ``tests.helpers``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def tiny_trainer_kwargs(tmp_path, **overrides) -> dict:
    """Keyword arguments of a small, silent CPU ``lightning.Trainer`` writing under ``tmp_path``."""
    kwargs = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": str(tmp_path),
        "max_epochs": 1,
    }
    kwargs.update(overrides)
    return kwargs


ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(script: str, args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python benchmarks/<script> ARGS`` as a user does (one torch thread, offline W&B); assert it succeeded."""
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stderr[-4000:]
    return run
