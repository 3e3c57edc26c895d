"""``make demo`` end to end, cut to a few steps: the 1v3 model on the shipped real data of every task."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow


def test_demo_trains_on_the_shipped_real_data_and_prints_every_task(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "ldoctor.demo", "--trainer.max_epochs=1", "--data.init_args.steps_per_epoch=3",
         "--trainer.limit_val_batches=2", "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)  # cwd outside the repository
    assert run.returncode == 0, run.stderr[-4000:]
    table = run.stdout[run.stdout.index("Validation, last epoch:"):]
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()[2:5]}
    assert set(rows) == {"tumor", "disease", "drug"}
    auroc = {task: float(cells[0]) for task, cells in rows.items() if task != "drug"}
    assert all(0.0 <= v <= 1.0 for v in auroc.values())
    assert re.search(r"checkpoint: .*\.ckpt", run.stdout)
    assert re.search(r"disease auroc: macro over \d+ of 14 labels", run.stdout)  # the macro names what it leaves out
    # the data were the shipped real folders, whatever the working directory
    demo_data = ROOT / "ldoctor" / "demo_data"
    assert f"LIDCDataModule reading {demo_data / 'lidc-real' / 'lidc-slices'}" in run.stdout
    assert f"ChestXray14DataModule reading {demo_data / 'nih-cxr14-64'}" in run.stdout
    assert f"MIMICDrugDataModule reading {demo_data / 'mimic3-demo'}" in run.stdout
    # it ends with the report of a composite validation case with all three tasks, from the last checkpoint
    html = tmp_path / "report" / "report.html"
    assert f"case report: {html}" in run.stdout and html.is_file()
    report = json.loads(html.with_name("report.json").read_text())
    assert report["case"]["inputs"] == ["ct", "radiograph", "history"] and report["problems"] == []
    (nodule,) = report["tumor"]["nodules"]
    assert nodule["diameter_source"] == "candidate list" and nodule["diameter_mm"] > 0  # the readers' mean diameter
    assert len(report["disease"]["findings"]) == 14 and report["drug"]["admissions"] >= 2
