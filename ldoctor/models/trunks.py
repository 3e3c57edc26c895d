"""Trunk registry: image feature extractors shared by every task.

A trunk maps ``[batch, 3, H, W]`` images (ImageNet-normalised) to pooled features ``[batch, features]``.
It exposes ``stages`` (names of its children in input-to-output order) so staged fine-tuning can unfreeze
it block by block.

Weights come from one of:

- ``None``: random initialisation;
- a torchvision weights enum name, e.g. ``"IMAGENET1K_V2"`` (downloads: never used in tests);
- a local file: a state dict in ``.pt``/``.pth``/``.bin`` (loaded with ``weights_only=True``) or
  ``.safetensors``, with or without the classifier (``fc.*``) and with an optional ``module.``/``backbone.``/
  ``trunk.`` prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
_PREFIXES = ("module.", "backbone.", "trunk.", "model.")


@dataclass(frozen=True)
class TrunkInfo:
    """Registry entry: how to build a trunk and what it produces."""

    builder: Callable[..., nn.Module]
    features: int
    stages: tuple[str, ...]
    description: str
    #: Drop the stem max-pool (stem stride 2 instead of 4) for small inputs such as 32-48 px CT patches, where
    #: a 4 mm nodule would be about 1 px after a stride-4 stem. No parameters change: same state-dict keys, so
    #: the torchvision weights of the base architecture load as they are.
    small_input: bool = False
    #: torchvision model name whose weights enum serves this entry (default: the registry name).
    torchvision_name: str | None = None


_RESNET_STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")

TRUNKS: dict[str, TrunkInfo] = {
    "resnet50": TrunkInfo(torchvision.models.resnet50, 2048, _RESNET_STAGES, "torchvision ResNet-50 (default)"),
    "resnet18": TrunkInfo(torchvision.models.resnet18, 512, _RESNET_STAGES, "torchvision ResNet-18 (fast tests)"),
    "resnet34": TrunkInfo(torchvision.models.resnet34, 512, _RESNET_STAGES, "torchvision ResNet-34"),
    "resnet18_smallinput": TrunkInfo(
        torchvision.models.resnet18, 512, _RESNET_STAGES, "ResNet-18 without the stem max-pool (small inputs)",
        small_input=True, torchvision_name="resnet18",
    ),
    "resnet50_smallinput": TrunkInfo(
        torchvision.models.resnet50, 2048, _RESNET_STAGES, "ResNet-50 without the stem max-pool (small inputs)",
        small_input=True, torchvision_name="resnet50",
    ),
}


class ResNetTrunk(nn.Module):
    """A torchvision ResNet without its classifier.

    ``stem`` holds conv1/bn1/relu/maxpool; ``layer1``..``layer4`` are the residual stages.

    Args:
        resnet: a torchvision ``ResNet``.
    """

    def __init__(self, resnet: torchvision.models.ResNet) -> None:
        super().__init__()
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_features = resnet.fc.in_features
        self.stages = _RESNET_STAGES

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``[batch, 3, H, W]``. Returns: features ``[batch, out_features]``."""
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.pool(x), 1)


def available_trunks() -> list[str]:
    return sorted(TRUNKS)


def build_trunk(name: str = "resnet50", weights: str | None = None) -> ResNetTrunk:
    """Build a registered trunk and load its weights.

    Args:
        name: a key of ``TRUNKS``.
        weights: ``None``, a torchvision weights enum name, or a local state-dict file (see module docstring).

    Raises:
        ValueError: unknown name or weights enum; FileNotFoundError: a weights path that does not exist;
        RuntimeError: a weights file whose keys do not match (missing and unexpected keys listed).
    """
    if name not in TRUNKS:
        raise ValueError(f"unknown trunk {name!r}; registered trunks: {', '.join(available_trunks())}")
    info = TRUNKS[name]
    if weights is None or _looks_like_path(weights):
        trunk = ResNetTrunk(info.builder(weights=None))
        if weights is not None:
            load_trunk_weights(trunk, Path(weights))
    else:
        trunk = ResNetTrunk(info.builder(weights=_weights_enum(info.torchvision_name or name, weights)))
    if info.small_input:
        trunk.stem[3] = nn.Identity()  # the max-pool; it has no parameters, so the state-dict keys stay the same
    return trunk


def _looks_like_path(weights: str) -> bool:
    return weights.endswith(STATE_DICT_SUFFIXES) or "/" in weights or "\\" in weights


def _weights_enum(name: str, weights: str) -> torchvision.models.WeightsEnum:
    enum = torchvision.models.get_model_weights(name)
    member = weights.split(".")[-1]
    if member not in enum.__members__:
        raise ValueError(
            f"trunk weights {weights!r} are neither a local file ({', '.join(STATE_DICT_SUFFIXES)}) "
            f"nor one of {enum.__name__}: {', '.join(enum.__members__)}"
        )
    return enum[member]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (``weights_only=True``: no code runs)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: trunk weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise RuntimeError(f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}")
    return state


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _to_trunk_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map torchvision ResNet keys (``conv1.weight``) to ``ResNetTrunk`` keys (``stem.0.weight``)."""
    rename = {"conv1.": "stem.0.", "bn1.": "stem.1."}
    out = {}
    for key, value in state.items():
        if key.startswith("fc."):
            continue
        for old, new in rename.items():
            if key.startswith(old):
                key = new + key[len(old) :]
        out[key] = value
    return out


def load_trunk_weights(trunk: ResNetTrunk, path: Path) -> None:
    """Load a local state dict into ``trunk`` strictly, with a readable error on mismatch."""
    state = _to_trunk_keys(_strip_prefixes(read_state_dict(path)))
    expected = trunk.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:10]) + (f" ... (+{len(keys) - 10} more)" if len(keys) > 10 else "")

        raise RuntimeError(
            f"{path}: weights do not fit the trunk. missing keys: [{show(missing)}]; "
            f"unexpected keys: [{show(unexpected)}]; wrong shapes: [{show(wrong_shape)}]"
        )
    trunk.load_state_dict(state, strict=True)
