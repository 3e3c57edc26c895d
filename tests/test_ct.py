"""CT volume reading: real DICOM files, synthetic series in the real format, NIfTI, and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from ldoctor.io.ct import (
    CTVolume,
    read_ct,
    read_dicom_series,
    read_enhanced_ct,
    read_nifti,
    read_series_header,
    world_to_voxel,
    write_ct_series,
)

DATA = Path(__file__).parent / "data"


def one_slice_series(tmp_path: Path, source: Path) -> Path:
    folder = tmp_path / source.stem
    folder.mkdir()
    shutil.copy(source, folder / source.name)
    return folder


def synthetic_volume(shape=(6, 5, 4), spacing=(0.7, 0.8, 2.5), origin=(-100.0, -50.0, -300.0),
                     directions=None, series_uid="1.2.3.4.5") -> CTVolume:
    """HU value 100 * i + 10 * j + k - 1000 at voxel (i, j, k): every voxel says where it is."""
    directions = np.eye(3) if directions is None else directions
    i, j, k = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    affine = np.eye(4)
    affine[:3, :3] = directions * np.asarray(spacing)
    affine[:3, 3] = origin
    return CTVolume((100 * i + 10 * j + k - 1000).astype(np.float32), affine, series_uid, "P1", "")


# ------------------------------------------------------------------------------------------ real DICOM files


def test_real_lidc_slice_hu_air_and_soft_tissue(tmp_path):
    volume = read_dicom_series(one_slice_series(tmp_path, DATA / "lidc" / "LIDC-IDRI-0001_slice000001.dcm"))
    hu = volume.hu[:, :, 0]
    assert hu.shape == (512, 512)
    # air above the patient (rows 20-40 of the middle columns; array is [column, row])
    assert abs(hu[246:266, 20:40].mean() - (-1000)) < 30
    # outside the reconstruction circle the scanner pads -2048 (raw -1024, intercept -1024)
    assert hu[:20, :20].max() == -2048
    body = hu[(hu > -200) & (hu < 200)]
    counts, edges = np.histogram(body, bins=np.arange(-200, 201, 50))
    assert 0 <= edges[np.argmax(counts)] <= 100  # soft-tissue (muscle) peak
    assert volume.spacing == pytest.approx((0.703125, 0.703125, 2.5))
    np.testing.assert_allclose(volume.affine[:3, 3], [-166.0, -171.699997, -207.5])
    assert volume.patient_id == "LIDC-IDRI-0001"


@pytest.mark.parametrize("name", ["CT_small", "693_UNCI"])
def test_real_ct_slices_hu(tmp_path, name):
    volume = read_dicom_series(one_slice_series(tmp_path, DATA / "dicom" / f"{name}.dcm"))
    raw = pydicom.dcmread(DATA / "dicom" / f"{name}.dcm")
    expected = raw.pixel_array.astype(float) * float(raw.RescaleSlope) + float(raw.RescaleIntercept)
    np.testing.assert_allclose(volume.hu[:, :, 0], expected.T)
    counts, edges = np.histogram(volume.hu, bins=np.arange(-1200, 301, 100))
    air_or_lung = edges[np.argmax(counts[:5])]  # most common value below -700 HU
    assert -1100 <= air_or_lung <= -800
    assert -150 <= edges[np.argmax(counts[9:]) + 9] <= 100  # soft-tissue peak above -300 HU


def test_enhanced_multiframe_ct_refused_when_not_hu_and_read_otherwise():
    path = DATA / "dicom" / "eCT_Supplemental.dcm"
    with pytest.raises(ValueError, match=r"eCT_Supplemental.dcm: enhanced CT whose values are not Hounsfield"):
        read_ct(path)
    volume = read_enhanced_ct(path, require_hu=False)
    assert volume.hu.shape == (512, 512, 2)
    assert volume.spacing == pytest.approx((0.388672, 0.388672, 10.0))
    # ImageOrientationPatient [-1, 0, 0, 0, 1, 0]: columns run to the patient's right
    np.testing.assert_allclose(volume.affine[:3, 0], [-0.388672, 0, 0], atol=1e-6)
    # the slice normal (row x column direction) points to the feet: frame 2 (z = -149) comes first
    np.testing.assert_allclose(volume.affine[:3, 2], [0, 0, -10.0])
    np.testing.assert_allclose(volume.affine[:3, 3], [99.5, -301.5, -149.0])
    raw = pydicom.dcmread(path).pixel_array
    np.testing.assert_allclose(volume.hu[:, :, 0], raw[1].T.astype(float) - 1024)
    np.testing.assert_allclose(volume.hu[:, :, 1], raw[0].T.astype(float) - 1024)


def test_compressed_without_decoder_names_file_and_decoder(tmp_path):
    folder = one_slice_series(tmp_path, DATA / "dicom" / "bad_sequence.dcm")
    with pytest.raises(RuntimeError, match=r"bad_sequence.dcm: pixel data is compressed as JPEG Lossless.*pylibjpeg"):
        read_series_header(folder)


# ---------------------------------------------------------------------------------- synthetic series


@pytest.mark.parametrize(
    "directions",
    [np.eye(3), np.diag([-1.0, -1.0, 1.0]), np.diag([1.0, 1.0, -1.0])],
    ids=["LPS", "flipped-in-plane", "feet-first"],
)
def test_series_roundtrip_orders_by_position_and_keeps_geometry(tmp_path, directions):
    volume = synthetic_volume(directions=directions)
    write_ct_series(volume, tmp_path / "s", slope=1.0, intercept=-1024.0)
    # files are named head-to-feet (InstanceNumber), so name order is not slice order
    read = read_dicom_series(tmp_path / "s")
    # slices come back sorted along the slice normal, the positive z direction when the normal points up
    flip_k = np.dot(np.cross(directions[:, 0], directions[:, 1]), directions[:, 2]) < 0
    expected = volume.hu[:, :, ::-1] if flip_k else volume.hu
    np.testing.assert_allclose(read.hu, expected)
    # whatever the order, every voxel lands at the same world point
    world = volume.affine @ np.array([2, 3, 1, 1.0])
    ijk = world_to_voxel(read.affine, world[None, :3])[0].round().astype(int)
    assert read.hu[tuple(ijk)] == volume.hu[2, 3, 1] == 200 + 30 + 1 - 1000
    assert read.spacing == pytest.approx((0.7, 0.8, 2.5))


def test_rescale_slope_and_intercept_per_slice(tmp_path):
    volume = synthetic_volume()
    write_ct_series(volume, tmp_path / "s", slope=0.5, intercept=-2000.0)
    path = sorted((tmp_path / "s").glob("*.dcm"))[0]
    ds = pydicom.dcmread(path)
    ds.RescaleSlope, ds.RescaleIntercept = "1", "-1000"  # restore this slice with another rescale
    k = round((float(ds.ImagePositionPatient[2]) + 300.0) / 2.5)
    ds.PixelData = np.ascontiguousarray(volume.hu[:, :, k].T + 1000).astype(np.int16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    np.testing.assert_allclose(read_dicom_series(tmp_path / "s").hu, volume.hu)


def test_nifti_affine_is_converted_to_lps(tmp_path):
    volume = synthetic_volume()
    nib.save(nib.Nifti1Image(volume.hu, np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.affine), tmp_path / "ct.nii.gz")
    read = read_nifti(tmp_path / "ct.nii.gz")
    np.testing.assert_allclose(read.affine, volume.affine)
    np.testing.assert_allclose(read.hu, volume.hu)
    assert read_ct(tmp_path / "ct.nii.gz").series_uid == "ct"


# --------------------------------------------------------------------------------------------- bad input


def test_missing_slice_names_the_gap(tmp_path):
    write_ct_series(synthetic_volume(), tmp_path / "s")
    (tmp_path / "s" / "0003.dcm").unlink()  # instance 3 of 4 = slice k = 1
    with pytest.raises(ValueError, match=r"missing slice: gap of 5.000 mm between 0004.dcm .* and 0002.dcm"):
        read_series_header(tmp_path / "s")


def test_duplicated_slice_position(tmp_path):
    write_ct_series(synthetic_volume(), tmp_path / "s")
    shutil.copy(tmp_path / "s" / "0002.dcm", tmp_path / "s" / "copy.dcm")
    with pytest.raises(ValueError, match=r"duplicated slice position -295.000 mm in 0002.dcm and copy.dcm"):
        read_series_header(tmp_path / "s")


def test_mixed_series_in_one_folder(tmp_path):
    write_ct_series(synthetic_volume(series_uid="1.2.3"), tmp_path / "s")
    write_ct_series(synthetic_volume(series_uid="1.2.4"), tmp_path / "other")
    shutil.copy(tmp_path / "other" / "0001.dcm", tmp_path / "s" / "9999.dcm")
    with pytest.raises(ValueError, match=r"mixed SeriesInstanceUID in one series folder: 9999.dcm has .*1.2.4"):
        read_series_header(tmp_path / "s")


def test_unreadable_and_missing(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "broken.dcm").write_bytes(b"not a dicom file")
    with pytest.raises(ValueError, match=r"broken.dcm: not a readable DICOM file"):
        read_series_header(tmp_path / "s")
    with pytest.raises(FileNotFoundError, match=r"nowhere: DICOM series folder not found"):
        read_dicom_series(tmp_path / "nowhere")
