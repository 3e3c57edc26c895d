"""Medication-recommendation scoring and baselines (ldoctor.evaluation.drugrec), by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ldoctor.evaluation.drugrec import (
    admission_scores,
    baselines,
    mean_std,
    previous_admission_baseline,
    previous_drugs,
    summarise,
    top_k_baseline,
)


def test_most_frequent_k_picks_the_k_with_best_training_jaccard():
    y = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 1]], dtype=np.float32)
    # k=1 {0}: J = 1/2, 1/3, 1, 1/3 -> 0.542; k=2 {0,1}: 1, 2/3, 1/2, 2/3 -> 0.708; k=3: 2/3, 1, 1/3, 1/2 -> 0.625
    pred, scores, k = top_k_baseline(y, n_test=2)
    assert k == 2
    assert pred.tolist() == [[1, 1, 0, 0]] * 2
    assert np.allclose(scores[0], [1.0, 0.75, 0.25, 0.25])


def test_previous_admission_copies_the_last_drugs_else_falls_back():
    test = [{"id": "1/10", "drugs": ["A"]}, {"id": "1/11", "drugs": ["B"]}, {"id": "2/20", "drugs": ["B"]}]
    fallback = np.array([[0, 0, 1]] * 3, dtype=np.float32)
    pred, _ = previous_admission_baseline(test, ["A", "B", "C"], fallback, np.zeros(3))
    assert pred.tolist() == [[0, 0, 1], [1, 0, 0], [0, 0, 1]]


def test_patient_level_summary_as_safedrug():
    values = {"jaccard": np.array([1.0, 0.0, 0.5]), "f1": np.zeros(3), "prauc": np.zeros(3),
              "avg_drugs": np.array([2.0, 4.0, 6.0]), "pairs": np.array([1.0, 6.0, 15.0]),
              "interacting": np.array([1.0, 0.0, 2.0])}
    assert summarise(values)["jaccard"] == pytest.approx(0.5)
    # patient a has admissions 0 and 1 (mean 0.5), patient b admission 2 (0.5)
    assert summarise(values, patients=["a", "a", "b"])["jaccard"] == pytest.approx(0.5)
    assert summarise(values, rows=np.array([0, 0, 2]), patients=["a", "a", "b"])["jaccard"] == 0.75
    assert summarise(values)["ddi_rate"] == pytest.approx(3 / 22)


def test_baselines_fit_on_train_samples_and_score_the_test_ones():
    # drug A follows code D:1, drug B code D:2; the regression reads that, the frequency baseline cannot
    train = [{"id": f"{i}/1", "history": [["D:1"] if i % 2 else ["D:2"]], "drugs": ["A"] if i % 2 else ["B"]}
             for i in range(40)]
    test = [{"id": "100/1", "history": [["D:1"]], "drugs": ["A"]}, {"id": "100/2", "history": [["D:1"], ["D:2"]],
                                                                       "drugs": ["B"]}]
    scores = baselines(train, test, ["A", "B"], ["<unk>", "D:1", "D:2"], None, decision="expected_jaccard")
    assert set(scores) == {"most_frequent_k", "previous_admission", "logistic_regression", "regression_previous_drugs",
                           "hybrid", "logistic_regression_same_decision", "regression_previous_drugs_same_decision",
                           "hybrid_same_decision"}
    assert scores["logistic_regression"]["jaccard"][0] == 1.0  # D:1 -> A, alone
    # first admission: the top-k set ({A}: k = 1 wins the training tie); the second copies {A}, truth {B}
    assert scores["previous_admission"]["jaccard"].tolist() == [1.0, 0.0]
    # hybrid: the regression for the first admission ({A}, right), the copy ({A}) for the second (truth {B})
    assert scores["hybrid"]["jaccard"].tolist() == [1.0, 0.0]
    direct = admission_scores(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.9, 0.1]]), torch.tensor([[1.0, 1.0]]),
                              torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    assert direct["jaccard"].tolist() == [0.5] and direct["pairs"].tolist() == [0.0]


def test_previous_drugs_follow_each_patients_admissions_in_order():
    samples = [{"id": "1/10", "drugs": ["A"]}, {"id": "1/11", "drugs": ["B", "C"]}, {"id": "2/20", "drugs": ["C"]},
               {"id": "1/12", "drugs": []}]
    copied, has = previous_drugs(samples, ["A", "B", "C"])
    assert has.tolist() == [False, True, False, True]
    assert copied.tolist() == [[0, 0, 0], [1, 0, 0], [0, 0, 0], [0, 1, 1]]


def test_regression_with_previous_drugs_learns_what_the_codes_cannot_show():
    # every patient gets drug X at a re-admission exactly when X was given the time before; the codes say nothing
    train, test = [], []
    for i in range(60):
        first = ["X"] if i % 2 else ["Y"]
        samples = [{"id": f"{i}/1", "history": [["D:0"]], "drugs": first},
                   {"id": f"{i}/2", "history": [["D:0"], ["D:0"]], "drugs": first}]
        (train if i < 50 else test).extend(samples)
    scores = baselines(train, test, ["X", "Y"], ["<unk>", "D:0"], None)
    readmissions = np.arange(len(test)) % 2 == 1
    assert scores["regression_previous_drugs"]["jaccard"][readmissions].tolist() == [1.0] * 10
    assert scores["logistic_regression"]["jaccard"][readmissions].mean() < 0.75  # codes alone: a coin
    assert scores["hybrid"]["jaccard"][readmissions].tolist() == [1.0] * 10  # the copy is right too


def test_no_interaction_table_means_no_ddi_rate():
    values = admission_scores(torch.tensor([[1.0, 1.0]]), torch.tensor([[0.9, 0.8]]), torch.tensor([[1.0, 1.0]]), None)
    assert summarise(values)["ddi_rate"] is None
    assert mean_std([summarise(values)])["ddi_rate_mean"] is None
