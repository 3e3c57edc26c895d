"""ChestX-ray14 DataModule: the real label table, the NIH layout, patient-wise splits, caching, bad input."""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from datamodules.chestxray14 import ChestXray14DataModule
from ldoctor.datasets.nih import CHESTXRAY14_FINDINGS, NIH_DEMO
from ldoctor.datasets.nih.records import (
    FINDINGS_COLUMN,
    PATIENT_COLUMN,
    findings_matrix,
    patient_splits,
    read_label_table,
)
from ldoctor.errors import BadInput
from ldoctor.evaluation.splits import check_patient_disjoint
from ldoctor.losses import MaskedBCEWithLogits
from tests.fixtures.nih import write_nih_dataset, write_other_patients
from tests.helpers import ROOT

DATA = Path(__file__).parent / "data" / "nih"
REAL_TABLE = DATA / "Data_Entry_2017_v2020.csv.gz"


# ---------------------------------------------------------------------------------------------- real table
@pytest.fixture(scope="module")
def real_table() -> pd.DataFrame:
    return read_label_table(REAL_TABLE)


def test_real_label_table_counts(real_table):
    """Known facts of the official table (NIH Data_Entry_2017_v2020.csv)."""
    assert len(real_table) == 112_120
    assert real_table[PATIENT_COLUMN].nunique() == 30_805
    labels, bad = findings_matrix(real_table[FINDINGS_COLUMN], REAL_TABLE)
    assert bad == []
    assert labels.shape == (112_120, 14)
    counts = dict(zip(CHESTXRAY14_FINDINGS, labels.sum(axis=0).astype(int)))
    assert counts["Hernia"] == 227
    assert counts["Infiltration"] == 19_894
    assert int((labels.sum(axis=1) == 0).sum()) == 60_361  # "No Finding" rows are all zero
    assert int((real_table[FINDINGS_COLUMN] == "No Finding").sum()) == 60_361


def test_real_table_patient_wise_split_is_disjoint(real_table):
    splits = patient_splits(real_table, None, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert sum(len(s) for s in splits.values()) == 112_120
    check_patient_disjoint({k: set(v[PATIENT_COLUMN]) for k, v in splits.items()})
    patients = {k: v[PATIENT_COLUMN].nunique() for k, v in splits.items()}
    assert patients["test"] == round(0.2 * 30_805)
    assert patients["val"] == round(0.1 * (30_805 - patients["test"]))
    again = patient_splits(real_table, None, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert all(splits[k].index.equals(again[k].index) for k in splits)  # seeded: reproducible


def test_a_patient_in_two_splits_is_refused():
    with pytest.raises(ValueError, match=r"train.*test.*1 patient.*2"):
        check_patient_disjoint({"train": {1, 2}, "val": {3}, "test": {2}})


# ---------------------------------------------------------------------------------------------- synthetic NIH
@pytest.fixture()
def nih(tmp_path):
    return write_nih_dataset(tmp_path / "nih", num_patients=24, image_size=32, seed=1)


def _dm(root, tmp_path=None, **kwargs) -> ChestXray14DataModule:
    kwargs.setdefault("image_size", 32)
    kwargs.setdefault("batch_size", 8)
    return ChestXray14DataModule(str(root), **kwargs)


def _ids(dm, split):
    return [r["id"] for r in dm.records[split]]


def test_official_lists_labels_and_patient_disjoint_validation(nih):
    dm = _dm(nih.root)
    dm.setup("fit")
    assert dm.official_split
    assert sorted(_ids(dm, "test")) == sorted(nih.test)
    assert sorted(_ids(dm, "train") + _ids(dm, "val")) == sorted(nih.train_val)
    assert dm.patients["val"] and not (dm.patients["val"] & dm.patients["train"])
    assert not (dm.patients["test"] & (dm.patients["train"] | dm.patients["val"]))
    truth = dict(zip(nih.table["Image Index"], nih.labels))
    for split in ("train", "val", "test"):
        for record in dm.records[split]:
            np.testing.assert_array_equal(record["label"], truth[record["id"]])
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (len(batch["id"]), 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (len(batch["id"]), 14)
    expected = torch.from_numpy(np.stack([truth[i] for i in batch["id"]]))
    torch.testing.assert_close(batch["label"], expected)
    assert dm.task.class_names == list(CHESTXRAY14_FINDINGS)


def test_nested_release_layout_and_gzipped_table(tmp_path):
    nih = write_nih_dataset(tmp_path / "nih", num_patients=12, image_size=32, nested=True, gzip_table=True)
    assert (tmp_path / "nih" / "Data_Entry_2017_v2020.csv.gz").is_file()
    dm = _dm(nih.root)
    dm.setup("fit")
    paths = [Path(r["image"]) for split in dm.records.values() for r in split]
    assert len(paths) == len(nih.table)
    assert {p.parent.parent.name for p in paths} == {"images_001", "images_002"}


def test_without_list_files_a_seeded_patient_split_and_a_warning(tmp_path):
    nih = write_nih_dataset(tmp_path / "nih", num_patients=30, image_size=32, list_files=False)
    with pytest.warns(UserWarning, match="NOT comparable to the official"):
        dm = _dm(nih.root, seed=3, test_fraction=0.2)
        dm.setup("fit")
    assert not dm.official_split
    assert len(dm.patients["test"]) == 6
    assert not (dm.patients["test"] & dm.patients["train"]) and not (dm.patients["val"] & dm.patients["train"])
    with pytest.warns(UserWarning):
        other = _dm(nih.root, seed=4, test_fraction=0.2)
        other.setup("fit")
    assert other.patients["test"] != dm.patients["test"]


def test_view_and_follow_up_filters(nih):
    dm = _dm(nih.root, view_positions=["pa"], max_follow_up=0)
    dm.setup("fit")
    views = dict(zip(nih.table["Image Index"], nih.table["View Position"]))
    ids = [i for split in ("train", "val", "test") for i in _ids(dm, split)]
    assert ids and all(views[i] == "PA" for i in ids) and all(i.endswith("_000.png") for i in ids)
    expected = nih.table[(nih.table["View Position"] == "PA") & (nih.table["Follow-up #"] == 0)]
    assert sorted(ids) == sorted(expected["Image Index"])


def test_pos_weight_from_training_labels(nih):
    dm = _dm(nih.root)
    dm.setup("fit")
    truth = dict(zip(nih.table["Image Index"], nih.labels))
    train = np.stack([truth[i] for i in _ids(dm, "train")])
    positives = train.sum(0)
    expected = np.where(positives > 0, (len(train) - positives) / np.maximum(positives, 1), 1.0)
    loss = MaskedBCEWithLogits(dm.task, pos_weight="auto")
    loss.init_from_data(dm)  # what MultiTaskModule does when fit starts
    torch.testing.assert_close(loss.pos_weight, torch.tensor(expected, dtype=torch.float32))


def test_cache_means_later_epochs_never_decode_again(nih, tmp_path):
    dm = _dm(nih.root, cache="disk", cache_dir=str(tmp_path / "cache"))
    dm.setup("fit")
    first = [dm.val_dataset[i]["image"] for i in range(len(dm.val_dataset))]
    cached = list((tmp_path / "cache" / "chestxray14_32px").glob("*.pt"))
    assert len(cached) == len(dm.val_dataset)
    shutil.rmtree(nih.root / "images")  # no PNG left to decode
    again = [dm.val_dataset[i]["image"] for i in range(len(dm.val_dataset))]
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b)
    stored = torch.load(cached[0], weights_only=True)
    assert stored["image"].dtype == torch.uint8 and stored["image"].shape == (1, 32, 32)


def test_cache_dir_inside_the_data_folder_is_refused(nih):
    with pytest.raises(ValueError, match="inside the data folder"):
        _dm(nih.root, cache_dir=str(nih.root / "cache"))


# ---------------------------------------------------------------------------------------------- bad input
def _rewrite_table(root: Path, edit) -> None:
    path = root / "Data_Entry_2017_v2020.csv"
    table = pd.read_csv(path)
    edit(table).to_csv(path, index=False)


def test_image_listed_but_missing(nih):
    gone = nih.image_paths[5]
    gone.unlink()
    row = 5 + 2  # line in the CSV (header = line 1)
    message = rf"{gone.name}: listed in .*Data_Entry_2017_v2020.csv line {row}, not found"
    with pytest.raises(FileNotFoundError, match=message):
        _dm(nih.root).setup("fit")
    dm = _dm(nih.root, skip_bad=True)
    with pytest.warns(UserWarning, match="skipped bad input"):
        dm.setup("fit")
    assert dm.skipped == {"missing images": 1}
    assert gone.name not in [i for s in dm.records for i in _ids(dm, s)]


def test_table_without_a_needed_column(nih):
    _rewrite_table(nih.root, lambda t: t.drop(columns=["Patient ID"]))
    with pytest.raises(ValueError, match=r"Data_Entry_2017_v2020.csv: missing column\(s\) \['Patient ID'\]"):
        _dm(nih.root).setup("fit")
    with pytest.raises(ValueError, match="missing column"):  # not skippable: nothing could be trained
        _dm(nih.root, skip_bad=True).setup("fit")


def test_filter_column_needed_only_when_filtering(nih):
    _rewrite_table(nih.root, lambda t: t.drop(columns=["View Position"]))
    _dm(nih.root).setup("fit")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['View Position'\]"):
        _dm(nih.root, view_positions=["PA"]).setup("fit")


def test_truncated_png(nih):
    bad = nih.image_paths[3]
    bad.write_bytes(bad.read_bytes()[:200])
    message = rf"{bad.name}: no IEND chunk at the end \(truncated PNG\); listed in .* line 5"
    with pytest.raises(ValueError, match=message):
        _dm(nih.root).setup("fit")
    dm = _dm(nih.root, skip_bad=True)
    with pytest.warns(UserWarning):
        dm.setup("fit")
    assert dm.skipped == {"unreadable images": 1}


def test_list_entry_absent_from_the_table(nih):
    with (nih.root / "test_list.txt").open("a") as f:
        f.write("99999999_000.png\n")
    line = len(nih.test) + 1
    with pytest.raises(ValueError, match=rf"test_list.txt line {line}: '99999999_000.png' is not in .*Data_Entry"):
        _dm(nih.root).setup("fit")
    dm = _dm(nih.root, skip_bad=True)
    with pytest.warns(UserWarning):
        dm.setup("fit")
    assert dm.skipped == {"list entries absent from the label table": 1}
    assert sorted(_ids(dm, "test")) == sorted(nih.test)


def test_one_list_file_without_the_other(nih):
    (nih.root / "train_val_list.txt").unlink()
    with pytest.raises(FileNotFoundError, match="train_val_list.txt: not found"):
        _dm(nih.root).setup("fit")


def test_official_lists_that_split_a_patient(nih):
    moved = nih.train_val[0]
    patient = int(moved[:8])
    siblings = nih.table[(nih.table["Patient ID"] == patient)]
    if len(siblings) < 2:  # make sure the patient has a second study left in train_val
        pytest.skip("first train_val patient has a single study")
    (nih.root / "train_val_list.txt").write_text("\n".join(nih.train_val[1:]) + "\n")
    (nih.root / "test_list.txt").write_text("\n".join([*nih.test, moved]) + "\n")
    with pytest.raises(ValueError, match=rf"splits '.*' and '.*' share 1 patients \(e.g. \[{patient}\]\)"):
        _dm(nih.root).setup("fit")


def test_filter_that_empties_a_split(nih):
    with pytest.raises(ValueError, match=r"the ChestX-ray14 train split is empty \(view_positions=\['LL'\]"):
        _dm(nih.root, view_positions=["LL"]).setup("fit")
    with pytest.raises(ValueError, match="val split is empty"):
        _dm(nih.root, val_fraction=0.0).setup("fit")


def test_unknown_finding_names_the_line(nih):
    _rewrite_table(nih.root, lambda t: t.assign(**{"Finding Labels": ["Atelectasis|Tumour", *t["Finding Labels"][1:]]}))
    with pytest.raises(ValueError, match=r"line 2: unknown finding 'Tumour'"):
        _dm(nih.root).setup("fit")
    dm = _dm(nih.root, skip_bad=True)
    with pytest.warns(UserWarning):
        dm.setup("fit")
    assert dm.skipped == {"bad label rows": 1}


def test_findings_matrix_hand_computed():
    labels, bad = findings_matrix(pd.Series(["No Finding", "Hernia|Atelectasis", "Edema", "No Finding|Mass", ""]))
    assert labels[0].sum() == 0
    assert labels[1, CHESTXRAY14_FINDINGS.index("Hernia")] == 1 and labels[1, 0] == 1 and labels[1].sum() == 2
    assert labels[2, CHESTXRAY14_FINDINGS.index("Edema")] == 1 and labels[2].sum() == 1
    assert [row for row, _ in bad] == [3, 4] and np.isnan(labels[3]).all() and np.isnan(labels[4]).all()
    assert "'No Finding' together with findings" in bad[0][1] and "line 6: empty" in bad[1][1]


def test_gzipped_table_reads_like_the_plain_one(tmp_path, nih):
    plain = nih.root / "Data_Entry_2017_v2020.csv"
    packed = tmp_path / "Data_Entry_2017.csv.gz"
    with gzip.open(packed, "wb") as f:
        f.write(plain.read_bytes())
    pd.testing.assert_frame_equal(read_label_table(plain), read_label_table(packed))


def test_real_images_in_the_nih_layout_with_their_real_labels(tmp_path, real_table):
    """Real PNGs of four sizes/modes + their rows of the real table (2017 file name) through the DataModule."""
    picks = ["1024/00000013_003.png", "512/00027426_000.png", "512/00000001_000.png", "256/00000001_002.png",
             "256/00000011_000.png", "256/00000032_023.png", "128rgb/00000003_000.png"]
    root = tmp_path / "nih"
    (root / "images").mkdir(parents=True)
    for pick in picks:
        shutil.copy(DATA / "images" / pick, root / "images" / Path(pick).name)
    names = [Path(p).name for p in picks]
    rows = real_table[real_table["Image Index"].isin(names)]
    rows.to_csv(root / "Data_Entry_2017.csv", index=False)
    with pytest.warns(UserWarning, match="NOT comparable"):
        dm = ChestXray14DataModule(str(root), image_size=64, batch_size=16, val_fraction=0.2, test_fraction=0.2)
        dm.setup("fit")
    records = {r["id"]: r for split in dm.records.values() for r in split}
    assert sorted(records) == sorted(names)
    hernia = CHESTXRAY14_FINDINGS.index("Hernia")
    assert records["00000003_000.png"]["label"][hernia] == 1 and records["00000003_000.png"]["label"].sum() == 1
    assert records["00027426_000.png"]["label"].sum() == 0  # No Finding
    edema, infiltration = CHESTXRAY14_FINDINGS.index("Edema"), CHESTXRAY14_FINDINGS.index("Infiltration")
    assert records["00000032_023.png"]["label"][[edema, infiltration]].tolist() == [1, 1]
    # ImageNet-normalised [0, 1] intensities lie in [-2.118, 2.640]; training images also carry random Gaussian
    # noise (and contrast changes), which may step a little outside that range
    for dataset, margin in ((dm.train_dataset, 0.5), (dm.val_dataset, 0.0), (dm.test_dataset, 0.0)):
        for i in range(len(dataset)):
            image = dataset[i]["image"]
            assert image.shape == (3, 64, 64) and image.dtype == torch.float32
            assert -2.119 - margin < float(image.min()) < -1.0 and 1.5 < float(image.max()) < 2.641 + margin


def test_in_memory_cache_gives_the_same_tensors_as_decoding(nih):
    plain, memory = _dm(nih.root), _dm(nih.root, cache="memory")
    plain.setup("fit")
    memory.setup("fit")
    shutil.rmtree(nih.root / "images")  # the in-memory cache was filled in setup
    for i in range(len(memory.val_dataset)):
        cached = memory.val_dataset[i]
        assert cached["id"] == plain.records["val"][i]["id"]
        assert cached["image"].shape == (3, 32, 32)
    first = plain.records["val"][0]["image"]
    with pytest.raises(FileNotFoundError, match=re.escape(f"{first}: image file not found")):
        plain.val_dataset[0]  # the uncached dataset still needs the PNGs


# ---------------------------------------------------------------------------------------------- shipped real folder
#: Positive images per finding among the 837 shipped images, counted by hand from the official table
#: (``zcat Data_Entry_2017_v2020.csv.gz | grep -F -f names | cut -d, -f2 | tr '|' '\n' | grep -cx FINDING``).
SHIPPED_POSITIVES = {
    "Atelectasis": 80, "Cardiomegaly": 78, "Effusion": 153, "Infiltration": 144, "Mass": 31, "Nodule": 34,
    "Pneumonia": 9, "Pneumothorax": 39, "Consolidation": 36, "Edema": 30, "Emphysema": 33, "Fibrosis": 28,
    "Pleural_Thickening": 22, "Hernia": 1,
}


def test_shipped_real_folder_facts(real_table):
    """ldoctor/demo_data/nih-cxr14-64: 837 real 64 px PNGs of 203 patients and exactly their rows of the real table."""
    root = Path(NIH_DEMO)
    pngs = sorted((root / "images").glob("*.png"))
    assert len(pngs) == 837 and not list(root.glob("*_list.txt"))  # no list files: seeded patient splits apply
    assert (root / "README.md").is_file() and "Wang" in (root / "README.md").read_text()
    table = read_label_table(root / "Data_Entry_2017_v2020.csv.gz")
    assert list(table.columns) == list(real_table.columns)  # all 11 original columns
    assert sorted(table["Image Index"]) == [p.name for p in pngs]
    assert table[PATIENT_COLUMN].nunique() == 203
    original = real_table[real_table["Image Index"].isin(table["Image Index"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(table, original)  # rows unchanged, in the original order
    labels, bad = findings_matrix(table[FINDINGS_COLUMN])
    assert bad == []
    assert dict(zip(CHESTXRAY14_FINDINGS, labels.sum(axis=0).astype(int).tolist())) == SHIPPED_POSITIVES
    assert int((table[FINDINGS_COLUMN] == "No Finding").sum()) == 404
    assert table["View Position"].value_counts().to_dict() == {"PA": 523, "AP": 314}
    for path in pngs[::50]:
        with Image.open(path) as image:
            assert image.mode == "L" and image.size == (64, 64)


def test_shipped_folder_regenerates_byte_for_byte(tmp_path):
    """tools/make_nih_subset.py cuts the same table (gzip without time stamp) and copies the same PNGs."""
    root = Path(NIH_DEMO)
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_nih_subset.py"), "--images", str(root / "images"),
                    "--table", str(REAL_TABLE), "--out", str(tmp_path / "cut")], check=True, capture_output=True)
    table = "Data_Entry_2017_v2020.csv.gz"
    assert (tmp_path / "cut" / table).read_bytes() == (root / table).read_bytes()
    assert sorted(p.name for p in (tmp_path / "cut" / "images").iterdir()) == sorted(
        p.name for p in (root / "images").iterdir())


def test_shipped_folder_in_patient_grouped_folds_tests_every_image_once():
    dm = ChestXray14DataModule(NIH_DEMO, image_size=64, folds=5, fold=0, val_fraction=0.2, seed=0)
    tested: list[str] = []
    for fold in range(5):
        dm.select_fold(fold)
        assert dm.protocol == f"fold {fold} of 5"
        check_patient_disjoint(dm.patients)
        assert all(dm.records[split] for split in ("train", "val", "test"))
        assert sum(len(r) for r in dm.records.values()) == 837
        tested += [r["id"] for r in dm.records["test"]]
    assert len(tested) == 837 and len(set(tested)) == 837
    patient_of = dict(zip(*read_label_table(Path(NIH_DEMO) / "Data_Entry_2017_v2020.csv.gz")[
        ["Image Index", PATIENT_COLUMN]].to_numpy().T))
    dm.select_fold(2)
    assert dm.patient_ids("test") == [patient_of[r["id"]] for r in dm.records["test"]]


# ---------------------------------------------------------------------------------------------- test root, folds
def test_test_root_trains_on_all_of_root_and_tests_all_of_the_test_root(nih, tmp_path):
    other = write_other_patients(tmp_path / "other", first_patient=1001, num_patients=6, seed=7)
    dm = _dm(nih.root, test_root=str(other.root), val_fraction=0.25)
    dm.setup("fit")
    assert dm.protocol == "test root" and not dm.official_split
    # the root's list files are not used: every image of the root trains or validates
    assert sorted(_ids(dm, "train") + _ids(dm, "val")) == sorted(nih.table["Image Index"])
    assert _ids(dm, "test") == other.table["Image Index"].tolist()
    assert dm.patients["test"] == set(other.table[PATIENT_COLUMN]) and dm.patients["val"]
    check_patient_disjoint(dm.patients)
    np.testing.assert_array_equal(dm.labels("test"), other.labels)  # the test root's own table
    assert dm.patient_ids("test") == other.table[PATIENT_COLUMN].tolist()
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (len(batch["id"]), 3, 32, 32)


def test_test_root_sharing_patients_is_refused(tmp_path):
    train = write_other_patients(tmp_path / "train", first_patient=1, num_patients=12, seed=1)
    test = write_other_patients(tmp_path / "test", first_patient=11, num_patients=5, seed=2)  # 11 and 12 in both
    message = r"2 patients are in both .*train/Data_Entry_2017_v2020.csv and .*test/Data_Entry_2017_v2020.csv " \
              r"\(e.g. \[11, 12\]\)"
    with pytest.raises(BadInput, match=message):
        _dm(train.root, test_root=str(test.root)).setup("fit")


def test_folds_ignore_list_files_and_select_fold_equals_a_fresh_module(nih):
    dm = _dm(nih.root, folds=3, fold=0, seed=5)
    dm.setup("fit")
    tested = []
    for fold in range(3):
        dm.select_fold(fold)
        fresh = _dm(nih.root, folds=3, fold=fold, seed=5)
        fresh.setup("fit")
        assert {s: _ids(dm, s) for s in ("train", "val", "test")} == {s: _ids(fresh, s) for s in ("train", "val", "test")}
        tested += _ids(dm, "test")
    assert sorted(tested) == sorted(nih.table["Image Index"])  # not test_list.txt: every image, once
    with pytest.raises(ValueError, match="folds >= 2"):
        _dm(nih.root, folds=1)


def test_pixels_are_the_raw_png_pixels_in_record_order(nih):
    dm = _dm(nih.root, cache="memory")
    dm.setup("fit")
    pixels = dm.pixels("test")
    assert pixels.dtype == np.uint8 and pixels.shape == (len(dm.records["test"]), 32, 32)
    for row, record in zip(pixels, dm.records["test"]):
        with Image.open(record["image"]) as image:
            np.testing.assert_array_equal(row, np.asarray(image))
    half = dm.pixels("val", image_size=16)
    assert half.shape == (len(dm.records["val"]), 16, 16)


def test_training_augmentation_is_reproducible_by_seed(nih):
    first, second = _dm(nih.root, seed=3), _dm(nih.root, seed=3)
    first.setup("fit")
    second.setup("fit")
    torch.testing.assert_close(first.train_dataset[0]["image"], second.train_dataset[0]["image"])
