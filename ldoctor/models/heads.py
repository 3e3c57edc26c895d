"""Classification head: dropout -> linear on pooled trunk features."""

from __future__ import annotations

import torch
from torch import nn


class ClassificationHead(nn.Module):
    """Task head on pooled features.

    Args:
        in_features: feature width ``F``.
        num_outputs: logits per sample.
        dropout: dropout probability before the linear layer (regularisation in every head).
    """

    def __init__(self, in_features: int, num_outputs: int, dropout: float = 0.2) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_features, num_outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Args: features ``[batch, F]``. Returns: logits ``[batch, num_outputs]``."""
        return self.linear(self.dropout(features))
