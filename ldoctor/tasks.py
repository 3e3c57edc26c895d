"""Task specifications: what a task predicts and where its input sits in a batch.

A task is data, not a code path. Every task batch is a dict with

- the input under ``TaskSpec.input_key``, read by the task's head (:mod:`ldoctor.models.heads`): e.g.
  ``"image"`` (``[batch, 3, H, W]`` for radiographs, ``[batch, views, 3, H, W]`` for 2.5D CT views; the default
  head of image tasks) or ``"codes"`` (``[batch, admissions, codes]`` int64, 0 = padding, ``i >= 1`` =
  ``code_vocabulary[i - 1]``; the default head of code tasks);
- ``"label"``: float tensor, ``[batch, num_outputs]`` for binary (``num_outputs == 1``) and multilabel
  tasks, ``[batch]`` class indices for multiclass tasks; NaN means unknown and is masked in losses and metrics;
- ``"id"``: one string per sample;
- optionally ``"features"``: float ``[batch, len(feature_names)]`` per-sample scalar measurements.

The dataset families define their tasks (``ldoctor.datasets.lidc.tumor_task``, ``ldoctor.datasets.nih.disease_task``,
``ldoctor.datasets.mimic.drug_task``); any other task of these kinds plugs in the same way.

Example:
    >>> spec = TaskSpec(name="tumor", kind="binary", num_outputs=1, class_names=["malignant"])
    >>> spec.kind
    'binary'
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

TASK_KINDS = ("binary", "multiclass", "multilabel")

@dataclass
class TaskSpec:
    """One prediction task served by the shared trunk.

    Args:
        name: task name, used in batch dicts and logged keys (``val/{name}/auroc``).
        kind: ``"binary"`` (one logit), ``"multiclass"`` (softmax over ``num_outputs``) or
            ``"multilabel"`` (``num_outputs`` independent logits).
        num_outputs: number of logits; 1 for binary.
        class_names: one name per output (binary: the positive class); ``None`` gives ``class_0``, ...
        input_key: batch key holding the input (an identifier; the task's head reads it).
        code_vocabulary: for code inputs, the code strings in index order (index 0 is padding and not listed).
            Travels in the checkpoint with the spec.
        feature_names: names of per-sample scalar features the task's head reads from the batches' ``"features"``
            (float ``[batch, len(feature_names)]``, e.g. the tumor task's radiomics,
            :data:`ldoctor.transforms.radiomics.RADIOMIC_FEATURES`). Empty: the head reads none.

    Raises:
        ValueError: naming the offending field.
    """

    name: str
    kind: str
    num_outputs: int
    class_names: list[str] | None = None
    input_key: str = "image"
    code_vocabulary: list[str] | None = field(default=None, repr=False)
    feature_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"TaskSpec.name must be a non-empty string without '/', got {self.name!r}")
        if self.kind not in TASK_KINDS:
            raise ValueError(f"TaskSpec.kind of task {self.name!r} must be one of {TASK_KINDS}, got {self.kind!r}")
        if not isinstance(self.num_outputs, int) or self.num_outputs < 1:
            raise ValueError(f"TaskSpec.num_outputs of task {self.name!r} must be an int >= 1, got {self.num_outputs}")
        if self.kind == "binary" and self.num_outputs != 1:
            raise ValueError(f"TaskSpec.num_outputs of binary task {self.name!r} must be 1, got {self.num_outputs}")
        if self.kind == "multiclass" and self.num_outputs < 2:
            raise ValueError(
                f"TaskSpec.num_outputs of multiclass task {self.name!r} must be >= 2, got {self.num_outputs}"
            )
        if self.class_names is None:
            self.class_names = [f"class_{i}" for i in range(self.num_outputs)]
        self.class_names = list(self.class_names)
        if len(self.class_names) != self.num_outputs:
            raise ValueError(
                f"TaskSpec.class_names of task {self.name!r} has {len(self.class_names)} names "
                f"for num_outputs={self.num_outputs}"
            )
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"TaskSpec.class_names of task {self.name!r} has duplicates")
        if not isinstance(self.input_key, str) or not self.input_key.isidentifier():
            raise ValueError(f"TaskSpec.input_key of task {self.name!r} must be an identifier, got {self.input_key!r}")
        if self.code_vocabulary is not None:
            self.code_vocabulary = list(self.code_vocabulary)
        self.feature_names = list(self.feature_names or [])
        if len(set(self.feature_names)) != len(self.feature_names):
            raise ValueError(f"TaskSpec.feature_names of task {self.name!r} has duplicates")


def validate_tasks(tasks: Iterable[TaskSpec]) -> dict[str, TaskSpec]:
    """Check a task list and index it by name.

    Raises:
        ValueError: empty list or duplicate ``TaskSpec.name``.
    """
    by_name: dict[str, TaskSpec] = {}
    for spec in tasks:
        if not isinstance(spec, TaskSpec):
            raise ValueError(f"tasks must hold TaskSpec objects, got {type(spec).__name__}")
        if spec.name in by_name:
            raise ValueError(f"TaskSpec.name {spec.name!r} appears twice in the task list")
        by_name[spec.name] = spec
    if not by_name:
        raise ValueError("the task list is empty")
    return by_name
