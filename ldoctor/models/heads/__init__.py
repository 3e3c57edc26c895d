"""Task heads, one file per head type, and the default head of a task.

- :class:`~ldoctor.models.heads.base.TaskHead`: the base every head derives from (``forward(batch, encode)`` and two
  optional hooks);
- :class:`~ldoctor.models.heads.classification.ClassificationHead`: pooled trunk features -> logits (image tasks);
- :class:`~ldoctor.models.heads.drug.DrugHead`: admission history (+ image) -> medication classes (code tasks).

``MultiTaskModule(heads={task: factory})`` takes a head per task; tasks it does not name get
:func:`default_head`: the head registered in :data:`DEFAULT_HEADS` for the task's ``input_key``.
"""

from __future__ import annotations

from collections.abc import Mapping

from ldoctor.models.heads.base import Encoder, HeadCallable, TaskHead, set_prior_bias
from ldoctor.models.heads.classification import ClassificationHead, RunningStandardiser
from ldoctor.models.heads.drug import DrugHead, DrugReadout
from ldoctor.tasks import TaskSpec

#: Head built for a task that ``MultiTaskModule.heads`` does not name, by the task's ``input_key``.
DEFAULT_HEADS: dict[str, HeadCallable] = {"image": ClassificationHead, "codes": DrugHead}


def default_head(task: TaskSpec) -> HeadCallable:
    """The registered default head of ``task`` (by ``input_key``).

    Raises:
        ValueError: no default for the task's input; name its head in ``model.heads``.
    """
    if task.input_key not in DEFAULT_HEADS:
        raise ValueError(
            f"task {task.name!r} reads {task.input_key!r}, which has no default head (defaults: "
            f"{sorted(DEFAULT_HEADS)}); name one in model.heads.{task.name} (a TaskHead subclass)"
        )
    return DEFAULT_HEADS[task.input_key]


__all__ = [
    "DEFAULT_HEADS",
    "ClassificationHead",
    "DrugHead",
    "DrugReadout",
    "Encoder",
    "HeadCallable",
    "RunningStandardiser",
    "TaskHead",
    "build_heads",
    "default_head",
    "set_prior_bias",
]


def build_heads(tasks: Mapping[str, TaskSpec], factories: Mapping[str, HeadCallable], in_features: int
                ) -> dict[str, TaskHead]:
    """One head per task, in task order: ``factories[name]`` or :func:`default_head`, called with the spec and the
    trunk's feature width.

    Raises:
        TypeError: a factory that does not build a :class:`TaskHead`.
    """
    heads = {}
    for name, spec in tasks.items():
        factory = factories[name] if name in factories else default_head(spec)
        head = factory(spec, in_features)
        if not isinstance(head, TaskHead):
            raise TypeError(f"the head of task {name!r} is a {type(head).__name__}; heads derive from "
                            "ldoctor.models.heads.TaskHead (forward(batch, encode))")
        heads[name] = head
    return heads
