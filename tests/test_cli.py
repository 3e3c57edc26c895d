from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ldoctor.checkpoint_io import AtomicCheckpointIO
from ldoctor.cli import LDoctorCLI
from ldoctor.module import MultiTaskModule

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert (ROOT / "configs" / "smoke.yaml") in CONFIGS


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_config_parses(config, capsys):
    """``--print_config`` parses the file against the signatures without instantiating anything.

    A file without ``data`` is an overlay (e.g. ``wandb.yaml``): it is parsed on top of ``smoke.yaml``."""
    overlay = "data" not in (yaml.safe_load(config.read_text()) or {})
    base = ["--config", str(ROOT / "configs" / "smoke.yaml")] if overlay else []
    with pytest.raises(SystemExit) as exit_info:
        LDoctorCLI(args=["fit", *base, "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["class_path"].startswith("datamodules.")
    assert "trunk" in printed["model"]


def test_cli_from_python_as_in_a_notebook(tmp_path):
    cli = LDoctorCLI(
        args=[
            "fit",
            "--config", str(ROOT / "configs" / "smoke.yaml"),
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false",
        ],
    )
    assert isinstance(cli.model, MultiTaskModule)
    assert cli.model.task_names == ["tumor", "disease", "drug"]  # linked from data.tasks
    assert cli.trainer.global_step == 2
    assert {"val/tumor/auroc", "val/disease/auroc", "val/drug/auroc"} <= set(cli.trainer.callback_metrics)
    # the injected optimizer kept its settings and the module built the groups
    optimizer = cli.trainer.optimizers[0]
    assert {g["name"] for g in optimizer.param_groups} >= {"trunk", "heads", "weighting"}
    assert optimizer.defaults["lr"] == pytest.approx(1e-3)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_cli_rejects_a_typo(capsys):
    with pytest.raises(SystemExit):
        LDoctorCLI(args=["fit", "--config", str(ROOT / "configs" / "smoke.yaml"), "--model.dropuot=0.5"], run=False)
    assert "dropuot" in capsys.readouterr().err
