"""Calibration, operating thresholds and validation curves (:mod:`ldoctor.evaluation.calibration`) and the
:class:`~ldoctor.callbacks.OperatingPoints` callback that stores them in checkpoints."""

from __future__ import annotations

import io
from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import log_loss, roc_curve

from datamodules.multitask import MultiTaskDataModule
from datamodules.synthetic import SyntheticDiseaseDataModule, SyntheticTumorDataModule
from ldoctor.callbacks import OperatingPoints, read_operating_points
from ldoctor.datasets.nih import disease_task
from ldoctor.errors import BadInput
from ldoctor.evaluation.calibration import (
    TEMPERATURE_LIMIT,
    Calibration,
    check_rule,
    choose_threshold,
    expected_calibration_error,
    fit_isotonic,
    fit_temperature,
    operating_curve,
)
from ldoctor.module import MultiTaskModule
from ldoctor.tasks import TaskSpec
from tests.helpers import tiny_trainer_kwargs

NAN = float("nan")


# ------------------------------------------------------------------------------------------ ECE
def test_ece_matches_a_hand_computed_example():
    probs = np.array([[0.1, 0.0], [0.15, 0.2], [0.55, 0.2], [0.9, 0.7], [0.95, 1.0]])
    labels = np.array([[0, 0], [1, 0], [1, 1], [1, 1], [NAN, 1]])
    # column 0, M = 5, 4 known: bin (0, .2] {.1, .15} y {0, 1}: 2/4 * |.5 - .125|; bin (.4, .6] {.55}: 1/4 * .45;
    # bin (.8, 1] {.9}: 1/4 * .1  -> .1875 + .1125 + .025
    # column 1: bin [0, .2] {0, .2, .2} y {0, 0, 1}: 3/5 * |1/3 - .4/3|; bin (.6, .8] {.7}: 1/5 * .3; {1.0}: 0
    ece = expected_calibration_error(probs, labels, bins=5)
    np.testing.assert_allclose(ece, [0.325, 0.18], atol=1e-12)
    unknown = expected_calibration_error(torch.tensor([0.3, 0.6]), torch.tensor([NAN, NAN]))
    assert unknown.shape == (1,) and np.isnan(unknown[0])


# ------------------------------------------------------------------------------------------ calibration
def overconfident(seed: int = 0, n: int = 10000) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits ``[n, 3]`` of a calibrated model times 3 (column 0), times 0.5 (column 1), and a column whose labels
    are all 1; labels with 5 % unknown; the calibrated logits."""
    g = torch.Generator().manual_seed(seed)
    true = 2.0 * torch.randn(n, 3, generator=g)
    labels = (torch.rand(n, 3, generator=g) < torch.sigmoid(true)).double()
    labels[:, 2] = 1.0
    labels[torch.rand(n, 3, generator=g) < 0.05] = NAN
    return true * torch.tensor([3.0, 0.5, 1.0]), labels, true


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    known = ~np.isnan(labels)
    return log_loss(labels[known], probs[known], labels=[0, 1])


def test_temperature_scaling_recovers_the_temperature_and_reduces_nll_and_ece():
    logits, labels, _ = overconfident()
    temperatures = fit_temperature(logits, labels)
    assert temperatures.shape == (3,)
    assert temperatures[0] == pytest.approx(3.0, rel=0.1) and temperatures[1] == pytest.approx(0.5, rel=0.1)
    assert temperatures[2] == 1.0  # one class only: not fitted
    calibration = Calibration.fit(logits, labels, "temperature")
    before, after = torch.sigmoid(logits).numpy(), calibration.apply(logits).numpy()
    ece_before, ece_after = expected_calibration_error(before, labels), expected_calibration_error(after, labels)
    for k in (0, 1):
        assert nll(after[:, k], labels[:, k].numpy()) < nll(before[:, k], labels[:, k].numpy()) - 0.01
        assert ece_after[k] < 0.02 < ece_before[k]


def test_isotonic_breakpoints_reproduce_scikit_learn_and_survive_a_weights_only_checkpoint():
    logits, labels, _ = overconfident(n=2000)
    calibration = Calibration.fit(logits[:1000], labels[:1000], "isotonic")
    logits = logits.double()
    probs, y = torch.sigmoid(logits[:1000, 0]).numpy(), labels[:1000, 0].numpy()
    known = ~np.isnan(y)
    reference = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(probs[known], y[known])
    fresh = logits[1000:]
    np.testing.assert_allclose(calibration.apply(fresh)[:, 0].numpy(),
                               reference.predict(torch.sigmoid(fresh[:, 0]).numpy()), atol=1e-12)
    assert calibration.breakpoints[2] == {"x": [0.0, 1.0], "y": [0.0, 1.0]}  # one class: identity
    assert fit_isotonic([0.2, 0.7], [NAN, 1.0]) == ([0.0, 1.0], [0.0, 1.0])
    buffer = io.BytesIO()
    torch.save(calibration.to_dict(), buffer)
    buffer.seek(0)
    restored = Calibration.from_dict(torch.load(buffer, weights_only=True))
    assert restored == calibration
    torch.testing.assert_close(restored.apply(fresh), calibration.apply(fresh))


def test_calibration_rejects_what_it_cannot_apply():
    with pytest.raises(ValueError, match="method must be one of"):
        Calibration("platt")
    with pytest.raises(ValueError, match="positive temperatures"):
        Calibration("temperature", temperatures=[1.0, 0.0])
    with pytest.raises(ValueError, match="not a Calibration dict"):
        Calibration.from_dict({"temperatures": [1.0]})
    assert torch.equal(Calibration().apply(torch.zeros(2, 3)), torch.full((2, 3), 0.5))


# ------------------------------------------------------------------------------------------ operating points
def scored_column(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Tied scores (two decimals) that rank positives higher, 10 % unknown labels."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(float)
    scores = np.clip(np.round(rng.normal(0.35 + 0.25 * labels, 0.15), 2), 0.0, 1.0)
    labels[rng.random(n) < 0.1] = np.nan
    return scores, labels


def brute_force(scores: np.ndarray, labels: np.ndarray) -> list[tuple[float, float, float]]:
    """(threshold, sensitivity, specificity) at every unique known score, by counting."""
    known = ~np.isnan(labels)
    s, y = scores[known], labels[known]
    rows = []
    for t in sorted(set(s.tolist())):
        rows.append((t, float(np.mean(s[y == 1] >= t)), float(np.mean(s[y == 0] < t))))
    return rows


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_youden_threshold_is_the_brute_force_maximum_ties_to_the_higher(seed):
    scores, labels = scored_column(seed)
    rows = brute_force(scores, labels)
    best = max(a + b for _, a, b in rows)
    expected = [r for r in rows if a_b_close(r[1] + r[2], best)][-1]
    point = choose_threshold(scores, labels)
    assert point.reason is None
    assert (point.threshold, point.sensitivity, point.specificity) == pytest.approx(expected, abs=1e-12)
    target = [r for r in rows if r[1] >= 0.9][-1]
    point = choose_threshold(scores, labels, "sensitivity:0.9")
    assert (point.threshold, point.sensitivity, point.specificity) == pytest.approx(target, abs=1e-12)


def a_b_close(a: float, b: float) -> bool:
    return abs(a - b) < 1e-12


def test_youden_tie_goes_to_the_higher_threshold():
    # J = 0.5 at 0.35 (sens 1, spec .5) and at 0.8 (sens .5, spec 1)
    point = choose_threshold([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    assert (point.threshold, point.sensitivity, point.specificity) == (0.8, 0.5, 1.0)


@pytest.mark.parametrize("points", [5, 41, 1000])
def test_curve_matches_scikit_learn_roc_curve(points):
    scores, labels = scored_column(3)
    curve = operating_curve(scores, labels, points=points)
    known = ~np.isnan(labels)
    fpr, tpr, thresholds = roc_curve(labels[known], scores[known], drop_intermediate=False)
    thresholds_used = [row[0] for row in curve]
    assert len(curve) <= points and thresholds_used == sorted(set(thresholds_used))
    assert curve[0] == [0.0, 1.0, 0.0] and curve[-1][0] == 1.0
    if points > len(np.unique(scores[known])) + 2:
        assert set(thresholds_used) == set(scores[known].tolist()) | {0.0, 1.0}
    for t, sensitivity, specificity in curve:
        match = np.flatnonzero(thresholds == t)
        if t == 1.0 and not len(match):
            positives = scores[known] >= 1.0
            assert sensitivity == np.mean(positives[labels[known] == 1])
            continue
        assert len(match) == 1, t
        assert sensitivity == pytest.approx(tpr[match[0]], abs=1e-12)
        assert specificity == pytest.approx(1 - fpr[match[0]], abs=1e-12)


@pytest.mark.parametrize("labels", [[1.0, 1.0, NAN], [0.0, 0.0, 0.0], [NAN, NAN, NAN]])
def test_one_class_columns_get_no_operating_point(labels):
    point = choose_threshold([0.2, 0.6, 0.9], labels)
    assert point.threshold is None and point.sensitivity is None and point.specificity is None
    assert "no operating point can be chosen" in point.reason
    assert operating_curve([0.2, 0.6, 0.9], labels) == []


def test_rules_are_checked():
    assert check_rule("youden") is None and check_rule("sensitivity:0.85") == 0.85
    for rule in ("youdens", "sensitivity:1.5", "sensitivity:", "specificity:0.9"):
        with pytest.raises(ValueError, match="threshold rule"):
            check_rule(rule)
    with pytest.raises(ValueError, match="threshold rule"):
        OperatingPoints(rule="sensitivity:high")
    with pytest.raises(ValueError, match="method must be one of"):
        OperatingPoints(method="platt")
    with pytest.raises(ValueError, match="0/1 labels"):
        choose_threshold([0.2, 0.6], [0.25, 1.0])


def test_read_operating_points_refuses_another_version():
    assert read_operating_points({"state_dict": {}}) is None
    with pytest.raises(BadInput, match="version"):
        read_operating_points({"callbacks": {"OperatingPoints": {"version": 99}}})


# ------------------------------------------------------------------------------------------ callback
@torch.no_grad()
def validation_logits(module: MultiTaskModule, data: MultiTaskDataModule, task: str) -> tuple[torch.Tensor, ...]:
    logits, labels = [], []
    for batch in data.member(task).val_dataloader():
        logits.append(module.net.forward_task(task, batch))
        labels.append(batch["label"])
    return torch.cat(logits).double(), torch.cat(labels).double()


def check_against_predictions(entry: dict, logits: torch.Tensor, labels: torch.Tensor) -> None:
    """Each column's threshold, sensitivity, specificity and curve recounted (and Youden's J by roc_curve) from the
    checkpoint's own predictions; each temperature a minimum of the validation log-loss."""
    calibration = Calibration.from_dict(entry["calibration"])
    probs, y = calibration.apply(logits).numpy(), labels.numpy()
    for k, column in enumerate(entry["columns"]):
        p, yk = probs[:, k], y[:, k]
        assert column["reason"] is None and column["name"] == entry["class_names"][k]
        t = column["threshold"]
        assert column["sensitivity"] == np.mean(p[yk == 1] >= t) and column["specificity"] == np.mean(p[yk == 0] < t)
        fpr, tpr, _ = roc_curve(yk, p)
        assert column["sensitivity"] + column["specificity"] - 1 == pytest.approx(np.max(tpr - fpr), abs=1e-12)
        for threshold, sensitivity, specificity in column["curve"]:
            assert sensitivity == np.mean(p[yk == 1] >= threshold)
            assert specificity == np.mean(p[yk == 0] < threshold)
        temperature = calibration.temperatures[k]
        # T * 1.03 and T / 1.03 where the bounds allow (an uninformative column's T stops at the upper bound)
        factors = [f for f in (1.03, 1 / 1.03) if 1 / TEMPERATURE_LIMIT <= temperature * f <= TEMPERATURE_LIMIT]
        loss = [log_loss(yk, torch.sigmoid(logits[:, k] / (temperature * f)).numpy()) for f in (1.0, *factors)]
        assert loss[0] <= min(loss[1:]) + 1e-9


def test_operating_points_travel_in_the_checkpoint_and_match_the_predictions(tmp_path, one_thread):
    L.seed_everything(0)
    kw = {"num_train": 32, "num_val": 48, "num_test": 8, "batch_size": 16}
    data = MultiTaskDataModule({"tumor": SyntheticTumorDataModule(image_size=32, **kw),
                                "disease": SyntheticDiseaseDataModule(image_size=32, **kw)})
    module = MultiTaskModule(data.tasks, trunk="resnet18", optimizer=partial(torch.optim.AdamW, lr=1e-3))
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "checkpoints")
    trainer = L.Trainer(**tiny_trainer_kwargs(tmp_path, enable_checkpointing=True,
                                              callbacks=[OperatingPoints(points=21), checkpoints]))
    trainer.fit(module, datamodule=data)  # with the default 2-batch sanity check, which is not fitted

    checkpoint = torch.load(checkpoints.best_model_path, weights_only=True)
    state = read_operating_points(checkpoint)
    assert state["version"] == 1 and state["epoch"] == 0 and state["rule"] == "youden"
    assert sorted(state["tasks"]) == ["disease", "tumor"]
    disease = state["tasks"]["disease"]
    assert disease["class_names"] == disease_task().class_names and len(disease["columns"]) == 14
    assert disease["n"] == 48 and disease["calibration"]["method"] == "temperature"
    assert all(2 <= len(c["curve"]) <= 21 for c in disease["columns"])
    for key, values in (("ece", disease["ece_before"]), ("ece_calibrated", disease["ece_after"])):
        assert float(trainer.callback_metrics[f"val/disease/{key}"]) == pytest.approx(np.mean(values), abs=1e-6)

    trained = MultiTaskModule(data.tasks, trunk="resnet18")
    trained.load_state_dict(checkpoint["state_dict"])
    trained.eval()
    for task in ("disease", "tumor"):
        check_against_predictions(state["tasks"][task], *validation_logits(trained, data, task))
    validated = OperatingPoints(points=21)  # trainer.validate runs under inference mode: still fits
    L.Trainer(**tiny_trainer_kwargs(tmp_path, callbacks=[validated])).validate(trained, datamodule=data, verbose=False)
    assert validated.state_dict()["tasks"] == state["tasks"]

    resumed = OperatingPoints()
    callbacks = [resumed, ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_top_k=0)]
    L.Trainer(**tiny_trainer_kwargs(tmp_path, enable_checkpointing=True, callbacks=callbacks)).fit(
        trained, datamodule=data, ckpt_path=checkpoints.best_model_path
    )  # max_epochs already reached: restores the callbacks' state and stops
    assert resumed.state_dict() == state


def test_callback_fits_binary_and_multilabel_tasks_only():
    grade = TaskSpec(name="grade", kind="multiclass", num_outputs=3)
    module = MultiTaskModule([grade, disease_task()], trunk="resnet18")
    assert OperatingPoints().task_names(module) == ["disease"]
    with pytest.raises(ValueError, match="only binary and multilabel"):
        OperatingPoints(tasks=["grade"]).task_names(module)
    with pytest.raises(ValueError, match="the model's tasks are"):
        OperatingPoints(tasks=["tumour"]).task_names(module)
    with pytest.raises(TypeError, match="needs a MultiTaskModule"):
        OperatingPoints().task_names(L.LightningModule())
