"""``CaseDataModule``: case folders -> the model's inputs, one predict loader per task, read as in training.

For ``train.py predict`` (with :class:`~ldoctor.report.writer.ReportWriter` writing the reports) and for
``python -m ldoctor.report``. The tasks come from the checkpoint (so ``data.tasks`` -> ``model.tasks`` links as for
training), and each task's input is read with the checkpoint's ``ldoctor_inference`` settings
(:mod:`ldoctor.report.model_info`): ``ct_nodule`` (the nodule cubes and their 2.5D views), ``radiograph``
(one image) or ``history`` (the admission codes). Each loader yields, per case that has the task's input, one batch
holding all of that case's samples (a case's nodules together) with ``"id"`` = the case's pseudonym and
``"case"`` = its index. An input that cannot be read is recorded in the case's ``problems`` and left out; the
other tasks of the case still report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ldoctor.datamodule import LDoctorDataModule, TaskDataModule
from ldoctor.errors import BadInput
from ldoctor.privacy import pseudonym
from ldoctor.report.case import Case, read_case
from ldoctor.report.model_info import ModelInfo
from ldoctor.tasks import TaskSpec
from ldoctor.transforms.failures import named_error

INPUTS = ("ct_nodule", "radiograph", "history")
#: What each input should be, for messages.
EXPECTED = {"ct": "a readable CT (DICOM series or NIfTI) holding the candidates",
            "radiograph": "a readable radiograph (PNG, or single-frame grey DICOM CR/DX)",
            "history": "admission codes in the model's vocabulary"}


class CaseDataModule(LDoctorDataModule):
    """Case folders for reports.

    Args:
        cases: case folders (layout: :mod:`ldoctor.report.case`).
        checkpoint: the trained model's ``.ckpt`` (its tasks and input settings; the same file as ``--ckpt_path``).
    """

    def __init__(self, cases: list[str], checkpoint: str) -> None:
        super().__init__()
        if not cases:
            raise ValueError("CaseDataModule needs at least one case folder")
        self.case_dirs = [Path(c) for c in cases]
        self.info = ModelInfo.read(checkpoint)
        self.cases: list[Case] = []
        self._items: dict[str, list[dict[str, Any]]] = {}

    @property
    def tasks(self) -> list[TaskSpec]:
        return self.info.tasks

    def member(self, task: str) -> TaskDataModule:
        raise KeyError(f"CaseDataModule serves prediction only; it has no TaskDataModule for {task!r}")

    def case_name(self, index: int) -> str:
        """The case's pseudonym (:mod:`ldoctor.privacy`): what reports and logs call it."""
        return pseudonym(str(self.case_dirs[index].resolve()), "case")

    def setup(self, stage: str) -> None:
        if stage != "predict":
            raise ValueError(f"CaseDataModule serves predict only, not {stage!r}")
        if self.cases:
            return
        self.cases = [read_case(folder) for folder in self.case_dirs]
        for spec in self.tasks:
            kind = self.info.settings.get(spec.name, {}).get("input")
            self._items[spec.name] = []
            for index, case in enumerate(self.cases):
                item = self._item(spec, kind, case)
                if item is not None:
                    self._items[spec.name].append({**item, "id": self.case_name(index), "case": index})

    def _item(self, spec: TaskSpec, kind: str | None, case: Case) -> dict[str, Any] | None:
        """The task's one-case batch, or ``None`` (no such input, or unreadable: recorded in ``case.problems``)."""
        settings = self.info.settings.get(spec.name, {})
        wanted = {"ct_nodule": "ct", "radiograph": "radiograph", "history": "history"}.get(kind or "")
        if wanted is None or wanted not in case.inputs:
            return None
        source = {"ct": case.ct, "radiograph": case.radiograph, "history": case.folder}[wanted]
        try:
            if kind == "ct_nodule":
                return _ct_item(case, settings)
            if kind == "radiograph":
                return _radiograph_item(case, settings, spec)
            return _history_item(case, spec)
        except (BadInput, ValueError, OSError, RuntimeError) as err:  # MONAI wraps a reader's error: unwrap it
            case.problems.append((wanted, str(named_error(err, str(source), EXPECTED[wanted]))))
            return None

    def predict_dataloader(self) -> list[DataLoader]:
        """One loader per task, in the model's task order (``dataloader_idx`` -> task); a case per batch."""
        return [DataLoader(self._items[t.name], batch_size=1, collate_fn=_single) for t in self.tasks]


def _single(items: list[dict[str, Any]]) -> dict[str, Any]:
    return items[0]


def _ct_item(case: Case, settings: dict[str, Any]) -> dict[str, Any]:
    from ldoctor.transforms import ct  # noqa: PLC0415

    radiomics = settings.get("radiomics", "none") == "head"  # the head reads the cube's radiomic features
    preprocess = ct.nodule_preprocess(settings["patch_size_mm"], settings["spacing_mm"],
                                      tuple(settings["hu_window"]), radiomics, settings.get("default_rescale"))
    views = ct.nodule_postprocess(None, settings["views"], settings["view_channels"])
    cubes, images, features = [], [], []
    for nodule in case.nodules:
        sample = preprocess({"volume": str(case.ct), "center_mm": nodule.center_mm, "label": [float("nan")],
                             "id": "n"})
        cubes.append(sample["image"])
        images.append(views({"image": sample["image"], "label": torch.tensor([float("nan")]), "id": "n"})["image"])
        if radiomics:
            features.append(torch.as_tensor(sample["features"], dtype=torch.float32))
    batch = {"image": torch.stack(images), "cube": torch.stack(cubes), "label": torch.full((len(cubes), 1), torch.nan)}
    if radiomics:
        batch["features"] = torch.stack(features)
    return batch


def _radiograph_item(case: Case, settings: dict[str, Any], spec: TaskSpec) -> dict[str, Any]:
    from ldoctor.transforms.radiograph import radiograph_postprocess, radiograph_preprocess  # noqa: PLC0415

    size = int(settings["image_size"])
    pre = radiograph_preprocess(size)({"image": str(case.radiograph), "label": [0.0], "id": "r"})
    display = torch.as_tensor(pre["image"]).float()[0] / 255.0
    image = radiograph_postprocess(None, size)(pre)["image"]
    return {"image": image[None], "display": display, "label": torch.full((1, spec.num_outputs), torch.nan)}


def _history_item(case: Case, spec: TaskSpec) -> dict[str, Any]:
    from ldoctor.report.drug import encode_history  # noqa: PLC0415

    batch = encode_history(case.history, list(spec.code_vocabulary or []), list(spec.class_names))
    batch["label"] = torch.full((1, spec.num_outputs), torch.nan)
    batch.pop("id", None)
    return batch
