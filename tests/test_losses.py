"""Loss values against numbers worked out by hand (shown in the comments)."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from ldoctor.losses import (
    EqualWeighting,
    LossWeighting,
    MaskedBCEWithLogits,
    MaskedCrossEntropy,
    StaticWeighting,
    UncertaintyWeighting,
)
from ldoctor.tasks import TaskSpec

NAN = float("nan")
MULTILABEL = TaskSpec(name="m", kind="multilabel", num_outputs=2)
MULTICLASS = TaskSpec(name="c", kind="multiclass", num_outputs=3)


def test_masked_bce_ignores_nan_targets():
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    target = torch.tensor([[1.0, NAN], [0.0, 1.0]])
    # labelled: (logit 0, y 1) -> log 2 = 0.693147; (1, 0) and (-1, 1) -> log(1 + e) = 1.313262 each
    loss = MaskedBCEWithLogits(MULTILABEL)(logits, target)
    assert loss.item() == pytest.approx((0.693147 + 2 * 1.313262) / 3, abs=1e-6)
    # pos_weight 2 on the first output doubles its positive term: 2 * 0.693147
    weighted = MaskedBCEWithLogits(MULTILABEL, pos_weight=[2.0, 1.0])(logits, target)
    assert weighted.item() == pytest.approx((2 * 0.693147 + 2 * 1.313262) / 3, abs=1e-6)


def test_masked_losses_return_none_without_labels():
    assert MaskedBCEWithLogits(MULTILABEL)(torch.zeros(2, 2), torch.full((2, 2), NAN)) is None
    assert MaskedCrossEntropy(MULTICLASS)(torch.zeros(2, 3), torch.full((2,), NAN)) is None


def test_masked_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    # -log(e^2 / (e^2 + 2)) = log(1 + 2 e^-2) = 0.239545; the NaN row is left out
    loss = MaskedCrossEntropy(MULTICLASS)(logits, torch.tensor([0.0, NAN]))
    assert loss.item() == pytest.approx(0.239545, abs=1e-6)


def test_loss_kind_checks():
    with pytest.raises(ValueError, match="multiclass"):
        MaskedBCEWithLogits(MULTICLASS)
    with pytest.raises(ValueError, match="pos_weight"):
        MaskedBCEWithLogits(MULTILABEL, pos_weight=[1.0])


def _set_log_vars(weighting: UncertaintyWeighting, values: list[float]) -> None:
    with torch.no_grad():
        weighting.log_vars.copy_(torch.tensor(values))


def test_uncertainty_weighting_total_and_gradients():
    w = UncertaintyWeighting(["a", "b", "c"])
    assert w.log_vars.tolist() == [0.0, 0.0, 0.0]  # s_t = 0 at start: every weight is exp(0) = 1
    _set_log_vars(w, [0.2, -0.4, 1.0])
    losses = {"a": torch.tensor(1.3), "b": torch.tensor(0.7), "c": torch.tensor(2.0)}
    total = w(losses)
    # 1.3 e^-0.2 + 0.7 e^0.4 + 2 e^-1 + 0.5 (0.2 - 0.4 + 1.0) = 1.064350 + 1.044277 + 0.735759 + 0.4
    assert total.item() == pytest.approx(3.244386, abs=1e-5)
    total.backward()
    # d total / d s_t = -exp(-s_t) L_t + 0.5
    expected = [-1.064350 + 0.5, -1.044277 + 0.5, -0.735759 + 0.5]
    assert w.log_vars.grad.tolist() == pytest.approx(expected, abs=1e-5)
    assert w.weights() == pytest.approx({"a": math.exp(-0.2), "b": math.exp(0.4), "c": math.exp(-1.0)})


def test_uncertainty_weighting_leaves_absent_task_out():
    w = UncertaintyWeighting(["a", "b", "c"])
    _set_log_vars(w, [0.2, -0.4, 1.0])
    total = w({"a": torch.tensor(1.3), "c": torch.tensor(2.0)})
    # no term for b: neither its loss nor its 0.5 * s_b = -0.2
    assert total.item() == pytest.approx(1.064350 + 0.1 + 0.735759 + 0.5, abs=1e-5)
    total.backward()
    assert w.log_vars.grad[1].item() == 0.0


def test_uncertainty_total_can_be_negative():
    w = UncertaintyWeighting(["a"])
    _set_log_vars(w, [-3.0])
    # e^3 * 0.01 - 1.5 = 0.200855 - 1.5
    assert w({"a": torch.tensor(0.01)}).item() == pytest.approx(-1.299145, abs=1e-5)


def test_equal_and_static_weighting():
    losses = {"a": torch.tensor(1.5), "b": torch.tensor(0.5)}
    assert EqualWeighting(["a", "b"])(losses).item() == pytest.approx(2.0)
    static = StaticWeighting(["a", "b"], {"a": 2.0})
    assert static(losses).item() == pytest.approx(2 * 1.5 + 1 * 0.5)
    assert static.weights() == {"a": 2.0, "b": 1.0}
    with pytest.raises(ValueError, match="unknown tasks"):
        StaticWeighting(["a"], {"z": 1.0})


@pytest.mark.parametrize("cls", [EqualWeighting, StaticWeighting, UncertaintyWeighting])
def test_every_weighting_rejects_unknown_and_empty(cls):
    w: LossWeighting = cls(["a", "b"])
    with pytest.raises(KeyError, match="unknown tasks"):
        w({"z": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="no task has a labelled sample"):
        w({})
    assert set(w.weights()) == {"a", "b"}


def test_auto_pos_weight_comes_from_the_task_datamodule(tmp_path):
    import lightning as L

    from datamodules.medmnist import MedMNISTDataModule
    from ldoctor.module import MultiTaskModule
    from tests.helpers import tiny_trainer_kwargs

    dm = MedMNISTDataModule(class_names=["pneumonia"], image_size=28, batch_size=8)
    model = MultiTaskModule(dm.tasks, trunk="resnet18",
                            task_losses={"disease": partial(MaskedBCEWithLogits, pos_weight="auto")})
    assert model.task_losses["disease"].pos_weight.tolist() == [1.0]
    trainer = L.Trainer(**tiny_trainer_kwargs(tmp_path, max_steps=1, limit_val_batches=0))
    trainer.fit(model, datamodule=dm)
    # the shipped PneumoniaMNIST train split: 1,213 normal, 3,494 pneumonia
    assert model.task_losses["disease"].pos_weight.tolist() == pytest.approx([1213 / 3494])
