"""ldoctor.evaluation: prediction with test-time flips, the cross-validation job runner, ensembles, baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ldoctor.datasets.lidc import tumor_task
from ldoctor.evaluation.baselines import logistic_regression_scores, one_vs_rest_logistic
from ldoctor.evaluation.crossval import fold_mean, mean_members, run_jobs
from ldoctor.evaluation.prediction import TTA_FLIPS, predict
from ldoctor.models.heads import ClassificationHead
from ldoctor.models.net import MultiTaskNet


class AsymmetricTrunk(torch.nn.Module):
    """Features that change under flips: the mean of the left half and of the top half of every image."""

    out_features = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.shape[-1] // 2
        return torch.stack([x[..., :w].mean(dim=(1, 2, 3)), x[..., :w, :].mean(dim=(1, 2, 3))], dim=1)


def test_predict_averages_the_flipped_images_and_keeps_order():
    net = MultiTaskNet(AsymmetricTrunk(), {"tumor": ClassificationHead(tumor_task(), 2, dropout=0.0)})
    images = torch.randn(5, 3, 4, 4)
    batches = [{"image": images[:3], "label": torch.ones(3, 1), "id": ["a", "b", "c"]},
               {"image": images[3:], "label": torch.zeros(2, 1), "id": ["d", "e"]}]
    plain = predict(net, "tumor", batches)
    assert plain.ids == list("abcde") and plain.probs.shape == (5,) and plain.labels.tolist() == [1, 1, 1, 0, 0]
    tta = predict(net, "tumor", batches, flips=TTA_FLIPS)
    with torch.no_grad():
        expected = torch.stack([torch.sigmoid(net.forward_task("tumor", {"image": images.flip(f) if f else images}))
                                for f in TTA_FLIPS]).mean(0)[:, 0]
    np.testing.assert_allclose(tta.probs, expected.double().numpy(), rtol=1e-6)
    assert not np.allclose(tta.probs, plain.probs)  # the flips change this trunk's features


def _square(x: int) -> dict:
    return {"job": x, "value": x * x}


def test_jobs_run_in_forked_processes_in_job_order_and_closures_need_no_pickling():
    offset = 10
    assert run_jobs(lambda x: x + offset, [1, 2, 3], processes=2) == [11, 12, 13]  # a lambda: not picklable
    assert run_jobs(_square, [3, 1], processes=1) == [{"job": 3, "value": 9}, {"job": 1, "value": 1}]


def test_ensemble_members_are_averaged_and_must_score_the_same_cases():
    a = {"ids": ["x", "y"], "val_ids": ["v"], "prob": [0.2, 0.6], "val_prob": [0.5], "best_score": 0.7, "fit_seconds": 2}
    b = {**a, "prob": [0.4, 1.0], "val_prob": [0.1], "best_score": 0.8, "fit_seconds": 3}
    fold = mean_members([a, b])
    assert fold["prob"] == pytest.approx([0.3, 0.8]) and fold["val_prob"] == pytest.approx([0.3])
    assert fold["member_prob"] == [[0.2, 0.6], [0.4, 1.0]] and fold["best_score"] == [0.7, 0.8]
    assert fold["fit_seconds"] == 5
    with pytest.raises(ValueError, match="same cases"):
        mean_members([a, {**b, "ids": ["y", "x"]}])
    assert fold_mean([0.5, 0.7]) == pytest.approx({"mean": 0.6, "std": np.std([0.5, 0.7], ddof=1)})
    assert fold_mean([0.5, None]) == {"mean": None, "std": None}


def test_baselines_are_the_standard_regressions():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3)) * [1.0, 100.0, 0.01]
    y = (x[:, 0] + x[:, 1] / 100 > 0).astype(float)
    reference = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y).predict_proba(x[:5])[:, 1]
    np.testing.assert_allclose(logistic_regression_scores(x, y, x[:5]), reference)
    multi = np.c_[y, np.ones_like(y)]  # the second output is always 1: its training rate, no regression
    probs = one_vs_rest_logistic(x, multi, x[:4])
    assert probs.shape == (4, 2) and (probs[:, 1] == 1.0).all()
    np.testing.assert_allclose(probs[:, 0], LogisticRegression(C=1.0, max_iter=2000).fit(x, y).predict_proba(x[:4])[:, 1])
