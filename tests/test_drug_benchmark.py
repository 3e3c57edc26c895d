"""benchmarks/drugrec.py: baselines by hand, both modes end to end on synthetic data in the real formats."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ldoctor.data.mimic_writer import write_synthetic_mimic, write_synthetic_safedrug
from ldoctor.data.safedrug_import import import_safedrug

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import drugrec  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*prescription rows with an NDC.*")


def test_most_frequent_k_picks_the_k_with_best_training_jaccard():
    y = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 1]], dtype=np.float32)
    # k=1 {0}: J = 1/2, 1/3, 1, 1/3 -> 0.542; k=2 {0,1}: 1, 2/3, 1/2, 2/3 -> 0.708; k=3: 2/3, 1, 1/3, 1/2 -> 0.625
    pred, scores, k = drugrec.top_k_baseline(y, n_test=2)
    assert k == 2
    assert pred.tolist() == [[1, 1, 0, 0]] * 2
    assert np.allclose(scores[0], [1.0, 0.75, 0.25, 0.25])


def test_previous_admission_copies_the_last_drugs_else_falls_back():
    test = [{"id": "1/10", "drugs": ["A"]}, {"id": "1/11", "drugs": ["B"]}, {"id": "2/20", "drugs": ["B"]}]
    fallback = np.array([[0, 0, 1]] * 3, dtype=np.float32)
    pred, _ = drugrec.previous_admission_baseline(test, ["A", "B", "C"], fallback, np.zeros(3))
    assert pred.tolist() == [[0, 0, 1], [1, 0, 0], [0, 0, 1]]


def test_patient_level_summary_as_safedrug():
    values = {"jaccard": np.array([1.0, 0.0, 0.5]), "f1": np.zeros(3), "prauc": np.zeros(3),
              "avg_drugs": np.array([2.0, 4.0, 6.0]), "pairs": np.array([1.0, 6.0, 15.0]),
              "interacting": np.array([1.0, 0.0, 2.0])}
    assert drugrec.summarise(values)["jaccard"] == pytest.approx(0.5)
    # patient a has admissions 0 and 1 (mean 0.5), patient b admission 2 (0.5)
    assert drugrec.summarise(values, patients=["a", "a", "b"])["jaccard"] == pytest.approx(0.5)
    assert drugrec.summarise(values, rows=np.array([0, 0, 2]), patients=["a", "a", "b"])["jaccard"] == 0.75
    assert drugrec.summarise(values)["ddi_rate"] == pytest.approx(3 / 22)


def test_split_mode_end_to_end_on_synthetic_mimic(tmp_path, capsys):
    truth = write_synthetic_mimic(tmp_path / "mimic", n_patients=45, max_admissions=2, seed=4)
    out = tmp_path / "drugrec.json"
    drugrec.main(["--mimic-dir", str(truth.folder), "--ndc-map", str(truth.ndc_map), "--seeds", "0", "1",
                  "--epochs", "2", "--out", str(out)])
    result = json.loads(out.read_text())
    assert set(result["table"]) == {"ours", "most_frequent_k", "previous_admission", "logistic_regression"}
    assert 0 <= result["jaccard_mean"] <= 1 and 0 <= result["best_baseline_jaccard_mean"] <= 1
    assert result["best_baseline_jaccard_mean"] == max(
        row["jaccard_mean"] for name, row in result["table"].items() if name != "ours")
    table = result["table"]  # the diagnosis -> drug structure is learnable: codes beat the drug frequencies
    assert table["logistic_regression"]["jaccard_mean"] > table["most_frequent_k"]["jaccard_mean"] + 0.2
    assert result["cohort"]["admissions"] == truth.admissions
    assert "best baseline" in capsys.readouterr().out


def test_bootstrap_mode_on_synthetic_safedrug_records(tmp_path, capsys):
    folder = write_synthetic_safedrug(tmp_path / "sd", n_patients=45, seed=1)
    records = import_safedrug(folder / "records_final.pkl", folder / "voc_final.pkl", tmp_path / "out",
                              folder / "ddi_A_final.pkl", allow_pickle=True)
    result = drugrec.main(["--records", str(records), "--ddi-pairs", str(tmp_path / "out" / "ddi_pairs.csv"),
                           "--epochs", "2", "--bootstrap", "4", "--seeds", "0"])
    assert result["mode"] == "bootstrap" and result["bootstrap"] == 4
    assert result["test_patients"] == 7  # int(45 * 2/3) = 30 train, then int(15 / 2) = 7 test
    row = result["table"]["ours"]
    assert 0 <= row["ddi_rate_mean"] <= 1 and row["jaccard_std"] >= 0
    assert result["published"]["SafeDrug (Yang et al., IJCAI 2021)"]["jaccard"] == 0.5213
    printed = capsys.readouterr().out
    assert "SafeDrug" in printed and "MoleRec" in printed and "COGNet" in printed


def test_head_candidates_are_chosen_on_validation(tmp_path):
    args = drugrec.parse_args(["--wide", "none", "all", "--copy", "last", "--weight-decay", "0.01", "0.1"])
    assert [(c["code_wide"], c["weight_decay"]) for c in drugrec.head_candidates(args)] == [
        ("none", 0.01), ("none", 0.1), ("all", 0.01), ("all", 0.1)]
    truth = write_synthetic_mimic(tmp_path / "mimic", n_patients=45, max_admissions=2, seed=4)
    result = drugrec.main(["--mimic-dir", str(truth.folder), "--ndc-map", str(truth.ndc_map), "--seeds", "0",
                           "--epochs", "1", "--prior-bias", "--wide", "none", "all", "--copy", "last"])
    (trials,) = result["validation_trials"]
    assert [t["code_wide"] for t in trials] == ["none", "all"]
    best = max(trials, key=lambda t: t["val_jaccard"])  # first of ties, as max()
    keys = ("code_wide", "code_copy", "copy_combine", "wide_dropout", "weight_decay")
    assert result["chosen_head"] == [{k: best[k] for k in keys}]


def test_expected_jaccard_decision_also_scores_the_regression_with_it(tmp_path):
    truth = write_synthetic_mimic(tmp_path / "mimic", n_patients=45, max_admissions=3, seed=5)
    result = drugrec.main(["--mimic-dir", str(truth.folder), "--ndc-map", str(truth.ndc_map), "--seeds", "0",
                           "--epochs", "2", "--prior-bias", "--wide", "all", "--copy", "last", "--copy-combine",
                           "mixture", "--decision", "expected_jaccard"])
    table = result["table"]
    assert set(table) == {"ours", "most_frequent_k", "previous_admission", "logistic_regression",
                          "logistic_regression_same_decision"}
    # same probabilities, other sets: PRAUC unchanged, Jaccard changed; the stronger row counts as a baseline
    assert table["logistic_regression_same_decision"]["prauc_mean"] == table["logistic_regression"]["prauc_mean"]
    assert table["logistic_regression_same_decision"]["jaccard_mean"] != table["logistic_regression"]["jaccard_mean"]
    assert result["best_baseline_jaccard_mean"] == max(r["jaccard_mean"] for n, r in table.items() if n != "ours")
    assert result["chosen_head"][0]["copy_combine"] == "mixture"
