"""MultiTaskNet: one shared trunk and one injected head per task (plain torch, no Lightning, no task names)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ldoctor.models.heads.base import TaskHead


class MultiTaskNet(nn.Module):
    """Shared trunk + per-task heads.

    Every head is called as ``head(batch, encode)`` with :meth:`image_features` as ``encode``: images
    ``[B, 3, H, W]`` go through the trunk; multi-view inputs ``[B, V, 3, H, W]`` (2.5D CT) go through it view by
    view and the ``V`` view features are mean-pooled. What a head does with its batch (images, codes, side
    features) is the head's business (:mod:`ldoctor.models.heads`).

    Args:
        trunk: the shared feature extractor (:mod:`ldoctor.models.trunks`): ``[N, 3, H, W]`` -> ``[N, F]``.
        heads: task name -> head.
        channels_last: run the trunk in channels-last memory format (faster convolutions on GPUs).
    """

    def __init__(self, trunk: nn.Module, heads: Mapping[str, TaskHead], channels_last: bool = False) -> None:
        super().__init__()
        if not heads:
            raise ValueError("MultiTaskNet needs at least one head")
        self.trunk = trunk
        self.heads = nn.ModuleDict(dict(heads))
        self.channels_last = channels_last

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Args: images ``[B, 3, H, W]`` or ``[B, V, 3, H, W]``. Returns: ``[B, F]`` (views mean-pooled)."""
        if images.dim() not in (4, 5):
            raise ValueError(f"image input must be [B, 3, H, W] or [B, V, 3, H, W], got shape {tuple(images.shape)}")
        flat = images.flatten(0, 1) if images.dim() == 5 else images
        if self.channels_last:
            flat = flat.contiguous(memory_format=torch.channels_last)
        features = self.trunk(flat)
        return features.view(*images.shape[:2], -1).mean(dim=1) if images.dim() == 5 else features

    def forward_task(self, name: str, batch: Mapping[str, Any]) -> torch.Tensor:
        """Logits ``[B, num_outputs]`` of task ``name`` for its batch."""
        return self.heads[name](batch, self.image_features)

    def forward(self, batches: Mapping[str, Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Args: ``{task: task batch}``. Returns: ``{task: logits}``."""
        return {name: self.forward_task(name, batch) for name, batch in batches.items()}
