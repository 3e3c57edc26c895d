"""PCGrad, projecting conflicting gradients (Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from ldoctor.losses.weighting.base import LossWeighting, require_attached, shared_gradients

if TYPE_CHECKING:
    from ldoctor.models.trunks import Trunk


class PCGrad(LossWeighting):
    """Gradient surgery on the shared parameters: for each task ``i`` and each other task ``j`` in random order, if
    ``g_i . g_j < 0`` then ``g_i <- g_i - (g_i . g_j) / ||g_j||^2 g_j`` (``g_i`` as projected so far, ``g_j`` as
    computed); the shared gradient is the sum of the projected ``g_i``. Every other parameter (heads) gets the plain
    sum of the losses' gradients, as with :class:`~ldoctor.losses.weighting.equal.EqualWeighting`.

    Without ``backward()``: the per-task gradients on the trainable trunk parameters (all of them, from
    :meth:`attach`) come from ``torch.autograd.grad`` (graph kept); the projections are done on their Gram matrix
    (:meth:`surgery`). The returned surrogate ``sum_i L_i + c - sg(c)``, ``c = sum_p p . sg(g_pc_p - g_sum_p)``
    (``sg`` = detached), has the value of the plain sum and, on each shared parameter ``p``, the gradient
    ``g_pc_p``. Cost: one extra backward pass through the trunk per present task, and one copy of the trunk's
    gradient per task. A step with one task, or with the trunk frozen, is the plain sum. Under DDP each process does
    the surgery on its own gradients and DDP averages the results; every process draws the same orders.

    Args:
        task_names: every task.
        seed: seed of the generator that draws the projection orders (reproducible runs and tests).
    """

    def __init__(self, task_names: Sequence[str], seed: int = 0) -> None:
        super().__init__(task_names)
        self.generator = torch.Generator().manual_seed(seed)
        self._shared: list[nn.Parameter] = []

    def attach(self, trunk: Trunk) -> None:
        self._shared = list(trunk.parameters())
        if not self._shared:
            raise ValueError("PCGrad: the trunk holds no parameters")

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        self._check(losses)
        require_attached(self, self._shared)
        total = torch.stack(list(losses.values())).sum()
        params = [p for p in self._shared if p.requires_grad]
        if len(losses) < 2 or not params:
            return total
        # grads[task][parameter]: flat, float32
        grads = [[g.reshape(-1).float() for g in shared_gradients(loss, params)] for loss in losses.values()]
        gram = torch.stack([torch.stack([sum(torch.dot(a, b) for a, b in zip(g_i, g_j)) for g_j in grads])
                            for g_i in grads])
        # g_pc - g_sum = sum_k (a_k - 1) g_k with a_k = sum_i C[i, k]
        excess = (self.surgery(gram).sum(dim=0) - 1).unbind()
        correction = sum(torch.dot(p.reshape(-1).float(), sum(e * g[q] for e, g in zip(excess, grads)))
                         for q, p in enumerate(params))
        return total + (correction - correction.detach())

    def surgery(self, gram: torch.Tensor) -> torch.Tensor:
        """The projections done on the Gram matrix: every projected ``g_i`` is a combination of the ``g_k``, so the
        surgery needs only their dot products, not another pass over the gradients.

        Args:
            gram: ``[tasks, tasks]``, ``g_i . g_j``.

        Returns:
            ``C`` ``[tasks, tasks]`` with projected ``g_i = sum_k C[i, k] g_k``.
        """
        tasks = len(gram)
        coefficients = torch.eye(tasks, dtype=gram.dtype, device=gram.device)
        squared = gram.diagonal().clamp_min(torch.finfo(gram.dtype).tiny)
        for i in range(tasks):
            others = [j for j in range(tasks) if j != i]
            for k in torch.randperm(len(others), generator=self.generator).tolist():
                j = others[k]
                dot = coefficients[i] @ gram[:, j]  # (projected g_i) . g_j
                coefficients[i, j] -= dot.clamp(max=0) / squared[j]  # no change unless they conflict
        return coefficients

    def weights(self) -> dict[str, float]:
        return dict.fromkeys(self.task_names, 1.0)
