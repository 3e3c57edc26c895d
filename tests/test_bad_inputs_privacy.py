"""No patient identifier reaches a logger: skip warnings carry salted pseudonyms, through ``train.py fit`` with W&B."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest

from ldoctor.cli import LDoctorCLI
from ldoctor.errors import BadInputLog
from ldoctor.privacy import file_pseudonym, find_file, main, pseudonym, redact
from tests.fixtures.nih import write_nih_dataset

ROOT = Path(__file__).resolve().parents[1]
SALT = "test-salt"


@pytest.fixture(autouse=True)
def _salt(monkeypatch):
    monkeypatch.setenv("LDOCTOR_PSEUDONYM_SALT", SALT)


def test_redact_replaces_paths_uids_ids_and_dates_consistently():
    uid = "1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192"
    text = (f"/data/LIDC-IDRI-0001/01-01-2000-30178/3000566-{uid}/1-001.dcm: series {uid} of patient LIDC-IDRI-0001 "
            "lacks RescaleSlope; ADMISSIONS.csv line 4: hadm_id 145834, subject_id 3 admitted 2101-10-20 19:08:00; "
            "images/00004711_000.png unreadable")
    out = redact(text)
    for secret in ("LIDC-IDRI-0001", "179049373636438705059720603192", "145834", "2101-10-20", "00004711", "/data",
                   "30178"):
        assert secret not in out, (secret, out)
    # the same value gives the same pseudonym, a file keeps its format suffix, public table names stay readable
    assert out.count(pseudonym(uid, "uid")) == 1 and file_pseudonym("x/1-001.dcm") in out
    assert "ADMISSIONS.csv line 4" in out and file_pseudonym("00004711_000.png").endswith(".png")
    assert "hadm_id " + pseudonym("145834") in out and "lacks RescaleSlope" in out
    # plain words that look like nothing identifying are kept
    assert redact("a patient-wise split of 12 patient ids, version 2.14.1") == (
        "a patient-wise split of 12 patient ids, version 2.14.1")
    with pytest.MonkeyPatch.context() as mp:  # another salt, other pseudonyms
        mp.setenv("LDOCTOR_PSEUDONYM_SALT", "other")
        assert redact(text) != out


def test_bad_input_log_keeps_full_messages_in_memory_and_logs_pseudonyms(caplog):
    bad = BadInputLog(skip_bad=True, source="ChestX-ray14 /secret/site")
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bad.report("unreadable images", "/secret/site/images/00004711_000.png: truncated PNG")
        bad.summary()
    logged = caplog.text + " ".join(str(w.message) for w in caught)
    assert "00004711" not in logged and "/secret" not in logged
    assert file_pseudonym("00004711_000.png") in logged and "truncated PNG" in logged
    assert bad.skipped == [("unreadable images", "/secret/site/images/00004711_000.png: truncated PNG")]


def test_skip_warnings_in_a_wandb_run_name_files_by_pseudonym(tmp_path, monkeypatch, caplog, capfd):
    """A truncated image skipped with ``skip_bad``: the W&B run folder, the CSV log and the console hold its
    pseudonym, never its name (the NIH patient number) or the data folder; the pseudonym leads back to the file."""
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_CONSOLE", "wrap")  # capture the console too (ldoctor's default turns it off)
    wandb.teardown()  # W&B reads its settings once per process: start afresh, with these
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "site-data"
    nih = write_nih_dataset(data, num_patients=12, image_size=32, seed=3)
    broken = nih.image_paths[0]
    broken.write_bytes(broken.read_bytes()[:40])  # cut short: no IEND
    patient_number = broken.name.split("_")[0]
    with caplog.at_level(logging.WARNING):
        LDoctorCLI(args=[
            "fit", "--config", str(ROOT / "configs" / "chestxray14.yaml"), "--config",
            str(ROOT / "configs" / "wandb.yaml"), f"--trainer.default_root_dir={tmp_path}",
            "--trainer.accelerator=cpu", "--trainer.max_epochs=1", "--trainer.limit_train_batches=1",
            "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false", "--model.trunk=resnet18",
            "--data.image_size=32", "--data.batch_size=4", "--data.num_workers=0", f"--data.root={data}",
            "--data.skip_bad=true",
        ])
    wandb.finish()
    wandb.teardown()  # the W&B service keeps this test's working directory; later runs in this process need a new one
    console = capfd.readouterr()
    logged = caplog.text + console.out + console.err
    assert file_pseudonym(broken.name) in logged  # named in the skip warning, by pseudonym
    files = [p for p in (tmp_path / "outputs").rglob("*") if p.is_file()]
    assert any(p.name == "output.log" for p in files)  # the console capture W&B would upload
    for path in files:
        text = path.read_bytes().decode("latin-1")
        assert broken.name not in text and f"{patient_number}_" not in text, path
    assert broken.name not in logged and str(data / "images") not in logged
    assert list(find_file(file_pseudonym(broken.name), data)) == [broken]
    assert main(["which", file_pseudonym(broken.name), str(data)]) == 0
