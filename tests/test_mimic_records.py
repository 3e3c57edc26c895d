"""MIMIC-III CSV reading: real demo facts, synthetic round trips, and every promised bad-input error."""

from __future__ import annotations

import csv
import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from ldoctor.datasets.mimic.records import (
    DEMO_DIR,
    DEMO_NDC_MAP,
    UNKNOWN_CODE,
    build_vocabularies,
    filter_admissions,
    group_by_patient,
    load_ndc_map,
    patient_samples,
    read_mimic_admissions,
)
from ldoctor.ddi import load_ddi_matrix, write_ddi_pairs
from ldoctor.errors import BadInputLog
from tests.fixtures.mimic import UNMAPPED_NDC, write_synthetic_mimic

pytestmark = pytest.mark.filterwarnings("ignore:.*prescription rows with an NDC.*")


@pytest.fixture(scope="module")
def demo():
    return read_mimic_admissions(DEMO_DIR, DEMO_NDC_MAP)


def _rewrite(path: Path, transform) -> None:
    """Rewrite a CSV row by row: ``transform(header, rows) -> (header, rows)``."""
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = transform(rows[0], rows[1:])
    with open(path, "w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows([header, *body])


# ------------------------------------------------------------------------------------------- real demo
def test_shipped_demo_files_match_their_checksums():
    lines = (DEMO_DIR / "SHA256SUMS.txt").read_text().split("\n")
    entries = dict(reversed(line.split()) for line in lines if line.strip())
    assert set(entries) >= {"ADMISSIONS.csv", "DIAGNOSES_ICD.csv", "PROCEDURES_ICD.csv", "PRESCRIPTIONS.csv",
                            "LICENSE.txt", "ndc_to_atc3.csv"}
    for name, digest in entries.items():
        assert hashlib.sha256((DEMO_DIR / name).read_bytes()).hexdigest() == digest, name
    # the four tables are the official release (hashes from the release's SHA256SUMS.txt)
    assert entries["PRESCRIPTIONS.csv"].startswith("053a015f55044550")
    assert (DEMO_DIR / "LICENSE.txt").read_text().startswith("## ODC OPEN DATABASE LICENSE (ODBL)")


def test_real_demo_cohort_facts(demo):
    records, stats = demo
    assert stats.admissions_in_file == 129
    assert stats.prescription_rows == 10398
    assert stats.no_ndc_rows == 1478  # 1,477 rows with NDC "0" and one empty NDC
    assert (stats.mapped_rows, stats.unmapped_rows, stats.unmapped_ndcs) == (6788, 2132, 281)
    assert stats.mapped_share == pytest.approx(0.7610, abs=1e-4)
    kept = filter_admissions(records)
    patients = group_by_patient(kept)
    assert (len(patients), len(kept)) == (82, 107)
    assert sum(len(a) >= 2 for a in patients.values()) == 11
    assert len({d for r in kept for d in r["drugs"]}) == 106
    assert np.mean([len(r["drugs"]) for r in kept]) == pytest.approx(18.607, abs=1e-3)
    first = kept[0]
    assert (first["subject_id"], first["hadm_id"]) == ("10006", "142345")
    assert first["diagnoses"][:3] == ["99591", "99662", "5672"]
    assert "A02B" in first["drugs"]
    # admissions of one patient are in time order
    for admissions in patients.values():
        times = [a["admittime"] for a in admissions]
        assert times == sorted(times)


def test_unmapped_ndcs_are_reported_not_silently_dropped():
    with pytest.warns(UserWarning, match=r"2132 of 8920 prescription rows .*\(281 distinct NDCs\)"):
        read_mimic_admissions(DEMO_DIR, DEMO_NDC_MAP)


def test_top_k_and_min_admissions_filters(demo):
    records, _ = demo
    top = filter_admissions(records, top_k_drugs=5)
    assert len({d for r in top for d in r["drugs"]}) == 5
    two = filter_admissions(records, min_admissions=2)
    assert len(group_by_patient(two)) == 11
    assert all(len(a) >= 2 for a in group_by_patient(two).values())


# ------------------------------------------------------------------------------------------- synthetic
@pytest.mark.parametrize(("upper_case", "gz"), [(False, False), (True, True)])
def test_synthetic_round_trip_any_case_and_gzip(tmp_path, upper_case, gz):
    truth = write_synthetic_mimic(tmp_path, n_patients=20, seed=3, upper_case=upper_case, gz=gz)
    assert (tmp_path / ("PRESCRIPTIONS.csv.gz" if gz else "PRESCRIPTIONS.csv")).is_file()
    records, stats = read_mimic_admissions(tmp_path, truth.ndc_map)
    assert len(records) == truth.admissions
    assert {r["hadm_id"]: sorted(r["drugs"]) for r in records} == truth.drug_sets
    assert stats.no_ndc_rows == truth.ndc_zero_rows
    assert stats.unmapped_rows == truth.unmapped_rows
    assert stats.unmapped_ndcs == 1
    for record in records:  # every drug is explained by a diagnosis
        explained = {d for code in record["diagnoses"] for d in truth.diagnosis_drugs[code]}
        assert set(record["drugs"]) == explained


def test_demo_split_follows_safedrug_rule_with_a_seeded_shuffle():
    from datamodules.mimic import MIMICDrugDataModule

    dm = MIMICDrugDataModule(split_seed=0)
    dm.prepare()
    patients = {name: {r["subject_id"] for r in rs} for name, rs in dm.splits.items()}
    assert (len(patients["train"]), len(patients["test"]), len(patients["val"])) == (54, 14, 14)  # 82 patients
    assert patients["train"].isdisjoint(patients["test"]) and patients["test"].isdisjoint(patients["val"])
    first = list(group_by_patient(dm.splits["train"]))[:3]
    assert first == ["10094", "43735", "42412"]  # random.Random(0).shuffle of the patients in file order
    in_order = MIMICDrugDataModule(split_seed=None)
    in_order.prepare()
    assert [r["subject_id"] for r in in_order.splits["train"]][:1] == ["10006"]  # SafeDrug: file order


def test_samples_show_history_and_earlier_drugs_only():
    admissions = [
        {"subject_id": "7", "hadm_id": "1", "diagnoses": ["4019"], "procedures": ["3893"], "drugs": ["A02B"]},
        {"subject_id": "7", "hadm_id": "2", "diagnoses": ["5849"], "procedures": ["3995"], "drugs": ["B01A"]},
    ]
    samples = patient_samples(admissions, history_drugs=True)
    assert samples[0]["history"] == [["D:4019", "P:3893"]]
    assert samples[1]["history"] == [["D:4019", "P:3893", "M:A02B"], ["D:5849", "P:3995"]]
    assert samples[1]["id"] == "7/2" and samples[1]["drugs"] == ["B01A"]
    assert patient_samples(admissions, max_history=1)[1]["history"] == [["D:5849", "P:3995"]]
    drugs, codes = build_vocabularies(admissions[:1], admissions, history_drugs=True)
    assert drugs == ["A02B", "B01A"]
    assert codes == [UNKNOWN_CODE, "D:4019", "M:A02B", "P:3893"]


def test_ddi_matrix_from_pairs_csv_and_npz(tmp_path):
    write_ddi_pairs(tmp_path / "pairs.csv", [("B01A", "A02B"), ("A02B", "B01A"), ("N02B", "ZZZZ")])
    assert (tmp_path / "pairs.csv").read_text().splitlines() == ["atc3_a,atc3_b", "A02B,B01A", "N02B,ZZZZ"]
    vocabulary = ["A02B", "B01A", "N02B"]
    expected = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=np.float32)
    assert np.array_equal(load_ddi_matrix(tmp_path / "pairs.csv", vocabulary).numpy(), expected)
    np.savez(tmp_path / "ddi.npz", ddi_A=np.array([[0, 0, 1], [0, 0, 0], [1, 0, 0]]),
             drugs=np.array(["N02B", "X", "A02B"]))
    from_npz = load_ddi_matrix(tmp_path / "ddi.npz", vocabulary).numpy()
    assert from_npz[0, 2] == from_npz[2, 0] == 1 and from_npz.sum() == 2


# ------------------------------------------------------------------------------------------- bad input
def test_csv_without_a_needed_column_names_file_and_column(tmp_path):
    truth = write_synthetic_mimic(tmp_path, n_patients=5)
    _rewrite(tmp_path / "DIAGNOSES_ICD.csv", lambda h, rows: ([c.replace("icd9_code", "code") for c in h], rows))
    with pytest.raises(ValueError, match=r"DIAGNOSES_ICD\.csv: missing column\(s\) \['icd9_code'\]"):
        read_mimic_admissions(tmp_path, truth.ndc_map)


def test_missing_table_names_the_folder(tmp_path):
    truth = write_synthetic_mimic(tmp_path, n_patients=5)
    (tmp_path / "PROCEDURES_ICD.csv").unlink()
    with pytest.raises(FileNotFoundError, match="no MIMIC-III table PROCEDURES_ICD"):
        read_mimic_admissions(tmp_path, truth.ndc_map)


def test_prescription_with_unknown_hadm_id_fails_or_is_counted(tmp_path):
    truth = write_synthetic_mimic(tmp_path, n_patients=5)
    _rewrite(tmp_path / "PRESCRIPTIONS.csv", lambda h, rows: (h, [*rows, ["9", "1", "555555", "MAIN", "X", UNMAPPED_NDC]]))
    line = len((tmp_path / "PRESCRIPTIONS.csv").read_text().splitlines())
    with pytest.raises(ValueError, match=rf"PRESCRIPTIONS\.csv line {line}: hadm_id '555555' .* not in .*ADMISSIONS"):
        read_mimic_admissions(tmp_path, truth.ndc_map)
    bad = BadInputLog(skip_bad=True, source="synthetic MIMIC")
    with pytest.warns(UserWarning, match=r"synthetic MIMIC: skipped bad input \(skip_bad=True\)"):
        records, _ = read_mimic_admissions(tmp_path, truth.ndc_map, bad)
    assert bad.counts == {"PRESCRIPTIONS:unknown_hadm_id": 1}
    assert len(records) == truth.admissions


def test_malformed_ndc_fails_with_line_and_value(tmp_path):
    truth = write_synthetic_mimic(tmp_path, n_patients=5)

    def corrupt(header, rows):
        rows[2][5] = "12-345"
        return header, rows

    _rewrite(tmp_path / "PRESCRIPTIONS.csv", corrupt)
    with pytest.raises(ValueError, match=r"PRESCRIPTIONS\.csv line 4: malformed NDC '12-345'; expected 11 digits"):
        read_mimic_admissions(tmp_path, truth.ndc_map)
    bad = BadInputLog(skip_bad=True)
    with pytest.warns(UserWarning, match="skipped bad input"):
        read_mimic_admissions(tmp_path, truth.ndc_map, bad)
    assert bad.counts == {"PRESCRIPTIONS:malformed_ndc": 1}


def test_no_admission_left_after_filtering(tmp_path):
    truth = write_synthetic_mimic(tmp_path, n_patients=4, max_admissions=1)
    records, _ = read_mimic_admissions(tmp_path, truth.ndc_map)
    with pytest.raises(ValueError, match=r"no admission left after filtering .*0 of patients with >= 2 admissions"):
        filter_admissions(records, min_admissions=2, source=str(tmp_path))
    # procedures of other admissions only: nothing has all three kinds of codes
    _rewrite(tmp_path / "PROCEDURES_ICD.csv", lambda h, rows: (h, []))
    records, stats = read_mimic_admissions(tmp_path, truth.ndc_map)
    assert records == [] and stats.admissions_with_all == 0
    with pytest.raises(ValueError, match="no admission left after filtering"):
        filter_admissions(records)


def test_mapping_with_disagreeing_duplicate_ndcs_names_both_lines(tmp_path):
    path = tmp_path / "map.csv"
    path.write_text("NDC,ATC3\n00000000001,A02B\n00000000002,B01A\n00000000001,A02B\n00000000001,N02B\n")
    with pytest.raises(ValueError, match=r"NDC 00000000001 maps to 'A02B' on line 2 and to 'N02B' on line 5"):
        load_ndc_map(path)
    path.write_text("ndc,atc3\n00000000001,A02B\n00000000001,A02B\n")
    assert load_ndc_map(path) == {"00000000001": "A02B"}  # agreeing duplicates merge
    path.write_text("ndc,atc3\n1,A02B\n")
    with pytest.raises(ValueError, match=r"line 2: malformed NDC '1'"):
        load_ndc_map(path)


def test_gzip_table_with_upper_case_header_reports_missing_column(tmp_path):
    truth = write_synthetic_mimic(tmp_path, n_patients=3, upper_case=True, gz=True)
    with gzip.open(tmp_path / "ADMISSIONS.csv.gz", "wt") as handle:
        handle.write("ROW_ID,SUBJECT_ID,HADM_ID\n1,1,100001\n")
    with pytest.raises(ValueError, match=r"ADMISSIONS\.csv\.gz: missing column\(s\) \['admittime'\]"):
        read_mimic_admissions(tmp_path, truth.ndc_map)


def test_locked_test_patients_do_not_move_with_seeds_or_data():
    from datamodules.mimic import MIMICDrugDataModule
    from ldoctor.evaluation.splits import locked_test_patients

    splits = []
    for seed in (0, 1):
        dm = MIMICDrugDataModule(locked_test=True, split_seed=seed)
        dm.prepare()
        splits.append({name: {r["subject_id"] for r in rs} for name, rs in dm.splits.items()})
    assert splits[0]["test"] == splits[1]["test"] and splits[0]["val"] != splits[1]["val"]
    assert 0.08 < len(splits[0]["test"]) / 82 < 0.25  # about 1/6 of the 82 patients
    everyone = set().union(*splits[0].values())
    assert splits[0]["test"] == locked_test_patients(everyone)
    assert splits[0]["test"] == locked_test_patients(sorted(everyone)[:50]) | locked_test_patients(sorted(everyone)[50:])
    assert not (splits[0]["test"] & (splits[0]["train"] | splits[0]["val"]))


def test_inner_folds_validate_every_non_locked_patient_once_and_never_touch_the_locked_test():
    from datamodules.mimic import MIMICDrugDataModule

    folds = []
    for fold in range(3):
        dm = MIMICDrugDataModule(locked_test=True, split_seed=5, folds=3, fold=fold)
        dm.prepare()
        folds.append({name: {r["subject_id"] for r in rs} for name, rs in dm.splits.items()})
    locked = folds[0]["test"]
    assert all(f["test"] == locked and not locked & (f["train"] | f["val"]) for f in folds)
    rest = folds[0]["train"] | folds[0]["val"]
    assert sorted(p for f in folds for p in f["val"]) == sorted(rest)  # each validates exactly once
    assert all(f["train"] == rest - f["val"] for f in folds)
    final = MIMICDrugDataModule(locked_test=True, val_share=0.0)
    final.prepare()
    assert {r["subject_id"] for r in final.splits["train"]} == rest and not final.splits["val"]
    with pytest.raises(ValueError, match="folds needs locked_test=True"):
        MIMICDrugDataModule(folds=3, fold=0)
