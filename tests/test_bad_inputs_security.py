"""No code runs from a checkpoint, wherever it comes from: the CLI's ``--ckpt_path`` (a local file or a URL),
``MultiTaskModule.load_from_checkpoint`` and the benchmarks read checkpoints with ``weights_only=True``.

Each test serves or writes a checkpoint that runs ``touch MARKER`` when fully unpickled, goes through the real
entry point, and asserts that the load was refused and the marker file does not exist.
"""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading

import pytest
import torch

from ldoctor.module import MultiTaskModule
from tests.helpers import ROOT


class Payload:
    """Unpickled in full, this runs a shell command (``os.system``): what a crafted checkpoint does."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def crafted(tmp_path):
    """A checkpoint whose unpickling would create ``tmp_path / "pwned"``; served over HTTP from ``tmp_path``."""
    marker = tmp_path / "pwned"
    served = tmp_path / "served"
    served.mkdir()
    torch.save({"state_dict": {}, "hyper_parameters": {}, "pytorch-lightning_version": "2.6.0",
                "callbacks": Payload(marker)}, served / "evil.ckpt")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"marker": marker, "file": served / "evil.ckpt",
           "url": f"http://127.0.0.1:{server.server_address[1]}/evil.ckpt"}
    server.shutdown()


def run_cli(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "TORCH_HOME": str(tmp_path / "torch")}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("where", ["url", "file"])
def test_cli_ckpt_path_never_runs_code_from_a_checkpoint(crafted, tmp_path, where):
    run = run_cli(["validate", "--config", "configs/smoke.yaml", f"--trainer.default_root_dir={tmp_path / 'run'}",
                   "--trainer.logger=false", f"--ckpt_path={crafted[where]}"], tmp_path)
    assert run.returncode != 0
    assert "Weights only load failed" in run.stderr  # the load was tried, and refused before any code ran
    assert not crafted["marker"].exists()


def test_cli_refuses_weights_only_false(crafted, tmp_path):
    run = run_cli(["validate", "--config", "configs/smoke.yaml", f"--trainer.default_root_dir={tmp_path / 'run'}",
                   "--trainer.logger=false", f"--ckpt_path={crafted['url']}", "--weights_only=false"], tmp_path)
    assert run.returncode != 0
    assert f"{crafted['url']}: ldoctor reads checkpoints with weights_only=True only" in run.stderr
    assert not crafted["marker"].exists()


@pytest.mark.parametrize("where", ["url", "file"])
def test_load_from_checkpoint_never_runs_code(crafted, monkeypatch, tmp_path, where):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(Exception, match="Weights only load failed"):
        MultiTaskModule.load_from_checkpoint(str(crafted[where]), map_location="cpu")
    assert not crafted["marker"].exists()
    with pytest.raises(ValueError, match="weights_only=True only"):
        MultiTaskModule.load_from_checkpoint(str(crafted[where]), weights_only=False)
    assert not crafted["marker"].exists()


def test_chestxray14_benchmark_ckpt_url_never_runs_code(crafted, tmp_path):
    from tests.fixtures.nih import write_nih_dataset

    root = write_nih_dataset(tmp_path / "nih", num_patients=12, image_size=32, seed=1).root
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_HOME": str(tmp_path / "torch")}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "chestxray14.py"), "--root", str(root),
                          "--folds", "0", "--ckpt", crafted["url"], "--out", str(tmp_path / "r.json")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "Weights only load failed" in run.stderr
    assert not crafted["marker"].exists()
