"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for Adaptive Loss Balancing
in Deep Multitask Networks", ICML 2018)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from ldoctor.losses.weighting.base import LossWeighting, require_attached, shared_gradients

if TYPE_CHECKING:
    from ldoctor.models.trunks import Trunk


class GradNorm(LossWeighting):
    """Learnable task weights ``w`` (initialised at 1, renormalised to sum to ``K``) trained to balance the
    gradient norms the tasks put on a shared layer ``W``:

    ``L_grad = sum_i | G_i - mean(G) r_i^alpha |``, ``G_i = || grad_W (w_i L_i) || = w_i || grad_W L_i ||``,
    ``r_i = (L_i / L_i(0)) / mean_j (L_j / L_j(0))``, with ``L_i(0)`` the first loss seen for task ``i``.

    The returned total has the value of ``sum_i w_i L_i`` and the gradient of ``sum_i sg(w_i) L_i + L_grad``
    (``sg`` = detached): the network gets the weighted-sum gradient, ``w`` only the gradient of ``L_grad``, whose
    target ``mean(G) r^alpha`` and norms ``|| grad_W L_i ||`` are constants. The norms come from
    ``torch.autograd.grad`` (one per present task, graph kept). ``w`` is renormalised at the start of each
    ``forward``, which is the paper's renormalisation after the previous update. Mean and ratios are over the tasks
    present in the step; an absent task's weight gets no gradient.

    ``W`` is every trainable parameter of the trunk's last stage (``trunk.stages[-1]``, given by :meth:`attach`):
    the paper's "last shared layer" is one weight matrix, but which parameter-holding module is last in a stage
    depends on registration order (in a ResNet stage a BatchNorm, in a DenseNet ``norm5``), whereas the last stage is
    declared by every trunk and is the shared representation the heads read. While it is frozen (staged fine-tuning)
    the norms are 0 and ``w`` stays where it is. Under DDP each process uses its own gradient norms and DDP averages
    ``w``'s gradient; ``L(0)`` is a buffer, so DDP's buffer broadcast gives every process rank 0's.
    ``w`` belongs in its own optimizer group without weight decay (``MultiTaskModule`` puts it there).

    Args:
        task_names: every task.
        alpha: strength of the pull towards equal training rates (0: equal gradient norms).
    """

    def __init__(self, task_names: Sequence[str], alpha: float = 1.5) -> None:
        super().__init__(task_names)
        self.alpha = alpha
        self.task_weights = nn.Parameter(torch.ones(len(self.task_names)))
        self.register_buffer("initial_losses", torch.full((len(self.task_names),), float("nan")))
        self._shared: list[nn.Parameter] = []

    def attach(self, trunk: Trunk) -> None:
        self._shared = list(getattr(trunk, trunk.stages[-1]).parameters())
        if not self._shared:
            raise ValueError(f"GradNorm: the trunk's last stage {trunk.stages[-1]!r} holds no parameters")

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        self._check(losses)
        require_attached(self, self._shared)
        with torch.no_grad():
            self.task_weights.mul_(len(self.task_names) / self.task_weights.sum())
        index = self._indices(losses)
        stacked = torch.stack(list(losses.values()))
        detached = stacked.detach().float()
        with torch.no_grad():
            first = self.initial_losses[index]
            self.initial_losses[index] = torch.where(first.isnan(), detached, first)
        w = self.task_weights[index]
        params = [p for p in self._shared if p.requires_grad]
        norms = torch.stack([self._grad_norm(loss, params) for loss in losses.values()])
        g = w * norms
        rate = detached / self.initial_losses[index].clamp_min(1e-12)
        target = (g.mean() * (rate / rate.mean().clamp_min(1e-12)) ** self.alpha).detach()
        grad_loss = (g - target).abs().sum()
        return (w.detach() * stacked).sum() + (grad_loss - grad_loss.detach())

    @staticmethod
    def _grad_norm(loss: torch.Tensor, params: list[nn.Parameter]) -> torch.Tensor:
        """``|| grad_W loss ||`` over all of ``params``, detached; 0 without parameters."""
        grads = shared_gradients(loss, params)
        if not grads:
            return loss.new_zeros((), dtype=torch.float32)
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))

    def weights(self) -> dict[str, float]:
        return dict(zip(self.task_names, self.task_weights.detach().tolist()))
