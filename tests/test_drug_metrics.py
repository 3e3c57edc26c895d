"""Drug-recommendation metrics against independent implementations (scikit-learn and SafeDrug-style loops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from ldoctor.datasets.mimic import drug_task
from ldoctor.ddi import write_ddi_pairs
from ldoctor.metrics.classification import prepare_for_metrics
from ldoctor.metrics.drug import (
    DrugCount,
    DrugDDIRate,
    DrugF1,
    DrugJaccard,
    DrugMetrics,
    DrugPRAUC,
    expected_jaccard_sets,
    predicted_sets,
)

D = 12


def _random(seed: int, n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(n, D, generator=g)
    probs[: n // 4] = torch.round(probs[: n // 4] * 4) / 4  # ties and exact 0.5 values
    target = (torch.rand(n, D, generator=g) < 0.35).long()
    target[0] = 0  # an admission without any true drug
    return probs, target


def _loop_reference(probs: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """SafeDrug's ``multi_label_metric`` written as plain set loops (threshold 0.5)."""
    jac, f1, ap, count = [], [], [], []
    for p, t in zip(probs, target):
        pred = {i for i in range(D) if p[i] >= 0.5}
        true = {i for i in range(D) if t[i] == 1}
        union = pred | true
        jac.append(len(pred & true) / len(union) if union else 0.0)
        precision = len(pred & true) / len(pred) if pred else 0.0
        recall = len(pred & true) / len(true) if true else 0.0
        f1.append(2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0)
        if true:
            ap.append(average_precision_score(t, p))
        count.append(len(pred))
    return {"jaccard": np.mean(jac), "f1": np.mean(f1), "prauc": np.mean(ap), "avg_drugs": np.mean(count)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_independent_implementations(seed):
    probs, target = _random(seed)
    reference = _loop_reference(probs.numpy(), target.numpy())
    for name, metric in {"jaccard": DrugJaccard(), "f1": DrugF1(), "prauc": DrugPRAUC(),
                         "avg_drugs": DrugCount()}.items():
        for chunk in range(0, len(probs), 16):  # several updates accumulate
            metric.update(probs[chunk:chunk + 16], target[chunk:chunk + 16])
        assert float(metric.compute()) == pytest.approx(reference[name], abs=1e-6), name


def test_hand_computed_example():
    probs = torch.tensor([[0.9, 0.6, 0.2, 0.1], [0.4, 0.5, 0.7, 0.0]])
    target = torch.tensor([[1, 0, 1, 0], [0, 1, 1, 1]])
    # row 0: pred {0,1}, true {0,2}: J = 1/3, P = R = 1/2, F1 = 1/2; AP: ranks 0(+),1(-),2(+) -> (1 + 2/3) / 2
    # row 1: pred {1,2}, true {1,2,3}: J = 2/3, P = 1, R = 2/3, F1 = 0.8; AP: 2(+),1(+),0(-),3(+) -> (1+1+3/4)/3
    expected = {"jaccard": (1 / 3 + 2 / 3) / 2, "f1": (0.5 + 0.8) / 2,
                "prauc": ((1 + 2 / 3) / 2 + (1 + 1 + 3 / 4) / 3) / 2, "avg_drugs": 2.0}
    task = drug_task(["A", "B", "C", "E"], ["<unk>", "D:1"])
    values = DrugMetrics(task)(probs, target)
    for key, value in expected.items():
        assert float(values[key]) == pytest.approx(value, abs=1e-6), key


def test_ddi_rate_matches_safedrug_pair_loop(tmp_path):
    drugs = [f"A{i:02d}B" for i in range(D)]
    rng = np.random.default_rng(0)
    pairs = {tuple(sorted(rng.choice(D, 2, replace=False))) for _ in range(15)}
    write_ddi_pairs(tmp_path / "ddi.csv", [(drugs[a], drugs[b]) for a, b in pairs])
    probs, target = _random(5)
    adjacency = np.zeros((D, D))
    for a, b in pairs:
        adjacency[a, b] = adjacency[b, a] = 1
    all_cnt = dd_cnt = 0  # SafeDrug's ddi_rate_score: every predicted pair i < j, counted over admissions
    for p in probs.numpy():
        med = [i for i in range(D) if p[i] >= 0.5]
        for i, a in enumerate(med):
            for j, b in enumerate(med):
                if j <= i:
                    continue
                all_cnt += 1
                dd_cnt += int(adjacency[a, b] == 1 or adjacency[b, a] == 1)
    task = drug_task(drugs, ["<unk>"])
    metrics = DrugMetrics(task, ddi_pairs=str(tmp_path / "ddi.csv"))
    assert set(metrics.keys()) == {"jaccard", "prauc", "f1", "avg_drugs", "ddi_rate"}
    metrics.update(probs, target)
    assert float(metrics.compute()["ddi_rate"]) == pytest.approx(dd_cnt / all_cnt, abs=1e-6)
    empty = DrugDDIRate(torch.tensor(adjacency))
    empty.update(torch.zeros(3, D), torch.zeros(3, D, dtype=torch.long))
    assert float(empty.compute()) == 0.0  # no predicted pair


def test_unknown_labels_drop_the_admission():
    probs, target = _random(7, n=10)
    logits = torch.logit(probs.clamp(1e-4, 1 - 1e-4))
    label = target.float()
    label[3, 2] = float("nan")  # one unknown entry: admission 3 is out
    label[5] = float("nan")  # all unknown: admission 5 is out
    task = drug_task([f"A{i:02d}B" for i in range(D)], ["<unk>"])
    prepared = prepare_for_metrics(task, logits, label)
    metric = DrugJaccard()
    metric.update(*prepared)
    keep = [i for i in range(10) if i not in (3, 5)]
    reference = _loop_reference(torch.sigmoid(logits)[keep].numpy(), target[keep].numpy())
    assert float(metric.compute()) == pytest.approx(reference["jaccard"], abs=1e-6)
    assert int(metric.count) == 8


def test_nothing_scored_gives_nan():
    jaccard = DrugJaccard()
    jaccard.update(torch.rand(1, D), torch.full((1, D), -1))  # only an unknown admission
    assert torch.isnan(jaccard.compute())
    prauc = DrugPRAUC()
    prauc.update(torch.rand(2, D), torch.zeros(2, D, dtype=torch.long))  # no true drug anywhere
    assert torch.isnan(prauc.compute())


def test_expected_jaccard_sets_match_a_brute_force_search():
    g = torch.Generator().manual_seed(3)
    probs = torch.rand(30, 7, generator=g) ** 2
    chosen = expected_jaccard_sets(probs)
    for p, c in zip(probs.tolist(), chosen.tolist()):
        # every non-empty subset, scored by expected intersection / expected union
        best, best_set = -1.0, None
        for mask in range(1, 2 ** len(p)):
            subset = [i for i in range(len(p)) if mask >> i & 1]
            ratio = sum(p[i] for i in subset) / (len(subset) + sum(p[i] for i in range(len(p)) if i not in subset))
            if ratio > best + 1e-12:
                best, best_set = ratio, set(subset)
        assert {i for i in range(len(p)) if c[i] == 1} == best_set
    # hand-computed: sorted 0.9 0.6 0.35 0.2 0.05 (sum 2.1): k=1 0.409, k=2 1.5/2.6 = 0.577, k=3 1.85/3.25 = 0.569
    assert expected_jaccard_sets(torch.tensor([[0.9, 0.2, 0.6, 0.35, 0.05]])).tolist() == [[1, 0, 1, 0, 0]]
    # low probabilities everywhere: still the single most probable drug, never an empty set
    assert expected_jaccard_sets(torch.tensor([[0.01, 0.02, 0.015]])).tolist() == [[0, 1, 0]]


def test_metrics_with_the_expected_jaccard_decision():
    probs, target = _random(4)
    sets = expected_jaccard_sets(probs)
    assert torch.equal(predicted_sets(probs, "expected_jaccard"), sets)
    assert torch.equal(predicted_sets(probs, 0.5), (probs >= 0.5).float())
    # scoring the 0/1 sets at threshold 0.5 gives the same Jaccard, F1 and count as the decision rule itself
    for metric in (DrugJaccard, DrugF1, DrugCount):
        assert torch.allclose(metric("expected_jaccard").scores(probs, target.float()),
                              metric(0.5).scores(sets, target.float()))
    values = DrugMetrics(drug_task([f"d{i}" for i in range(D)], ["<unk>", "D:1"]), threshold="expected_jaccard")(probs, target)
    assert float(values["avg_drugs"]) == pytest.approx(float(sets.sum(1).mean()))
    with pytest.raises(ValueError, match="expected_jaccard"):
        DrugJaccard("best")
