"""MedMNIST v2 ``.npz`` files (any 2D set; PneumoniaMNIST ships): validated arrays and the task they define."""

from __future__ import annotations

from ldoctor.datasets.medmnist.records import PNEUMONIAMNIST_DEMO, infer_task, load_split

__all__ = ["PNEUMONIAMNIST_DEMO", "infer_task", "load_split"]
