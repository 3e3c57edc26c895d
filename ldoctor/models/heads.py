"""Classification head: dropout -> linear on pooled trunk features, plus an optional linear path on scalar
per-sample features (e.g. a nodule's radiomics)."""

from __future__ import annotations

import torch
from torch import nn


class RunningStandardiser(nn.Module):
    """Standardise feature columns with their running mean and variance over every training sample seen.

    Unlike batch normalisation, training batches are scaled with the running statistics (updated first), not
    their own, so a batch of one is fine and training and evaluation scale alike. The statistics are buffers:
    they travel in the checkpoint and DDP broadcasts them from rank 0.

    Args:
        num_features: feature columns.
        eps: added to the variance.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(num_features, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(num_features, dtype=torch.float64))

    @torch.no_grad()
    def _update(self, x: torch.Tensor) -> None:
        # Chan et al.'s parallel update of count, mean and sum of squared deviations
        x = x.detach().double()
        n, batch_mean = x.shape[0], x.mean(0)
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean += delta * n / total
        self.m2 += ((x - batch_mean) ** 2).sum(0) + delta**2 * self.count * n / total
        self.count.fill_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``[batch, num_features]``. Returns: the standardised features, same shape and dtype."""
        if self.training and x.shape[0] > 0:
            self._update(x)
        if self.count == 0:
            return x
        std = (self.m2 / self.count.clamp(min=1) + self.eps).sqrt()
        return ((x.double() - self.mean) / std).to(x.dtype)


class ClassificationHead(nn.Module):
    """Task head on pooled features.

    Args:
        in_features: feature width ``F``.
        num_outputs: logits per sample.
        dropout: dropout probability before the linear layer (regularisation in every head).
        num_side_features: width of the optional side input (``TaskSpec.feature_names``): standardised
            (:class:`RunningStandardiser`) and added through a linear map that starts at zero, so the head starts
            as the trunk-only head.
    """

    def __init__(self, in_features: int, num_outputs: int, dropout: float = 0.2, num_side_features: int = 0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_features, num_outputs)
        self.side = None
        if num_side_features:
            self.side_scale = RunningStandardiser(num_side_features)
            self.side = nn.Linear(num_side_features, num_outputs, bias=False)
            nn.init.zeros_(self.side.weight)

    def forward(self, features: torch.Tensor, side: torch.Tensor | None = None) -> torch.Tensor:
        """Args: features ``[batch, F]``; side ``[batch, num_side_features]`` when the head has a side path.
        Returns: logits ``[batch, num_outputs]``."""
        logits = self.linear(self.dropout(features))
        if self.side is None:
            return logits
        if side is None or side.shape != (features.shape[0], self.side.in_features):
            got = None if side is None else tuple(side.shape)
            raise ValueError(f"this head adds {self.side.in_features} side features per sample: the batch needs "
                             f"'features' of shape [{features.shape[0]}, {self.side.in_features}], got {got}")
        return logits + self.side(self.side_scale(side.to(logits.dtype)))
