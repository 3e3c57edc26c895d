"""Dynamic Weight Average (Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from ldoctor.losses.weighting.base import LossWeighting


class DWA(LossWeighting):
    """``w_k(t) = K exp(r_k(t-1) / T) / sum_i exp(r_i(t-1) / T)`` with ``r_k(t-1) = L_k(t-1) / L_k(t-2)``, where
    ``L_k(t)`` is task ``k``'s mean loss over the steps of epoch ``t`` it took part in; ``total = sum_k w_k L_k``
    over the tasks present in the step. ``w = 1`` in the first two epochs; a task without a loss in either of the
    last two epochs gets ``r = 1``.

    The epoch means come from the losses ``forward`` sees (detached) and are closed by :meth:`epoch_end`. Under DDP
    each process sums its own losses and ``epoch_end`` all-reduces the sums and counts, so every process takes the
    same weights (DDP's buffer broadcast then changes nothing). The last two epoch means and the weights are
    persistent buffers, so they survive a checkpoint resume (``ModelCheckpoint`` writes after ``on_train_epoch_end``
    when validation runs once per epoch); the sums of an unfinished epoch do not: a checkpoint written before
    ``epoch_end`` (mid-epoch, or at validation end with ``check_val_every_n_epoch > 1``) resumes without them, and
    that epoch's mean then covers only the steps after the resume, or is skipped.

    Args:
        task_names: every task.
        temperature: ``T``; larger values give more even weights.
    """

    def __init__(self, task_names: Sequence[str], temperature: float = 2.0) -> None:
        super().__init__(task_names)
        if temperature <= 0:
            raise ValueError(f"DWA.temperature must be > 0, got {temperature}")
        self.temperature = temperature
        k = len(self.task_names)
        self.register_buffer("epoch_losses", torch.full((2, k), float("nan")))  # [L(t-2), L(t-1)], NaN = unknown
        self.register_buffer("task_weights", torch.ones(k))
        self._sums: torch.Tensor | None = None  # [2, K]: loss sums and step counts of this epoch, this process

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        self._check(losses)
        stacked = torch.stack(list(losses.values()))
        index = self._indices(losses)
        if self._sums is None:
            self._sums = stacked.new_zeros((2, len(self.task_names)), dtype=torch.float32)
        detached = stacked.detach().float()
        self._sums.index_add_(1, index, torch.stack([detached, torch.ones_like(detached)]))
        return (self.task_weights[index] * stacked).sum()

    def epoch_end(self) -> None:
        sums = self._sums if self._sums is not None else self.task_weights.new_zeros((2, len(self.task_names)))
        sums = sums.to(self.task_weights.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)
        means = torch.where(sums[1] > 0, sums[0] / sums[1].clamp_min(1), float("nan"))
        self.epoch_losses.copy_(torch.stack([self.epoch_losses[1], means]))
        ratio = torch.nan_to_num(self.epoch_losses[1] / self.epoch_losses[0], nan=1.0, posinf=1.0)
        self.task_weights.copy_(len(self.task_names) * torch.softmax(ratio / self.temperature, dim=0))
        self._sums = None

    def weights(self) -> dict[str, float]:
        return dict(zip(self.task_names, self.task_weights.tolist()))
