"""The offline W&B run folder holds the scalars, sample images, per-class AUROC tables and task weights."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from ldoctor.callbacks.wandb_media import caption, to_uint8
from ldoctor.cli import LDoctorCLI
from ldoctor.datasets.lidc import tumor_task
from ldoctor.datasets.nih import disease_task

ROOT = Path(__file__).resolve().parents[1]


def test_offline_run_folder_has_the_promised_keys(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    cli = LDoctorCLI(args=[
        "fit", "--config", str(ROOT / "configs" / "smoke.yaml"), "--config", str(ROOT / "configs" / "wandb.yaml"),
        f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false",
    ])
    wandb.finish()
    (run_dir,) = (tmp_path / "outputs" / "wandb").glob("offline-run-*")
    media = run_dir / "files" / "media"
    for task in ("tumor", "disease"):
        assert len(list((media / "images" / "val" / task).glob("samples_*.png"))) == 8
    (weights_table,) = (media / "table" / "weights").glob("table_*.table.json")
    weights = dict(json.loads(weights_table.read_text())["data"])
    assert set(weights) == {"tumor", "disease", "drug"}
    (auroc_table,) = (media / "table" / "val" / "disease").glob("auroc_table_*.table.json")
    rows = dict(json.loads(auroc_table.read_text())["data"])
    assert list(rows) == disease_task().class_names
    # the same numbers went to the CSV log, which always runs beside W&B
    (csv_file,) = (tmp_path / "outputs" / "csv").glob("version_*/metrics.csv")
    rows_csv = list(csv.DictReader(csv_file.open()))
    last_val = [r for r in rows_csv if r["val/disease/auroc_Hernia"]][-1]
    assert float(last_val["val/disease/auroc_Hernia"]) == pytest.approx(rows["Hernia"])
    assert weights == pytest.approx(cli.model.weighting.weights())  # the weights after the last step
    assert any(r["weights/tumor"] for r in rows_csv)
    assert (run_dir / f"run-{run_dir.name.split('-')[-1]}.wandb").stat().st_size > 0  # scalars, for `wandb sync`


def test_captions_and_image_scaling():
    image = to_uint8(torch.stack([torch.zeros(3, 4, 4), torch.ones(3, 4, 4)]))  # first view only: constant
    assert image.shape == (4, 4, 3) and int(image.max()) == 0
    ramp = to_uint8(torch.arange(48.0).view(3, 4, 4))
    assert (int(ramp.min()), int(ramp.max())) == (0, 255)
    text = caption(disease_task(), torch.tensor([1.0] + [0.0] * 12 + [1.0]), torch.linspace(0.9, 0.1, 14))
    assert text.startswith("labels: Atelectasis, Hernia | top: Atelectasis 0.90, Cardiomegaly 0.84")
    assert caption(tumor_task(), torch.tensor([float("nan")]), torch.tensor([0.25])) == (
        "label: unknown | p(malignant) = 0.25"
    )
