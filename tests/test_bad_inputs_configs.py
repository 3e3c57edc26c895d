"""Bad configurations through ``train.py fit`` (the CLI in-process): each refused naming the file, key or value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ldoctor.cli import LDoctorCLI
from ldoctor.errors import BadInput

ROOT = Path(__file__).resolve().parents[1]
NIH = ROOT / "ldoctor" / "demo_data" / "nih-cxr14-64"


def fit(tmp_path, *extra: str) -> LDoctorCLI:
    """``train.py fit`` on the shipped ChestX-ray14 config with the shipped real NIH images, small and quick."""
    return LDoctorCLI(args=[
        "fit", "--config", str(ROOT / "configs" / "chestxray14.yaml"), f"--trainer.default_root_dir={tmp_path}",
        "--trainer.accelerator=cpu", "--trainer.max_epochs=1", "--trainer.limit_train_batches=1",
        "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false", "--model.trunk=resnet18",
        "--data.image_size=32", "--data.num_workers=0", "--data.cache=none", f"--data.root={NIH}", *extra,
    ])


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_misspelt_key_is_refused_naming_it(tmp_path, capsys):
    with pytest.raises(SystemExit):
        fit(tmp_path, "--model.trunkk=resnet18")
    assert "unrecognized arguments: --model.trunkk=resnet18" in capsys.readouterr().err


def test_missing_config_file_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        fit(tmp_path, "--config", str(tmp_path / "nothere.yaml"))
    err = capsys.readouterr().err
    assert str(tmp_path / "nothere.yaml") in err and "does not exist" in err


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    broken = tmp_path / "mine.yaml"
    broken.write_text("model:\n  trunk: [resnet18\n")
    with pytest.raises(BadInput, match=re.escape(f"{broken} line 3, column 1") + ".*expected a YAML config file"):
        fit(tmp_path, "--config", str(broken))


def test_non_utf8_config_is_named(tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("# Patientin M\xfcller\nmodel:\n  trunk: resnet18\n".encode("latin-1"))
    with pytest.raises(BadInput, match=re.escape(f"{latin}: not UTF-8 text") + ".*expected a YAML config file"):
        fit(tmp_path, "--config", str(latin))


def test_unknown_trunk_lists_the_registered_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown trunk 'resnet19'; registered trunks: .*resnet18.*resnet50"):
        fit(tmp_path, "--model.trunk=resnet19")


def test_missing_data_root_is_named_with_the_key_to_fix(tmp_path):
    missing = tmp_path / "no-such-data"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing)) + ".*no ChestX-ray14 label table.*"
                       "check data.root"):
        fit(tmp_path, f"--data.root={missing}")


def test_zero_batch_size_is_refused_with_the_value(tmp_path):
    with pytest.raises(ValueError, match=r"batch_size must be >= 1, got 0"):
        fit(tmp_path, "--data.batch_size=0")


def test_cache_inside_the_data_folder_is_refused(tmp_path):
    inside = NIH / "cache"
    with pytest.raises(ValueError, match=re.escape(f"cache_dir {inside} lies inside the data folder {NIH}")):
        fit(tmp_path, "--data.cache=disk", f"--data.cache_dir={inside}")
    assert not inside.exists()  # nothing written into the user's data


def test_missing_checkpoint_to_resume_is_named(tmp_path):
    missing = tmp_path / "checkpoints" / "typo.ckpt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        fit(tmp_path, f"--ckpt_path={missing}")
