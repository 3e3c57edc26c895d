"""Trunk registry: image feature extractors shared by every task.

A trunk (:class:`Trunk`) maps ``[batch, 3, H, W]`` images (ImageNet-normalised) to pooled features
``[batch, out_features]``. It names its ``stages`` (child modules in input-to-output order that hold every
parameter exactly once) so staged fine-tuning can unfreeze it block by block.

A trunk wraps the modules of a torchvision model, so the parameters it shares with that model tell which
torchvision key feeds which trunk key (:func:`torchvision_key_map`): no rename table is written per
architecture. Registering a trunk is one :data:`TRUNKS` entry, plus a :class:`Trunk` subclass if the
architecture is new::

    TRUNKS["densenet169"] = TrunkInfo(
        DenseNetTrunk, "densenet169", 1664, DENSENET_STAGES, "DenseNet-169", legacy_key=densenet_legacy_key
    )

Weights come from one of:

- ``None``: random initialisation;
- a torchvision weights enum name, e.g. ``"IMAGENET1K_V2"`` (downloads: never used in tests);
- a local file: a state dict in ``.pt``/``.pth``/``.pth.tar``/``.bin`` (loaded with ``weights_only=True``; a
  checkpoint dict holding it under ``"state_dict"`` is accepted) or ``.safetensors``. Its keys are either the
  torchvision model's (with or without the classifier, ``fc.*`` / ``classifier.*``) or the trunk's own, with
  optional ``module.``/``backbone.``/``trunk.``/``model.``/``<torchvision name>.`` prefixes (e.g.
  ``module.densenet121.`` in CheXNet checkpoints). An entry may also accept an older key layout
  (:attr:`TrunkInfo.legacy_key`; DenseNet's ``norm.1`` keys).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from itertools import chain
from pathlib import Path

import torch
import torchvision
from torch import nn

from ldoctor.checkpoint_io import load_tensors
from ldoctor.errors import BadInput

STATE_DICT_SUFFIXES = (".pt", ".pth", ".pth.tar", ".bin", ".safetensors")
PREFIXES = ("module.", "backbone.", "trunk.", "model.")


class Trunk(nn.Module):
    """What every trunk provides.

    Subclasses set ``stages`` as a class attribute, build their stages from the modules of a torchvision model
    (sharing them, not copying: weights loading relies on it) and implement ``forward``.

    Attributes:
        out_features: width of the pooled features.
        stages: attribute names of child modules, input to output, that together hold every parameter exactly
            once. Staged fine-tuning does ``getattr(trunk, stage)`` to freeze and unfreeze them.

    Args:
        out_features: width of the pooled features.
    """

    stages: tuple[str, ...] = ()

    def __init__(self, out_features: int) -> None:
        super().__init__()
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``[batch, 3, H, W]``, ImageNet-normalised. Returns: features ``[batch, out_features]``."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward")


RESNET_STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
DENSENET_STAGES = ("stem", "block1", "block2", "block3", "block4")


class ResNetTrunk(Trunk):
    """A torchvision ResNet without its classifier.

    ``stem`` holds conv1/bn1/relu/maxpool; ``layer1``..``layer4`` are the residual stages.

    Args:
        resnet: a torchvision ``ResNet``; its modules are shared, not copied.
        small_input: replace the stem max-pool by ``nn.Identity`` (stem stride 2 instead of 4) for small inputs
            such as 32-48 px CT patches, where a 4 mm nodule would be about 1 px after a stride-4 stem. No
            parameter changes, so the state-dict keys and weights of the base architecture still fit.
    """

    stages = RESNET_STAGES

    def __init__(self, resnet: torchvision.models.ResNet, small_input: bool = False) -> None:
        super().__init__(resnet.fc.in_features)
        maxpool = nn.Identity() if small_input else resnet.maxpool
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``[batch, 3, H, W]``. Returns: features ``[batch, out_features]``."""
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.pool(x), 1)


class DenseNetTrunk(Trunk):
    """A torchvision DenseNet without its classifier (CheXNet's trunk is DenseNet-121).

    ``stem`` holds conv0/norm0/relu0/pool0; ``block1``..``block3`` a dense block and its transition;
    ``block4`` the last dense block and the final norm5. The forward pass is torchvision's without the
    classifier: stages, ReLU, global average pool.

    Args:
        densenet: a torchvision ``DenseNet``; its modules are shared, not copied.
    """

    stages = DENSENET_STAGES

    def __init__(self, densenet: torchvision.models.DenseNet) -> None:
        super().__init__(densenet.classifier.in_features)
        f = densenet.features
        self.stem = nn.Sequential(OrderedDict(conv0=f.conv0, norm0=f.norm0, relu0=f.relu0, pool0=f.pool0))
        self.block1 = nn.Sequential(OrderedDict(denseblock1=f.denseblock1, transition1=f.transition1))
        self.block2 = nn.Sequential(OrderedDict(denseblock2=f.denseblock2, transition2=f.transition2))
        self.block3 = nn.Sequential(OrderedDict(denseblock3=f.denseblock3, transition3=f.transition3))
        self.block4 = nn.Sequential(OrderedDict(denseblock4=f.denseblock4, norm5=f.norm5))
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``[batch, 3, H, W]`` (H, W >= 29). Returns: features ``[batch, out_features]``."""
        x = self.block4(self.block3(self.block2(self.block1(self.stem(x)))))
        return torch.flatten(self.pool(torch.relu(x)), 1)


#: torchvision's pattern for the DenseNet keys of old checkpoints (``denselayer1.norm.1.weight``), which
#: CheXNet weights in the wild still use; torchvision applies it in ``densenet._load_state_dict``.
_DENSENET_LEGACY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def densenet_legacy_key(key: str) -> str:
    """``features.denseblock1.denselayer1.norm.1.weight`` -> ``features.denseblock1.denselayer1.norm1.weight``."""
    match = _DENSENET_LEGACY.match(key)
    return match.group(1) + match.group(2) if match else key


def same_key(key: str) -> str:
    """The key as it is (entries without an older key layout)."""
    return key


@dataclass(frozen=True)
class TrunkInfo:
    """Registry entry: how to build a trunk and what it produces.

    Attributes:
        wrap: turns a freshly built torchvision model into the trunk, sharing its modules.
        torchvision_name: the torchvision model (``torchvision.models.get_model``) that is built and wrapped,
            and whose weights enum serves this entry.
        features: ``out_features`` of the trunk.
        stages: ``stages`` of the trunk.
        description: one line for listings.
        legacy_key: maps a key of an older checkpoint layout to today's torchvision key.
    """

    wrap: Callable[[nn.Module], Trunk]
    torchvision_name: str
    features: int
    stages: tuple[str, ...]
    description: str
    legacy_key: Callable[[str], str] = same_key


TRUNKS: dict[str, TrunkInfo] = {
    "resnet50": TrunkInfo(ResNetTrunk, "resnet50", 2048, RESNET_STAGES, "torchvision ResNet-50 (default)"),
    "resnet18": TrunkInfo(ResNetTrunk, "resnet18", 512, RESNET_STAGES, "torchvision ResNet-18 (fast tests)"),
    "resnet34": TrunkInfo(ResNetTrunk, "resnet34", 512, RESNET_STAGES, "torchvision ResNet-34"),
    "resnet18_smallinput": TrunkInfo(
        partial(ResNetTrunk, small_input=True),
        "resnet18",
        512,
        RESNET_STAGES,
        "ResNet-18 without the stem max-pool (small inputs)",
    ),
    "resnet50_smallinput": TrunkInfo(
        partial(ResNetTrunk, small_input=True),
        "resnet50",
        2048,
        RESNET_STAGES,
        "ResNet-50 without the stem max-pool (small inputs)",
    ),
    "densenet121": TrunkInfo(
        DenseNetTrunk,
        "densenet121",
        1024,
        DENSENET_STAGES,
        "torchvision DenseNet-121 (CheXNet's trunk)",
        legacy_key=densenet_legacy_key,
    ),
}


def available_trunks() -> list[str]:
    """Registered trunk names, sorted."""
    return sorted(TRUNKS)


#: A trunk given as a factory instead of a registered name (``MultiTaskModule(trunk=...)``): called with no
#: arguments; in a config, ``class_path`` names a :class:`Trunk` subclass of your own file and ``init_args`` its options.
TrunkCallable = Callable[[], Trunk]


def build_trunk(name: str | TrunkCallable = "resnet50", weights: str | None = None) -> Trunk:
    """Build a registered trunk (or call a trunk factory) and load its weights.

    Args:
        name: a key of ``TRUNKS``, or a factory returning a :class:`Trunk` (its weights come from a local file
            with the trunk's own keys).
        weights: ``None``, a torchvision weights enum name, or a local state-dict file (see module docstring).

    Returns:
        the trunk; ``trunk(x)`` maps ``[batch, 3, H, W]`` to ``[batch, trunk.out_features]``.

    Raises:
        ValueError: unknown name or weights enum; FileNotFoundError: a weights path that does not exist;
        BadInput: a weights file that cannot be read as a state dict (:func:`read_state_dict`);
        RuntimeError: a weights file whose keys do not match (missing, unexpected and wrong-shape keys listed).
    """
    if callable(name):
        return _build_from_factory(name, weights)
    if name not in TRUNKS:
        raise ValueError(f"unknown trunk {name!r}; registered trunks: {', '.join(available_trunks())}")
    info = TRUNKS[name]
    from_file = weights is not None and _looks_like_path(weights)
    enum = None if weights is None or from_file else _weights_enum(info.torchvision_name, weights)
    source = torchvision.models.get_model(info.torchvision_name, weights=enum)
    trunk = info.wrap(source)
    check_trunk(trunk)
    if (trunk.out_features, trunk.stages) != (info.features, info.stages):
        raise RuntimeError(
            f"TRUNKS[{name!r}] says features={info.features}, stages={info.stages}, but the trunk it builds has "
            f"{trunk.out_features}, {trunk.stages}; fix the registry entry"
        )
    if from_file:
        prefixes = (*PREFIXES, f"{info.torchvision_name}.")
        load_trunk_weights(trunk, Path(weights), source, info.legacy_key, prefixes)
    return trunk


def _build_from_factory(factory: TrunkCallable, weights: str | None) -> Trunk:
    trunk = factory()
    check_trunk(trunk)
    if weights is not None:
        if not _looks_like_path(weights):
            raise ValueError(f"trunk weights {weights!r}: a trunk built by a factory takes weights from a local "
                             f"state-dict file ({', '.join(STATE_DICT_SUFFIXES)}) with its own keys")
        load_trunk_weights(trunk, Path(weights))
    return trunk


def check_trunk(trunk: nn.Module) -> None:
    """Raise unless ``trunk`` keeps the :class:`Trunk` contract: its stages hold every parameter exactly once.

    Raises:
        TypeError: not a ``Trunk`` or a stage that is not a module; ValueError: parameters in no stage or in two.
    """
    if not isinstance(trunk, Trunk):
        raise TypeError(f"{type(trunk).__name__} is not a ldoctor.models.trunks.Trunk; subclass it")
    owners: dict[int, list[str]] = {}
    for stage in trunk.stages:
        module = getattr(trunk, stage, None)
        if not isinstance(module, nn.Module):
            raise TypeError(f"{type(trunk).__name__}.stages names {stage!r}, which is not a child module")
        for p in module.parameters():
            owners.setdefault(id(p), []).append(stage)
    params = dict(trunk.named_parameters())
    orphans = [n for n, p in params.items() if id(p) not in owners]
    shared = [f"{n} ({', '.join(owners[id(p)])})" for n, p in params.items() if len(owners.get(id(p), [])) > 1]
    if orphans or shared:
        raise ValueError(
            f"{type(trunk).__name__}.stages {trunk.stages} must hold every parameter exactly once; "
            f"in no stage: {orphans[:5]}; in several: {shared[:5]}"
        )


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


#: What a trunk weights file is, for messages.
EXPECTED_WEIGHTS = (f"a state dict saved by torch.save or safetensors (parameter name -> tensor; "
                    f"{', '.join(STATE_DICT_SUFFIXES)})")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (``weights_only=True``: no code runs).

    Raises:
        FileNotFoundError: no such file. BadInput: an empty, truncated or damaged file, one that is not a state dict
            saved by ``torch.save`` or safetensors (naming the file and :data:`EXPECTED_WEIGHTS`).
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: trunk weights file not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except SafetensorError as err:
            raise BadInput(f"{path}: not a readable safetensors file ({err}"
                           f"{'; the file is empty' if path.stat().st_size == 0 else ''}); expected "
                           f"{EXPECTED_WEIGHTS}; it may be truncated: copy or download it again") from None
    state = load_tensors(path, EXPECTED_WEIGHTS)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        found = type(state).__name__ if not isinstance(state, dict) else "a dict with values that are not tensors"
        raise BadInput(f"{path}: holds {found}; expected {EXPECTED_WEIGHTS}")
    return state


def _strip_prefixes(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Strip every prefix that all keys share, repeatedly (``module.densenet121.features...``)."""
    stripped = True
    while stripped and state:
        stripped = False
        for prefix in prefixes:
            if all(k.startswith(prefix) for k in state):
                state, stripped = {k[len(prefix) :]: v for k, v in state.items()}, True
    return state


def torchvision_key_map(trunk: nn.Module, source: nn.Module) -> dict[str, str]:
    """Map the keys of ``source`` (the torchvision model the trunk wraps) to the trunk's keys.

    Derived from object identity: a source key maps to the trunk key holding the very same parameter or buffer.
    Source keys whose tensor the trunk does not hold (the classifier) are left out.

    Example: for ``ResNetTrunk``, ``{"conv1.weight": "stem.0.weight", "layer1.0.conv1.weight": ..., ...}``.
    """
    trunk_names = {id(t): name for name, t in trunk.state_dict(keep_vars=True).items()}
    return {k: trunk_names[id(t)] for k, t in source.state_dict(keep_vars=True).items() if id(t) in trunk_names}


def _unused_modules(trunk: nn.Module, source: nn.Module) -> tuple[str, ...]:
    """Key prefixes of the outermost source modules none of whose tensors the trunk holds (``fc.``)."""
    held = {id(t) for t in trunk.state_dict(keep_vars=True).values()}
    prefixes: list[str] = []
    for name, module in source.named_modules():
        tensors = [id(t) for t in chain(module.parameters(), module.buffers())]
        if name and tensors and held.isdisjoint(tensors) and not name.startswith(tuple(prefixes)):
            prefixes.append(f"{name}.")
    return tuple(prefixes)


def _to_trunk_keys(state: dict[str, torch.Tensor], trunk: nn.Module, source: nn.Module) -> dict[str, torch.Tensor]:
    """Rename torchvision keys to trunk keys and drop the classifier; a file with the trunk's keys is kept."""
    key_map = torchvision_key_map(trunk, source)
    if len(state.keys() & trunk.state_dict().keys()) > len(state.keys() & source.state_dict().keys()):
        return state
    unused = _unused_modules(trunk, source)
    return {key_map.get(k, k): v for k, v in state.items() if not k.startswith(unused)}


def load_trunk_weights(
    trunk: nn.Module,
    path: Path,
    source: nn.Module | None = None,
    legacy_key: Callable[[str], str] = same_key,
    prefixes: tuple[str, ...] = PREFIXES,
) -> None:
    """Load a local state dict into ``trunk`` strictly, with a readable error on mismatch.

    Args:
        trunk: the trunk to load into.
        path: a state-dict file (see module docstring).
        source: the torchvision model ``trunk`` wraps; with it, torchvision keys are accepted too.
        legacy_key: maps a key of an older layout to today's key.
        prefixes: key prefixes stripped when every key has them.

    Raises:
        FileNotFoundError: no such file; BadInput: not readable as a state dict; RuntimeError: keys or shapes that
            do not fit, listed.
    """
    state = _strip_prefixes(read_state_dict(path), prefixes)
    state = {legacy_key(k): v for k, v in state.items()}
    if source is not None:
        state = _to_trunk_keys(state, trunk, source)
    _check_keys(path, state, trunk.state_dict())
    trunk.load_state_dict(state, strict=True)


def _check_keys(path: Path, state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> None:
    # BatchNorm fills a missing num_batches_tracked itself (pre-PyTorch-0.4 checkpoints such as CheXNet's lack it)
    missing = sorted(k for k in set(expected) - set(state) if not k.endswith(".num_batches_tracked"))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or wrong_shape:

        def show(keys: list[str]) -> str:
            return ", ".join(keys[:10]) + (f" ... (+{len(keys) - 10} more)" if len(keys) > 10 else "")

        raise RuntimeError(
            f"{path}: weights do not fit the trunk. missing keys: [{show(missing)}]; "
            f"unexpected keys: [{show(unexpected)}]; wrong shapes: [{show(wrong_shape)}]"
        )
