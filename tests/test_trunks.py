from __future__ import annotations

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from ldoctor.models.trunks import TRUNKS, available_trunks, build_trunk


@pytest.mark.parametrize("name", available_trunks())
def test_every_registered_trunk_builds_and_pools(name):
    trunk = build_trunk(name).eval()
    with torch.no_grad():
        features = trunk(torch.randn(2, 3, 64, 64))
    assert features.shape == (2, TRUNKS[name].features) == (2, trunk.out_features)
    assert tuple(n for n, _ in trunk.named_children())[:5] == TRUNKS[name].stages


def test_unknown_trunk_lists_registered_names():
    with pytest.raises(ValueError, match="resnet18.*resnet50"):
        build_trunk("vgg11")


def test_unknown_weights_enum_is_refused_without_download():
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        build_trunk("resnet18", "NOT_A_WEIGHT")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_local_torchvision_state_dict_loads_exactly(tmp_path, suffix):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pt":
        torch.save({f"module.{k}": v for k, v in state.items()}, path)  # a DDP-style prefix is stripped
    else:
        save_file(state, str(path))
    trunk = build_trunk("resnet18", str(path)).eval()
    x = torch.randn(2, 3, 64, 64)
    reference.fc = torch.nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(trunk(x), reference(x))


def test_mismatched_weights_list_the_keys(tmp_path):
    state = torchvision.models.resnet18(weights=None).state_dict()
    del state["layer4.1.bn2.running_mean"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    expected = r"missing keys: \[layer4\.1\.bn2\.running_mean\].*unexpected keys: \[extra\.weight\]"
    with pytest.raises(RuntimeError, match=expected):
        build_trunk("resnet18", str(path))
    # a ResNet-18 file does not fit a ResNet-50 trunk: shapes and keys are reported
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(RuntimeError, match="weights do not fit the trunk"):
        build_trunk("resnet50", str(path))


def test_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        build_trunk("resnet18", str(tmp_path / "nope.pt"))
