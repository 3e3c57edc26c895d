"""benchmarks/one_vs_three.py end to end on the shipped real data (a few steps): the JSON the issue fixes, its
scores recomputed from the saved test predictions with independent code, and difference = 1v3 - single."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ldoctor.datasets.nih import CHESTXRAY14_FINDINGS
from tests.helpers import run_benchmark

pytestmark = pytest.mark.benchmark

WEIGHTINGS = ["uncertainty", "pcgrad"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one_vs_three")
    out = tmp / "r.json"
    run_benchmark("one_vs_three.py", ["--epochs", "1", "--steps-per-epoch", "3", "--weightings", ",".join(WEIGHTINGS),
                                      "--no-pneumonia", "--time-trunks", "", "--bootstrap-draws", "50",
                                      "--spread-tasks", "drug", "--spread-seeds", "2",
                                      "--threads", "1", "--save-predictions", str(tmp / "pred"), "--out", str(out)],
                  cwd=tmp, timeout=900)
    return json.loads(out.read_text()), tmp / "pred"


def jaccard(y: np.ndarray, probs: np.ndarray) -> float:
    scores = []
    for truth, p in zip(y, probs):
        t, q = set(np.flatnonzero(truth)), set(np.flatnonzero(p > 0.5))
        scores.append(len(t & q) / len(t | q) if t | q else 0.0)
    return float(np.mean(scores))


def score(task: str, file: np.lib.npyio.NpzFile, scored: list[str]) -> float:
    y, p = file[f"{task}_labels"], file[f"{task}_probs"]
    if task == "drug":
        return jaccard(y, p)
    if task == "disease":
        columns = [CHESTXRAY14_FINDINGS.index(n) for n in scored]
        return float(np.mean([roc_auc_score(y[:, c], p[:, c]) for c in columns]))
    return float(roc_auc_score(y, p))


def test_json_holds_single_multi_difference_and_every_weighting(run):
    result, _ = run
    assert set(result["single"]) == set(result["multi"]) == set(result["difference"]) == {"tumor", "disease", "drug"}
    assert list(result["weightings"]) == WEIGHTINGS
    assert result["steps_per_task"] == 3
    for task, d in result["difference"].items():
        assert d["ci_low"] <= d["difference"] <= d["ci_high"]
        assert d["difference"] == pytest.approx(result["multi"][task]["value"] - result["single"][task]["value"])
    assert result["multi"]["tumor"]["weighting"] == "uncertainty"
    assert "delong" in result["difference"]["tumor"]
    for row in result["weightings"].values():
        assert set(row["tasks"]) == {"tumor", "disease", "drug"}
        assert set(row["final_weights"]) == {"tumor", "disease", "drug"}
        # every 1v3 model is compared with the same single-task models
        for task, c in row["tasks"].items():
            assert c["single"] == result["single"][task]["value"]
    # the drug single-task model retrained with two other training seeds, on the same data split
    spread = result["single_seed_spread"]["drug"]
    assert spread["seeds"] == [1, 2] and len(spread["values"]) == 2
    assert spread["min"] == min(spread["values"]) and spread["std"] == pytest.approx(np.std(spread["values"], ddof=1))
    assert all(0 < v < 1 for v in spread["values"])
    # the disease score is over the findings with at least 5 positive test images, and says which
    disease = result["per_task"]["disease"]
    assert disease["scored"] and all(disease["positives"][n] >= 5 for n in disease["scored"])


def test_scores_match_an_independent_computation_on_the_saved_predictions(run):
    result, folder = run
    scored = result["per_task"]["disease"]["scored"]
    multi = np.load(folder / "1v3_uncertainty.npz")
    for task in ("tumor", "disease", "drug"):
        single = np.load(folder / f"single_{task}_equal.npz")
        # the same test rows for both models
        assert list(single[f"{task}_ids"]) == list(multi[f"{task}_ids"])
        assert result["single"][task]["value"] == pytest.approx(score(task, single, scored), abs=1e-6)
        assert result["multi"][task]["value"] == pytest.approx(score(task, multi, scored), abs=1e-6)
    # the 1v3 scores of the other weightings come from their own models
    pcgrad = np.load(folder / "1v3_pcgrad.npz")
    assert result["weightings"]["pcgrad"]["tasks"]["tumor"]["multi"] == pytest.approx(score("tumor", pcgrad, scored))
