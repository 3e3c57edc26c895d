"""DWA, GradNorm and PCGrad against numbers worked out by hand (shown in the comments), and wired into a fit."""

from __future__ import annotations

import csv
import math

import lightning as L
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning.pytorch.loggers import CSVLogger
from torch import nn

import ldoctor.losses.weighting as weighting_package
from datamodules.multitask import MultiTaskDataModule
from datamodules.synthetic import SyntheticDiseaseDataModule, SyntheticDrugDataModule, SyntheticTumorDataModule
from ldoctor.cli import LDoctorCLI
from ldoctor.losses import DWA, GradNorm, LossWeighting, PCGrad
from ldoctor.models.trunks import Trunk
from ldoctor.module import MultiTaskModule
from tests.helpers import ROOT, tiny_trainer_kwargs

STRATEGIES = [
    getattr(weighting_package, name)
    for name in weighting_package.__all__
    if isinstance(getattr(weighting_package, name), type)
    and issubclass(getattr(weighting_package, name), LossWeighting)
    and getattr(weighting_package, name) is not LossWeighting
]


class TinyTrunk(Trunk):
    """Two stages, ``first`` then ``shared``: ``[B, 2]`` -> ``[B, 2]`` (or ``[B, 1]``)."""

    stages = ("first", "shared")

    def __init__(self, first: nn.Module, shared: nn.Linear) -> None:
        super().__init__(shared.out_features)
        self.first, self.shared = first, shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared(self.first(x))


def linear(weight: list[list[float]], bias: float | None = None) -> nn.Linear:
    w = torch.tensor(weight)
    layer = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(w)
        if bias is not None:
            layer.bias.fill_(bias)
    return layer


def grads(*modules: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for m in modules for p in m.parameters()]


def zero_grads(*modules: nn.Module) -> None:
    for m in modules:
        for p in m.parameters():
            p.grad = None


# ----------------------------------------------------------------------------------------------------- every one
@pytest.mark.parametrize("cls", STRATEGIES, ids=lambda c: c.__name__)
def test_every_strategy_keeps_the_interface(cls):
    w: LossWeighting = cls(["a", "b"])
    w.attach(TinyTrunk(linear([[1.0, 0.0], [0.0, 1.0]]), linear([[1.0, 1.0]])))
    with pytest.raises(KeyError, match="unknown tasks"):
        w({"z": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="no task has a labelled sample"):
        w({})
    # constant losses (no graph) and an absent task: the total is still the (weighted) sum, every weight 1 at start
    assert w({"a": torch.tensor(2.0)}).item() == pytest.approx(2.0)
    w.epoch_end()
    assert w.weights() == {"a": 1.0, "b": 1.0}


@pytest.mark.parametrize("cls", [GradNorm, PCGrad])
def test_gradient_strategies_need_the_shared_parameters(cls):
    with pytest.raises(RuntimeError, match=r"attach\(trunk\)"):
        cls(["a", "b"])({"a": torch.tensor(1.0, requires_grad=True)})


# ----------------------------------------------------------------------------------------------------- DWA
def run_epoch(dwa: DWA, steps: list[dict[str, float]]) -> list[float]:
    totals = [dwa({t: torch.tensor(v) for t, v in step.items()}).item() for step in steps]
    dwa.epoch_end()
    return totals


def test_dwa_weights_follow_the_epoch_loss_ratios():
    dwa = DWA(["a", "b"])  # T = 2
    # epoch 1: mean a = (2 + 4) / 2 = 3; b only in one step: 1
    assert run_epoch(dwa, [{"a": 2.0, "b": 1.0}, {"a": 4.0}]) == pytest.approx([3.0, 4.0])
    assert dwa.weights() == {"a": 1.0, "b": 1.0}  # one epoch mean known: still 1
    # epoch 2 (weights 1): mean a = 1.5, b = (1 + 0.5) / 2 = 0.75
    assert run_epoch(dwa, [{"a": 1.5, "b": 1.0}, {"b": 0.5}]) == pytest.approx([2.5, 0.5])
    # r = (1.5 / 3, 0.75 / 1) = (0.5, 0.75): w_a = 2 e^0.25 / (e^0.25 + e^0.375) = 2 / (1 + e^0.125) = 0.937581
    assert dwa.weights() == pytest.approx({"a": 0.937581, "b": 1.062419}, abs=1e-6)
    # epoch 3 uses them: 0.937581 * 1 + 1.062419 * 0.5 = 1.468791; means a = b = 0.75
    assert run_epoch(dwa, [{"a": 1.0, "b": 0.5}, {"a": 0.5, "b": 1.0}]) == pytest.approx(
        [1.468791, 0.937581 * 0.5 + 1.062419], abs=1e-6)
    # r = (0.75 / 1.5, 0.75 / 0.75) = (0.5, 1): w_a = 2 / (1 + e^0.25) = 0.875647
    assert dwa.weights() == pytest.approx({"a": 0.875647, "b": 1.124353}, abs=1e-6)
    assert dwa.epoch_losses.tolist() == [[1.5, 0.75], [0.75, 0.75]]

    restored = DWA(["a", "b"])
    restored.load_state_dict(dwa.state_dict())
    assert set(dwa.state_dict()) == {"epoch_losses", "task_weights"}
    assert restored.weights() == dwa.weights()
    # the restored strategy continues from the same history: epoch 4 means (1.5, 0.75) -> r = (2, 1)
    for strategy in (dwa, restored):
        run_epoch(strategy, [{"a": 1.5, "b": 0.75}])
    w_a = 2 * math.exp(1.0) / (math.exp(1.0) + math.exp(0.5))
    assert restored.weights() == dwa.weights() == pytest.approx({"a": w_a, "b": 2 - w_a})


def test_dwa_task_missing_from_an_epoch_keeps_ratio_one():
    dwa = DWA(["a", "b"], temperature=1.0)
    run_epoch(dwa, [{"a": 2.0, "b": 1.0}])
    run_epoch(dwa, [{"a": 1.0}])  # b has no epoch-2 mean: r_b = 1; r_a = 0.5
    w_a = 2 * math.exp(0.5) / (math.exp(0.5) + math.exp(1.0))
    assert dwa.weights() == pytest.approx({"a": w_a, "b": 2 - w_a})
    with pytest.raises(ValueError, match="temperature"):
        DWA(["a"], temperature=0.0)


def _dwa_rank(rank: int, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/group", rank=rank, world_size=2)
    dwa = DWA(["a", "b"])
    for a in ([1.0, 3.0], [2.0])[rank]:
        dwa({"a": torch.tensor(a), "b": torch.tensor(float(rank))})
    dwa.epoch_end()
    torch.save(dwa.epoch_losses, f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_gloo_available(), reason="needs the gloo backend")
def test_dwa_epoch_means_are_reduced_over_processes(tmp_path):
    mp.spawn(_dwa_rank, args=(str(tmp_path),), nprocs=2)
    # a: (1 + 3 + 2) / 3 steps = 2; b: (0 + 0 + 1) / 3 = 1/3, the same on both processes
    for rank in (0, 1):
        means = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)[1]
        assert means.tolist() == pytest.approx([2.0, 1 / 3])


# ----------------------------------------------------------------------------------------------------- GradNorm
def gradnorm_setup() -> tuple[GradNorm, TinyTrunk, nn.Linear, nn.Linear]:
    # first = identity, shared W = [1, 1] (the last stage), heads: a = 1, b = 2; L = 0.5 (head(W first(x)))^2
    trunk = TinyTrunk(linear([[1.0, 0.0], [0.0, 1.0]]), linear([[1.0, 1.0]]))
    gradnorm = GradNorm(["a", "b"])  # alpha = 1.5
    gradnorm.attach(trunk)
    return gradnorm, trunk, linear([[1.0]]), linear([[2.0]])


def gradnorm_losses(trunk, head_a, head_b, x) -> dict[str, torch.Tensor]:
    z = trunk(torch.tensor([x]))
    return {"a": 0.5 * head_a(z).pow(2).sum(), "b": 0.5 * head_b(z).pow(2).sum()}


def assert_network_gets_weighted_sum(trunk, head_a, head_b, x, w_a, w_b):
    network = grads(trunk, head_a, head_b)
    zero_grads(trunk, head_a, head_b)
    losses = gradnorm_losses(trunk, head_a, head_b, x)
    (w_a * losses["a"] + w_b * losses["b"]).backward()
    for got, expected in zip(network, grads(trunk, head_a, head_b)):
        torch.testing.assert_close(got, expected)


def test_gradnorm_gradient_reaches_weights_and_network_as_derived():
    gradnorm, trunk, head_a, head_b = gradnorm_setup()
    # step 1, x = (1, 2): z = 3, L = (4.5, 18) = L(0); grad_W L_a = 3 (1, 2), grad_W L_b = 12 (1, 2)
    # G = w ||grad_W L|| = (3 sqrt5, 12 sqrt5) = (6.708204, 26.832816); r = (1, 1): target = mean G = 16.770510
    # d L_grad / d w_i = ||grad_W L_i|| sign(G_i - target) = (-6.708204, +26.832816)
    # (the identity layer before W is not part of W: with it the norms would be larger)
    total = gradnorm(gradnorm_losses(trunk, head_a, head_b, [1.0, 2.0]))
    assert total.item() == pytest.approx(4.5 + 18.0)  # the value is the weighted sum
    total.backward()
    assert gradnorm.task_weights.grad.tolist() == pytest.approx([-6.708204, 26.832816], abs=1e-5)
    assert_network_gets_weighted_sum(trunk, head_a, head_b, [1.0, 2.0], 1.0, 1.0)
    assert gradnorm.initial_losses.tolist() == [4.5, 18.0]

    # step 2: w set to (0.5, 2.5) is renormalised to sum K = 2: (1/3, 5/3); head a = 0.5, x = (2, 0)
    with torch.no_grad():
        gradnorm.task_weights.copy_(torch.tensor([0.5, 2.5]))
        head_a.weight.fill_(0.5)
    zero_grads(trunk, head_a, head_b, gradnorm)
    # z = 2, L = (0.5, 8); L / L(0) = (1/9, 4/9), mean 5/18: r = (0.4, 1.6)
    # grad_W L_a = 0.25 z (2, 0) = (1, 0), grad_W L_b = 4 z (2, 0) = (16, 0): G = (1/3, 80/3), mean 13.5
    # target = 13.5 r^1.5 = (3.415260, 27.322079): G_a < target_a, G_b < target_b -> d L_grad / d w = (-1, -16)
    # (with alpha = 0 the target would be 13.5 and b's gradient +16)
    total = gradnorm(gradnorm_losses(trunk, head_a, head_b, [2.0, 0.0]))
    assert gradnorm.weights() == pytest.approx({"a": 1 / 3, "b": 5 / 3})
    assert gradnorm.task_weights.sum().item() == pytest.approx(2.0)
    assert total.item() == pytest.approx(0.5 / 3 + 8 * 5 / 3, abs=1e-5)
    total.backward()
    assert gradnorm.task_weights.grad.tolist() == pytest.approx([-1.0, -16.0], abs=1e-5)
    assert_network_gets_weighted_sum(trunk, head_a, head_b, [2.0, 0.0], 1 / 3, 5 / 3)
    assert gradnorm.initial_losses.tolist() == [4.5, 18.0]  # L(0) stays the first loss


def test_gradnorm_absent_task_and_frozen_layer_leave_weights_alone():
    gradnorm, trunk, head_a, head_b = gradnorm_setup()
    losses = gradnorm_losses(trunk, head_a, head_b, [1.0, 2.0])
    # only a present: G_a is its own mean, r_a = 1, so L_grad = 0
    gradnorm({"a": losses["a"]}).backward()
    assert gradnorm.task_weights.grad.tolist() == [0.0, 0.0]
    assert gradnorm.initial_losses[0].item() == 4.5 and math.isnan(gradnorm.initial_losses[1].item())
    trunk.shared.requires_grad_(False)  # W frozen (staged fine-tuning): no norms, no change of w
    gradnorm.task_weights.grad = None
    total = gradnorm(gradnorm_losses(trunk, head_a, head_b, [1.0, 2.0]))
    total.backward()
    assert gradnorm.task_weights.grad.tolist() == [0.0, 0.0] and total.item() == pytest.approx(22.5)


# ----------------------------------------------------------------------------------------------------- PCGrad
def pcgrad_setup(head_b: list[list[float]]) -> tuple[PCGrad, TinyTrunk, nn.Linear, nn.Linear]:
    # first F = I and shared W = I (both shared), heads linear: L_a = u_a . z + 0, L_b = u_b . z + 1, z = W F x
    trunk = TinyTrunk(linear([[1.0, 0.0], [0.0, 1.0]]), linear([[1.0, 0.0], [0.0, 1.0]]))
    pcgrad = PCGrad(["a", "b"])
    pcgrad.attach(trunk)
    return pcgrad, trunk, linear([[1.0, 2.0]], bias=0.0), linear(head_b, bias=1.0)


def pcgrad_step(pcgrad, trunk, head_a, head_b) -> torch.Tensor:
    z = trunk(torch.tensor([[2.0, 0.0]]))  # z = (2, 0)
    total = pcgrad({"a": head_a(z).sum(), "b": head_b(z).sum()})
    total.backward()
    return total


def test_pcgrad_projects_conflicting_gradients():
    pcgrad, trunk, head_a, head_b = pcgrad_setup([[-1.0, 0.0]])
    total = pcgrad_step(pcgrad, trunk, head_a, head_b)
    assert total.item() == pytest.approx(2.0 + (-2.0 + 1.0))  # the value is the plain sum
    # on F and on W alike: grad L = u x^T, flat (row-major) g_a = (2, 0, 4, 0), g_b = (-2, 0, 0, 0)
    # over both layers g_a . g_b = 2 * (-4) = -8 < 0, ||g_b||^2 = 8, ||g_a||^2 = 40
    # g_a' = g_a + 8/8 g_b = (0, 0, 4, 0); g_b' = g_b + 8/40 g_a = (-1.6, 0, 0.8, 0); sum (-1.6, 0, 4.8, 0)
    expected = torch.tensor([[-1.6, 0.0], [4.8, 0.0]])
    torch.testing.assert_close(trunk.shared.weight.grad, expected)
    torch.testing.assert_close(trunk.first.weight.grad, expected)
    # heads are task-specific: the plain gradient d L / d u = z = (2, 0), d L / d bias = 1
    assert head_a.weight.grad.tolist() == [[2.0, 0.0]] and head_b.weight.grad.tolist() == [[2.0, 0.0]]
    assert head_b.bias.grad.tolist() == [1.0]
    assert pcgrad.weights() == {"a": 1.0, "b": 1.0}


def test_pcgrad_leaves_agreeing_gradients_alone():
    pcgrad, trunk, head_a, head_b = pcgrad_setup([[1.0, 0.0]])
    pcgrad_step(pcgrad, trunk, head_a, head_b)
    # g_b = (2, 0, 0, 0): g_a . g_b = 2 * 4 > 0, plain sum (2, 0, 4, 0) + (2, 0, 0, 0)
    torch.testing.assert_close(trunk.shared.weight.grad, torch.tensor([[4.0, 0.0], [4.0, 0.0]]))


def test_pcgrad_single_task_or_frozen_trunk_is_the_plain_gradient():
    pcgrad, trunk, head_a, head_b = pcgrad_setup([[-1.0, 0.0]])
    z = trunk(torch.tensor([[2.0, 0.0]]))
    pcgrad({"a": head_a(z).sum()}).backward()
    torch.testing.assert_close(trunk.shared.weight.grad, torch.tensor([[2.0, 0.0], [4.0, 0.0]]))
    trunk.requires_grad_(False)
    z = trunk(torch.tensor([[2.0, 0.0]]))
    assert pcgrad({"a": head_a(z).sum(), "b": head_b(z).sum()}).item() == pytest.approx(1.0)


def test_pcgrad_order_is_random_and_seeded():
    g = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [0.0, -1.0, 1.0]])
    # task 0 against 1 then 2: g_0 . g_1 = -1 -> (1, 0, 0) + 1/2 (-1, 1, 0) = (0.5, 0.5, 0), which now conflicts
    # with g_2 (. = -0.5) -> + 0.5/2 (0, -1, 1) = (0.5, 0.25, 0.25); against 2 then 1: g_0 . g_2 = 0, no change,
    # then g_1 -> (0.5, 0.5, 0)
    projected = [PCGrad(["a", "b", "c"], seed=s).surgery(g @ g.T) @ g for s in range(16)]
    assert {tuple(round(v, 6) for v in p[0].tolist()) for p in projected} == {(0.5, 0.25, 0.25), (0.5, 0.5, 0.0)}
    first, second = (PCGrad(["a", "b", "c"], seed=3).surgery(g @ g.T) for _ in range(2))
    torch.testing.assert_close(first, second)


# ----------------------------------------------------------------------------------------------------- in a fit
def synthetic_data() -> MultiTaskDataModule:
    kw = {"num_train": 8, "num_val": 8, "num_test": 8, "batch_size": 4}
    return MultiTaskDataModule({
        "tumor": SyntheticTumorDataModule(image_size=32, **kw),
        "disease": SyntheticDiseaseDataModule(image_size=32, **kw),
        "drug": SyntheticDrugDataModule(**kw),
    })


@pytest.mark.parametrize("cls", [DWA, GradNorm, PCGrad], ids=lambda c: c.__name__)
def test_fit_with_each_strategy_uses_the_hooks(cls, tmp_path):
    data = synthetic_data()
    module = MultiTaskModule(data.tasks, trunk="resnet18", weighting=cls)
    groups = {g["name"]: g["params"] for g in module.parameter_groups()}
    grouped = [id(p) for params in groups.values() for p in params]
    assert sorted(grouped) == sorted(id(p) for p in module.parameters())  # the trunk is not the weighting's
    assert groups.get("weighting") == ([module.weighting.task_weights] if cls is GradNorm else None)
    trainer = L.Trainer(**tiny_trainer_kwargs(tmp_path, logger=CSVLogger(tmp_path), max_epochs=3,
                                              limit_train_batches=1, limit_val_batches=0, log_every_n_steps=1))
    trainer.fit(module, datamodule=data)
    with open(trainer.logger.experiment.metrics_file_path) as f:
        rows = list(csv.DictReader(f))
    weights = [[float(r[f"weights/{t}"]) for t in data.task_names] for r in rows if r.get("weights/tumor")]
    assert len(weights) == 3
    assert weights[0] == [1.0, 1.0, 1.0]
    if cls is DWA:  # epoch_end ran after each epoch: epoch 3 has the loss-ratio weights
        assert weights[1] == [1.0, 1.0, 1.0] and weights[2] != [1.0, 1.0, 1.0]
        assert sum(weights[2]) == pytest.approx(3.0)
        assert not module.weighting.epoch_losses.isnan().any()
    if cls is GradNorm:  # attach gave it layer4; w moved and is renormalised to K = 3
        assert weights[2] != [1.0, 1.0, 1.0] and sum(weights[2]) == pytest.approx(3.0, abs=1e-5)
    if cls is PCGrad:
        assert weights[2] == [1.0, 1.0, 1.0]


def test_strategy_options_come_from_a_config(tmp_path):
    overlay = tmp_path / "dwa.yaml"
    overlay.write_text("model:\n  weighting:\n    class_path: ldoctor.losses.DWA\n    init_args: {temperature: 1.0}\n")
    cli = LDoctorCLI(args=["--config", str(ROOT / "configs" / "smoke.yaml"), "--config", str(overlay)], run=False)
    assert isinstance(cli.model.weighting, DWA) and cli.model.weighting.temperature == 1.0
