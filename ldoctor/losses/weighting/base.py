"""The interface every loss-weighting strategy shares."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from ldoctor.models.trunks import Trunk


class LossWeighting(nn.Module):
    """Combine per-task losses into one scalar; never calls ``backward()``.

    Besides ``forward`` and ``weights``, a strategy may use two declared hooks, both no-ops here, which
    :class:`~ldoctor.module.MultiTaskModule` calls: :meth:`attach` once with the shared trunk (gradient-based
    strategies), :meth:`epoch_end` after every training epoch (strategies that follow the epoch losses).

    Args:
        task_names: every task the model serves, in a fixed order.
    """

    def __init__(self, task_names: Sequence[str]) -> None:
        super().__init__()
        if not task_names:
            raise ValueError("LossWeighting needs at least one task name")
        self.task_names = list(task_names)

    def _check(self, losses: dict[str, torch.Tensor]) -> None:
        unknown = set(losses) - set(self.task_names)
        if unknown:
            raise KeyError(f"losses for unknown tasks {sorted(unknown)}; known: {self.task_names}")
        if not losses:
            raise ValueError("no task has a labelled sample in this step: nothing to weight")

    def _indices(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Positions in ``task_names`` of the tasks in ``losses``, in their order: ``[present tasks]``."""
        device = next(iter(losses.values())).device
        return torch.tensor([self.task_names.index(t) for t in losses], device=device)

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Args: ``{task: scalar loss}`` for the tasks present in this step. Returns: the total."""
        raise NotImplementedError

    def weights(self) -> dict[str, float]:
        """Current effective weight of each task's loss."""
        raise NotImplementedError

    def attach(self, trunk: Trunk) -> None:
        """Hook, called once by the model with its shared trunk (``MultiTaskModule.__init__``). Default: nothing.

        A strategy that needs gradients on shared parameters keeps references to them here, in a plain list: the
        trunk stays the model's, out of this module's ``parameters()`` and ``state_dict``.
        """

    def epoch_end(self) -> None:
        """Hook, called at the end of every training epoch on every process (``on_train_epoch_end``), so it may
        use collective ``torch.distributed`` calls. Default: nothing."""


def shared_gradients(loss: torch.Tensor, params: Sequence[nn.Parameter]) -> list[torch.Tensor]:
    """Gradient of one task's ``loss`` on ``params`` (zeros where the loss does not reach a parameter), keeping the
    graph for the real backward pass. Detached: nothing differentiates through it.

    Returns:
        One tensor per parameter, shaped like it.
    """
    if not params or not loss.requires_grad:
        return [torch.zeros_like(p) for p in params]
    grads = torch.autograd.grad(loss, list(params), retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def require_attached(strategy: LossWeighting, params: Sequence[nn.Parameter]) -> None:
    """Raise unless :meth:`LossWeighting.attach` gave ``strategy`` its shared parameters."""
    if not params:
        raise RuntimeError(f"{type(strategy).__name__} needs the shared parameters: call attach(trunk) before the "
                           "first step (MultiTaskModule does it)")


#: Config type of ``MultiTaskModule.weighting``: a weighting class (or ``class_path`` + ``init_args``)
#: that the module calls with its task names.
WeightingCallable = Callable[[Sequence[str]], LossWeighting]
