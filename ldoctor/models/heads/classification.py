"""Classification head: dropout -> linear on pooled trunk features, plus an optional linear path on scalar
per-sample features (e.g. a nodule's radiomics)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from ldoctor.labels import label_rates
from ldoctor.models.heads.base import Encoder, TaskHead, set_prior_bias
from ldoctor.tasks import TaskSpec

if TYPE_CHECKING:
    from ldoctor.datamodule import TaskDataModule


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


class ClassificationHead(TaskHead):
    """Read-out of pooled trunk features, for every image task by default.

    ``logits = linear(dropout(encode(batch[task.input_key])))``; a task with ``feature_names`` (e.g. the tumor
    task's radiomics) also adds its batches' ``"features"`` ``[B, K]``, standardised
    (:class:`RunningStandardiser`), through a linear map that starts at zero, so the head starts as the
    trunk-only head.

    Args:
        task: the task (binary, multiclass or multilabel); its ``input_key`` names the images in a batch.
        in_features: trunk feature width ``F``.
        dropout: dropout probability before the linear layer (regularisation in every head).
        side_lr_factor: learning rate of the side path = optimizer LR times this. It starts at zero and needs
            weights of order 1 on standardised features, far from where a trunk's LR moves in a short run.
        prior_bias: start the bias at the training prior (:func:`~ldoctor.models.heads.base.set_prior_bias`), so
            the untrained head predicts the frequent outputs.
    """

    def __init__(self, task: TaskSpec, in_features: int, dropout: float = 0.2, side_lr_factor: float = 10.0,
                 prior_bias: bool = False) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.input_key, self.kind, self.task_name = task.input_key, task.kind, task.name
        self.side_lr_factor, self.prior_bias = side_lr_factor, prior_bias
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_features, task.num_outputs)
        self.side = None
        if task.feature_names:
            self.side_scale = RunningStandardiser(len(task.feature_names))
            self.side = nn.Linear(len(task.feature_names), task.num_outputs, bias=False)
            nn.init.zeros_(self.side.weight)

    def forward(self, batch: Mapping[str, Any], encode: Encoder) -> torch.Tensor:
        """Args: batch with images under ``input_key`` (and ``"features"`` ``[B, K]`` with a side path).
        Returns: logits ``[B, num_outputs]``."""
        features = encode(batch[self.input_key])
        logits = self.linear(self.dropout(features))
        if self.side is None:
            return logits
        side = batch.get("features")
        if side is None or side.shape != (features.shape[0], self.side.in_features):
            got = None if side is None else tuple(side.shape)
            raise ValueError(f"the {self.task_name!r} head adds {self.side.in_features} side features per sample: the "
                             f"batch needs 'features' of shape [{features.shape[0]}, {self.side.in_features}], got {got}")
        return logits + self.side(self.side_scale(side.to(logits.dtype)))

    def init_from_data(self, data: TaskDataModule) -> None:
        """With ``prior_bias``, the bias at the prior of ``data.train_labels()``."""
        if self.prior_bias:
            rates = set_prior_bias(self.linear, label_rates(data.train_labels(), self.kind, self.linear.out_features),
                                   self.kind)
            rank_zero_info(f"{self.task_name}: head bias at the training prior (mean rate {float(rates.mean()):.3f})")

    def lr_groups(self) -> list[tuple[str, nn.Module, float]]:
        return [] if self.side is None else [("side_features", self.side, self.side_lr_factor)]
