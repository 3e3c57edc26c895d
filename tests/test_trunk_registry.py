"""The trunk registry by protocol: every entry keeps the Trunk contract; weights load by shared-tensor identity."""

from __future__ import annotations

import re

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from ldoctor.models.trunks import TRUNKS, Trunk, build_trunk, check_trunk, torchvision_key_map


def _randomise_norms(model: nn.Module) -> None:
    """Give every BatchNorm non-default affine parameters and running statistics, so loading them is visible."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)


def _densenet_reference() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.densenet121(weights=None)
    _randomise_norms(model)
    return model.eval()


def _densenet_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision's DenseNet forward without the classifier, written out: features -> ReLU -> pool."""
    return torch.flatten(nn.functional.adaptive_avg_pool2d(torch.relu(model.features(x)), 1), 1)


def _save(path, state: dict[str, torch.Tensor]) -> str:
    torch.save(state, path)
    return str(path)


def _legacy(key: str) -> str:
    """Today's DenseNet key in the old layout: ``denselayer1.norm1.weight`` -> ``denselayer1.norm.1.weight``."""
    return re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", key)


@pytest.mark.parametrize("name", list(TRUNKS))
def test_every_entry_builds_runs_and_its_stages_hold_every_parameter_once(name):
    info = TRUNKS[name]
    trunk = build_trunk(name).eval()
    assert isinstance(trunk, Trunk)
    with torch.no_grad():
        features = trunk(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, info.features) and trunk.out_features == info.features
    assert torch.isfinite(features).all()
    assert trunk.stages == info.stages
    owners: dict[int, list[str]] = {}
    for stage in trunk.stages:
        for p in getattr(trunk, stage).parameters():
            owners.setdefault(id(p), []).append(stage)
    params = list(trunk.parameters())
    assert all(len(owners.get(id(p), [])) == 1 for p in params)  # every parameter in exactly one stage
    assert len(owners) == len(params)  # and no stage holds anything outside the trunk


@pytest.mark.parametrize("name", list(TRUNKS))
def test_every_entry_shares_all_its_tensors_with_the_torchvision_model(name):
    info = TRUNKS[name]
    source = torchvision.models.get_model(info.torchvision_name, weights=None)
    trunk = info.wrap(source)
    key_map = torchvision_key_map(trunk, source)
    assert sorted(key_map.values()) == sorted(trunk.state_dict())  # every trunk tensor has one torchvision key
    left_out = {k.split(".")[0] for k in source.state_dict()} - {k.split(".")[0] for k in key_map}
    assert left_out == {"fc" if name.startswith("resnet") else "classifier"}


@pytest.mark.parametrize(
    ("name", "constructor"),
    [
        ("resnet18", torchvision.models.resnet18),
        ("resnet18_smallinput", torchvision.models.resnet18),
        ("resnet34", torchvision.models.resnet34),
    ],
)
def test_resnet_entries_initialise_like_torchvision_under_the_same_seed(name, constructor):
    torch.manual_seed(3)
    trunk = build_trunk(name)
    torch.manual_seed(3)
    reference = [v for k, v in constructor(weights=None).state_dict().items() if not k.startswith("fc.")]
    assert len(reference) == len(trunk.state_dict())
    for ours, theirs in zip(trunk.state_dict().values(), reference, strict=True):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("layout", ["torchvision", "legacy_chexnet", "trunk", "safetensors"])
def test_densenet121_weights_round_trip(tmp_path, layout):
    reference = _densenet_reference()
    state = reference.state_dict()
    if layout == "torchvision":
        path = tmp_path / "x.pth"
        torch.save(state, path)
    elif layout == "legacy_chexnet":  # old key layout, DataParallel + attribute prefix, 14-class head, no counters
        path = tmp_path / "model.pth.tar"
        old = {f"module.densenet121.{_legacy(k)}": v for k, v in state.items() if not k.startswith("classifier.")}
        old = {k: v for k, v in old.items() if not k.endswith("num_batches_tracked")}
        assert "module.densenet121.features.denseblock1.denselayer1.norm.1.weight" in old
        old["module.densenet121.classifier.0.weight"] = torch.zeros(14, 1024)
        old["module.densenet121.classifier.0.bias"] = torch.zeros(14)
        torch.save({"epoch": 3, "state_dict": old}, path)
    elif layout == "trunk":
        path = tmp_path / "trunk.pt"
        torch.save(build_trunk("densenet121", _save(tmp_path / "x.pth", state)).state_dict(), path)
    else:
        path = tmp_path / "x.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    torch.manual_seed(1)  # the trunk starts from other weights than the reference
    trunk = build_trunk("densenet121", str(path)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(trunk(x), _densenet_features(reference, x), rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["trunk", "torchvision"])
def test_resnet18_weights_round_trip(tmp_path, layout):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)
    _randomise_norms(reference)
    reference.eval()
    if layout == "trunk":
        trunk_state = build_trunk("resnet18", _save(tmp_path / "tv.pth", reference.state_dict())).state_dict()
        assert "stem.0.weight" in trunk_state
        path = _save(tmp_path / "trunk.pt", {f"backbone.{k}": v for k, v in trunk_state.items()})
    else:
        path = _save(tmp_path / "tv.pth", reference.state_dict())
    torch.manual_seed(1)
    trunk = build_trunk("resnet18", path).eval()
    x = torch.randn(2, 3, 32, 32)
    reference.fc = nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(trunk(x), reference(x), rtol=0, atol=0)


def test_densenet_mismatch_names_the_keys_in_trunk_terms(tmp_path):
    state = torchvision.models.densenet121(weights=None).state_dict()
    del state["features.denseblock4.denselayer16.conv2.weight"]
    state["features.norm5.running_var"] = torch.ones(7)
    state["features.extra.weight"] = torch.zeros(1)
    path = _save(tmp_path / "bad.pth", state)
    with pytest.raises(RuntimeError) as error:
        build_trunk("densenet121", path)
    message = str(error.value)
    assert "missing keys: [block4.denseblock4.denselayer16.conv2.weight]" in message
    assert "unexpected keys: [features.extra.weight]" in message
    assert "block4.norm5.running_var (7,) vs (1024,)" in message
    with pytest.raises(RuntimeError, match="weights do not fit the trunk"):  # a ResNet file in a DenseNet
        build_trunk("densenet121", _save(tmp_path / "r.pth", torchvision.models.resnet18(weights=None).state_dict()))


def test_check_trunk_refuses_stages_that_miss_parameters():
    class Leaky(Trunk):
        stages = ("body",)

        def __init__(self) -> None:
            super().__init__(4)
            self.body, self.extra = nn.Linear(3, 4), nn.Linear(4, 4)

    with pytest.raises(ValueError, match=r"in no stage: \['extra.weight', 'extra.bias'\]"):
        check_trunk(Leaky())
    with pytest.raises(TypeError, match="not a ldoctor.models.trunks.Trunk"):
        check_trunk(nn.Linear(3, 4))


def test_densenet121_staged_finetuning_updates_only_the_unfrozen_stage():
    torch.manual_seed(0)
    trunk = build_trunk("densenet121")
    frozen = trunk.stages[:-1]
    trunk.train()
    for stage in frozen:  # what the staged fine-tuning callback does, without Lightning
        getattr(trunk, stage).requires_grad_(False).eval()
    trainable = {n for n, p in trunk.named_parameters() if p.requires_grad}
    assert trainable == {f"block4.{n}" for n, _ in trunk.block4.named_parameters()}
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in trunk.parameters() if p.requires_grad], lr=0.1)
    trunk(torch.randn(2, 3, 32, 32)).square().mean().backward()
    optimizer.step()
    after = trunk.state_dict()
    for key in before:
        if key.startswith(frozen):  # parameters and BatchNorm statistics of frozen stages: bit-identical
            assert torch.equal(after[key], before[key]), key
    changed = [n for n, p in trunk.block4.named_parameters() if not torch.equal(p, before[f"block4.{n}"])]
    assert changed == [n for n, _ in trunk.block4.named_parameters()]
    assert not torch.equal(after["block4.norm5.running_mean"], before["block4.norm5.running_mean"])
