"""benchmarks/drugrec.py end to end, both modes, on synthetic data in the real formats (run as users run it)."""

from __future__ import annotations

import json

import pytest

from ldoctor.datasets.mimic.safedrug import import_safedrug
from tests.fixtures.mimic import write_synthetic_mimic, write_synthetic_safedrug
from tests.helpers import run_benchmark

pytestmark = pytest.mark.filterwarnings("ignore:.*prescription rows with an NDC.*")


def drugrec(args: list[str], tmp_path) -> tuple[dict, str]:
    out = tmp_path / "drugrec.json"
    run = run_benchmark("drugrec.py", [*args, "--out", str(out)], cwd=tmp_path)
    return json.loads(out.read_text()), run.stdout


def test_split_mode_end_to_end_on_synthetic_mimic(tmp_path):
    truth = write_synthetic_mimic(tmp_path / "mimic", n_patients=45, max_admissions=2, seed=4)
    result, printed = drugrec(["--mimic-dir", str(truth.folder), "--ndc-map", str(truth.ndc_map), "--seeds", "0",
                               "1", "--epochs", "2"], tmp_path)
    assert set(result["table"]) == {"ours", "most_frequent_k", "previous_admission", "logistic_regression"}
    assert 0 <= result["jaccard_mean"] <= 1 and 0 <= result["best_baseline_jaccard_mean"] <= 1
    assert result["best_baseline_jaccard_mean"] == max(
        row["jaccard_mean"] for name, row in result["table"].items() if name != "ours")
    table = result["table"]  # the diagnosis -> drug structure is learnable: codes beat the drug frequencies
    assert table["logistic_regression"]["jaccard_mean"] > table["most_frequent_k"]["jaccard_mean"] + 0.2
    assert result["cohort"]["admissions"] == truth.admissions
    assert "best baseline" in printed


def test_bootstrap_mode_on_synthetic_safedrug_records(tmp_path):
    folder = write_synthetic_safedrug(tmp_path / "sd", n_patients=45, seed=1)
    records = import_safedrug(folder / "records_final.pkl", folder / "voc_final.pkl", tmp_path / "out",
                              folder / "ddi_A_final.pkl", allow_pickle=True)
    result, printed = drugrec(["--records", str(records), "--ddi-pairs", str(tmp_path / "out" / "ddi_pairs.csv"),
                               "--epochs", "2", "--bootstrap", "4", "--seeds", "0"], tmp_path)
    assert result["mode"] == "bootstrap" and result["bootstrap"] == 4
    assert result["test_patients"] == 7  # int(45 * 2/3) = 30 train, then int(15 / 2) = 7 test
    row = result["table"]["ours"]
    assert 0 <= row["ddi_rate_mean"] <= 1 and row["jaccard_std"] >= 0
    assert result["published"]["SafeDrug (Yang et al., IJCAI 2021)"]["jaccard"] == 0.5213
    assert "SafeDrug" in printed and "MoleRec" in printed and "COGNet" in printed


def test_head_candidates_are_chosen_on_validation(tmp_path):
    truth = write_synthetic_mimic(tmp_path / "mimic", n_patients=45, max_admissions=2, seed=4)
    result, _ = drugrec(["--mimic-dir", str(truth.folder), "--ndc-map", str(truth.ndc_map), "--seeds", "0",
                         "--epochs", "1", "--prior-bias", "--wide", "none", "all", "--copy", "last",
                         "--weight-decay", "0.01", "0.1"], tmp_path)
    (trials,) = result["validation_trials"]
    assert [(t["wide"], t["weight_decay"]) for t in trials] == [("none", 0.01), ("none", 0.1), ("all", 0.01),
                                                                 ("all", 0.1)]
    best = max(trials, key=lambda t: t["val_jaccard"])  # first of ties, as max()
    keys = ("wide", "copy", "copy_combine", "wide_dropout", "weight_decay")
    assert result["chosen_head"] == [{k: best[k] for k in keys}]


def test_expected_jaccard_decision_also_scores_the_regression_with_it(tmp_path):
    truth = write_synthetic_mimic(tmp_path / "mimic", n_patients=45, max_admissions=3, seed=5)
    result, _ = drugrec(["--mimic-dir", str(truth.folder), "--ndc-map", str(truth.ndc_map), "--seeds", "0",
                         "--epochs", "2", "--prior-bias", "--wide", "all", "--copy", "last", "--copy-combine",
                         "mixture", "--decision", "expected_jaccard"], tmp_path)
    table = result["table"]
    assert set(table) == {"ours", "most_frequent_k", "previous_admission", "logistic_regression",
                          "logistic_regression_same_decision"}
    # same probabilities, other sets: PRAUC unchanged, Jaccard changed; the stronger row counts as a baseline
    assert table["logistic_regression_same_decision"]["prauc_mean"] == table["logistic_regression"]["prauc_mean"]
    assert table["logistic_regression_same_decision"]["jaccard_mean"] != table["logistic_regression"]["jaccard_mean"]
    assert result["best_baseline_jaccard_mean"] == max(r["jaccard_mean"] for n, r in table.items() if n != "ours")
    assert result["chosen_head"][0]["copy_combine"] == "mixture"
