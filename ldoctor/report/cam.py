"""Which trunk stage Grad-CAM reads, and the maps themselves (``monai.visualize.GradCAM``).

Grad-CAM weighs a stage's feature maps by their gradients; its map has that stage's resolution. On the trunk's last
stage a ResNet at 224 px gives 7 x 7, the usual choice; on the small inputs of a CPU demo (64 px radiographs,
32 px nodule views) the last stage is 2 x 2 or 1 x 1, a map that says nothing about where. :func:`cam_stage` takes
the deepest stage whose output is at least :data:`MIN_CAM_SIDE` on each side (the last stage at the configs' full
sizes), and the report names it. A map with no positive evidence (Grad-CAM's ReLU leaves it all zero) is reported as
such instead of drawn as an empty overlay.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.visualize import GradCAM
from torch import nn

from ldoctor.report.images import unit_normalise

#: Smallest side (in feature-map cells) of the stage Grad-CAM reads.
MIN_CAM_SIDE = 7


def cam_stage(trunk: nn.Module, images: torch.Tensor) -> str:
    """The deepest of ``trunk.stages`` whose output on ``images`` ``[N, 3, H, W]`` is at least :data:`MIN_CAM_SIDE`
    cells on each side; the first stage when none is."""
    sides: dict[str, int] = {}
    hooks = [getattr(trunk, name).register_forward_hook(
        lambda _m, _i, out, name=name: sides.__setitem__(name, min(out.shape[-2:]))) for name in trunk.stages]
    try:
        with torch.no_grad():
            trunk(images[:1])
    finally:
        for hook in hooks:
            hook.remove()
    deep_enough = [name for name in trunk.stages if sides.get(name, 0) >= MIN_CAM_SIDE]
    return deep_enough[-1] if deep_enough else trunk.stages[0]


def grad_cam(wrapper: nn.Module, images: torch.Tensor, stage: str, class_idx: int) -> np.ndarray:
    """Grad-CAM maps ``[N, H, W]`` in ``[0, 1]`` (all zero: no positive evidence) of ``wrapper``'s output column
    ``class_idx`` for ``images`` ``[N, 3, H, W]``, read at ``wrapper.net.trunk.<stage>``.

    The wrapper is put in its net's mode first: MONAI restores a wrapper's mode after each map, recursively, so a
    fresh (training-mode) wrapper would leave the net in training mode (dropout, batch norm).
    """
    wrapper.train(wrapper.net.training)
    cam = GradCAM(wrapper, target_layers=f"net.trunk.{stage}", postprocessing=unit_normalise)
    with torch.inference_mode(False), torch.enable_grad():
        maps = cam(images.detach().clone(), class_idx=class_idx)
    return maps[:, 0].detach().cpu().numpy()
