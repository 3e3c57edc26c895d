"""What a task head is: one task's batch in, logits out, with the shared trunk reached through ``encode``.

A head owns everything that belongs to its task: its read-out, any encoder of non-image inputs (a patient's
admission history), side paths and their options. :class:`~ldoctor.models.net.MultiTaskNet` holds the shared
trunk and calls ``head(batch, encode)``, where ``encode`` turns images into pooled trunk features. Adding a head
type is writing a subclass of :class:`TaskHead` and naming it in a config (``model.heads.<task>``); the net and
the LightningModule are not edited.

Example (a head that averages two linear read-outs)::

    class TwinHead(TaskHead):
        def __init__(self, task: TaskSpec, in_features: int, dropout: float = 0.2) -> None:
            super().__init__()
            self.input_key = task.input_key
            self.a, self.b = nn.Linear(in_features, task.num_outputs), nn.Linear(in_features, task.num_outputs)

        def forward(self, batch, encode):
            features = encode(batch[self.input_key])
            return (self.a(features) + self.b(features)) / 2
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ldoctor.tasks import TaskSpec

if TYPE_CHECKING:
    from ldoctor.datamodule import TaskDataModule

#: ``encode(images)``: images ``[B, 3, H, W]`` or views ``[B, V, 3, H, W]`` -> pooled trunk features ``[B, F]``.
Encoder = Callable[[torch.Tensor], torch.Tensor]


class TaskHead(nn.Module):
    """Base of every task head.

    Subclasses take ``(task, in_features, ...)`` in their ``__init__`` (the task's :class:`~ldoctor.tasks.TaskSpec`
    and the trunk's feature width ``F``; their other arguments are the head's options) and implement
    :meth:`forward`. Two hooks have defaults:

    - :meth:`init_from_data`: data-derived initialisation (e.g. a bias at the training log-odds). The module calls
      it once, when ``fit`` starts, for heads it built fresh (never for heads loaded from an ``init_checkpoint``).
    - :meth:`lr_groups`: submodules that train at their own learning-rate factor.
    """

    def forward(self, batch: Mapping[str, Any], encode: Encoder) -> torch.Tensor:
        """Args: one task batch (see :mod:`ldoctor.tasks`); ``encode`` (module docstring).
        Returns: logits ``[B, num_outputs]``."""
        raise NotImplementedError

    def init_from_data(self, data: TaskDataModule) -> None:
        """Initialise from the task's training data (``data.train_labels()``, its loaders); default: nothing."""

    def lr_groups(self) -> list[tuple[str, nn.Module, float]]:
        """``(group name, submodule, learning-rate factor)`` for parts that need their own learning rate; the
        rest of the head trains at the optimizer's rate. Default: none."""
        return []


#: Config type of ``MultiTaskModule.heads`` values: called with the task's spec and the trunk's feature width
#: ``F``; in a config, ``class_path`` names a :class:`TaskHead` subclass and ``init_args`` its other options.
HeadCallable = Callable[[TaskSpec, int], TaskHead]


@torch.no_grad()
def set_prior_bias(linear: nn.Linear, rates: torch.Tensor, kind: str) -> torch.Tensor:
    """Start ``linear.bias`` at the training prior: log-odds ``log(p / (1 - p))`` of each output's positive rate
    (binary, multilabel) or the log of each class's share (multiclass), ``p`` clipped to [0.01, 0.99].

    Args:
        linear: the read-out whose bias is set.
        rates: ``[num_outputs]`` positive rates or class shares in [0, 1].
        kind: the task kind.

    Returns:
        the clipped rates.
    """
    rates = torch.as_tensor(rates, dtype=torch.float).clamp(0.01, 0.99)
    bias = torch.log(rates) if kind == "multiclass" else torch.log(rates / (1 - rates))
    linear.bias.copy_(bias.to(linear.bias))
    return rates
