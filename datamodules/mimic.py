"""MIMIC-III medication recommendation (``drug`` task): admissions -> ATC level-3 drug classes.

Input: the raw MIMIC-III tables (``ldoctor.data.mimic_records``; the shipped MIMIC-III demo by default) or a
``records.json`` converted from SafeDrug / GAMENet processed records (``ldoctor.data.safedrug_import``).
Each sample is one admission: the diagnosis and procedure codes of this and the patient's earlier admissions
(``"codes"``), and the drug classes prescribed in this admission (``"label"``).

Batch (``collate_drug_batch``)::

    "codes":     int64 [B, admissions, codes], 0 = padding, i >= 1 = code_vocabulary[i - 1]; admissions
                 oldest first, left-aligned, the current admission is the last non-empty row
    "label":     float [B, num_drugs], 1 = prescribed
    "id":        list of "<subject_id>/<hadm_id>"
    "image":     float [B, 3, S, S] ImageNet-normalised, zeros where has_image is False (with ``images``)
    "has_image": bool [B]                                                               (with ``images``)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import Dataset

import ldoctor
from datamodules.base import TaskDataModule
from ldoctor.data.mimic_records import (
    UNKNOWN_CODE,
    MimicStats,
    build_vocabularies,
    filter_admissions,
    group_by_patient,
    patient_samples,
    read_csv_columns,
    read_mimic_admissions,
    split_patients,
)
from ldoctor.data.safedrug_import import load_records_json
from ldoctor.tasks import TaskSpec, drug_task

log = logging.getLogger(__name__)

#: The shipped MIMIC-III Clinical Database Demo v1.4 tables and the NDC -> ATC-3 map (see its README.md).
DEMO_DIR = Path(ldoctor.__file__).parent / "demo_data" / "mimic3-demo"
DEMO_NDC_MAP = DEMO_DIR / "ndc_to_atc3.csv"
SPLITS = ("train", "val", "test")


class DrugDataset(Dataset):
    """Admission samples encoded as index tensors.

    Args:
        samples: from ``patient_samples`` (``id``, ``hadm_id``, ``history``, ``drugs``).
        code_vocabulary: code strings in index order (index ``i`` -> ``i + 1`` in the tensor); codes not in it
            map to ``UNKNOWN_CODE``.
        drug_vocabulary: label columns.
        images: optional ``{hadm_id: image path}``; admissions without one get zeros and ``has_image=False``.
        image_transform: ``{"image": path}`` -> ``{"image": float [3, S, S]}``; required with ``images``.
        image_size: side ``S`` of the zero image of admissions without an image.
    """

    def __init__(
        self,
        samples: Sequence[dict],
        code_vocabulary: Sequence[str],
        drug_vocabulary: Sequence[str],
        images: dict[str, str] | None = None,
        image_transform: Callable[[dict], dict] | None = None,
        image_size: int = 224,
    ) -> None:
        code_index = {c: i + 1 for i, c in enumerate(code_vocabulary)}
        unknown = code_index[UNKNOWN_CODE]
        drug_index = {d: i for i, d in enumerate(drug_vocabulary)}
        self.ids = [s["id"] for s in samples]
        self.hadm_ids = [s["hadm_id"] for s in samples]
        self.codes = [self._encode(s["history"], code_index, unknown) for s in samples]
        self.labels = torch.zeros(len(samples), len(drug_index))
        for row, sample in enumerate(samples):
            for drug in sample["drugs"]:
                if drug in drug_index:
                    self.labels[row, drug_index[drug]] = 1.0
        self.unknown_codes = sum(int((c == unknown).sum()) for c in self.codes)
        self.images, self.image_transform, self.image_size = images, image_transform, image_size

    @staticmethod
    def _encode(history: list[list[str]], code_index: dict[str, int], unknown: int) -> torch.Tensor:
        width = max(len(a) for a in history)
        codes = torch.zeros(len(history), width, dtype=torch.long)
        for a, admission in enumerate(history):
            codes[a, : len(admission)] = torch.tensor([code_index.get(c, unknown) for c in admission])
        return codes

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = {"codes": self.codes[index], "label": self.labels[index], "id": self.ids[index]}
        if self.images is not None:
            path = self.images.get(self.hadm_ids[index])
            if path is None:
                sample["image"] = torch.zeros(3, self.image_size, self.image_size)
            else:
                sample["image"] = self.image_transform({"image": path})["image"]
            sample["has_image"] = path is not None
        return sample


def collate_drug_batch(samples: list[dict]) -> dict[str, Any]:
    """Pad ``codes`` to the batch's most admissions and most codes per admission (0 = padding).

    Returns:
        the batch described in the module docstring.
    """
    admissions = max(s["codes"].shape[0] for s in samples)
    width = max(s["codes"].shape[1] for s in samples)
    codes = torch.zeros(len(samples), admissions, width, dtype=torch.long)
    for i, s in enumerate(samples):
        codes[i, : s["codes"].shape[0], : s["codes"].shape[1]] = s["codes"]
    batch: dict[str, Any] = {
        "codes": codes,
        "label": torch.stack([s["label"] for s in samples]),
        "id": [s["id"] for s in samples],
    }
    if "image" in samples[0]:
        batch["image"] = torch.stack([torch.as_tensor(s["image"]) for s in samples])
        batch["has_image"] = torch.tensor([bool(s["has_image"]) for s in samples])
    return batch


def read_image_links(path: str | Path, skip_bad: bool = False) -> dict[str, str]:
    """Read a ``hadm_id,image_path`` CSV; relative image paths are relative to the CSV's folder.

    Raises:
        ValueError: missing columns, an empty ``hadm_id`` or path, or one admission linked to two images.
        FileNotFoundError: an image file that does not exist (file and line named), unless ``skip_bad``.
    """
    path = Path(path)
    frame = read_csv_columns(path, ("hadm_id", "image_path"))
    links: dict[str, str] = {}
    skipped = 0
    for hadm, image, line in frame.itertuples(index=False):
        image_path = Path(image) if Path(image).is_absolute() else path.parent / image
        if not hadm or not image:
            raise ValueError(f"{path} line {line}: expected a hadm_id and an image_path, got {hadm!r}, {image!r}")
        if hadm in links and links[hadm] != str(image_path):
            raise ValueError(f"{path} line {line}: hadm_id {hadm} is linked to a second image ({image})")
        if not image_path.is_file():
            if not skip_bad:
                raise FileNotFoundError(f"{image_path}: listed in {path} line {line}, not found; check data.images")
            skipped += 1
            continue
        links[hadm] = str(image_path)
    if skipped:
        rank_zero_warn(f"skip_bad: {skipped} image links in {path} name missing files and were skipped")
    return links


class MIMICDrugDataModule(TaskDataModule):
    """The ``drug`` task on MIMIC-III: patient-level split, vocabularies from the training patients.

    The cohort, split and vocabularies are built on first access of ``task`` (the CLI reads it when it links
    ``data.tasks`` to ``model.tasks``) or in ``setup``; bad input fails then, before training. The task spec
    carries both vocabularies, so they are saved in the checkpoint with the model's hyperparameters; the
    DataModule's own ``state_dict`` holds them too.

    Args:
        mimic_dir: folder with ``ADMISSIONS``, ``DIAGNOSES_ICD``, ``PROCEDURES_ICD``, ``PRESCRIPTIONS``
            (``.csv`` or ``.csv.gz``). ``None`` (and no ``records``) = the shipped MIMIC-III demo.
        ndc_map: NDC -> ATC-3 CSV (``ndc,atc3``); ``None`` = the shipped map (MIT, from MoleRec).
        records: a ``records.json`` from ``ldoctor.data.safedrug_import`` instead of ``mimic_dir`` (SafeDrug /
            GAMENet pickles are converted once by that module, which refuses to unpickle without its explicit
            ``--allow-pickle`` flag: a pickle can run code). Use ``split_seed: null`` for SafeDrug's split.
        images: optional CSV ``hadm_id,image_path`` linking admissions to a radiograph (PNG or DICOM);
            batches then carry ``image`` and ``has_image``.
        top_k_drugs: keep only the k most frequent ATC-3 classes; ``None`` keeps all.
        min_admissions: drop patients with fewer kept admissions (SafeDrug uses 2 on the full data).
        max_history: keep at most this many admissions (the current one included) per sample; ``None`` = all.
        history_drugs: earlier admissions also show the drugs they were given (``M:<atc3>`` codes), as in
            GAMENet / COGNet; the current admission never shows its own.
        split_seed: seed of the patient shuffle before the 2/3 : 1/6 : 1/6 train/test/val split; ``None``
            keeps file order (SafeDrug's split of its processed records).
        image_size: side of the images, pixels.
        skip_bad: skip and count bad rows instead of failing.
        batch_size: admissions per batch.
        num_workers: loader worker processes.
        pin_memory: pin host memory.
    """

    def __init__(
        self,
        mimic_dir: str | None = None,
        ndc_map: str | None = None,
        records: str | None = None,
        images: str | None = None,
        top_k_drugs: int | None = None,
        min_admissions: int = 1,
        max_history: int | None = None,
        history_drugs: bool = True,
        split_seed: int | None = 0,
        image_size: int = 224,
        skip_bad: bool = False,
        batch_size: int = 16,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        if mimic_dir is not None and records is not None:
            raise ValueError("MIMICDrugDataModule: give mimic_dir (raw CSVs) or records (records.json), not both")
        if min_admissions < 1:
            raise ValueError(f"min_admissions must be >= 1, got {min_admissions}")
        if max_history is not None and max_history < 1:
            raise ValueError(f"max_history must be >= 1 or None, got {max_history}")
        self.mimic_dir = Path(mimic_dir) if mimic_dir is not None else (None if records else DEMO_DIR)
        self.ndc_map = Path(ndc_map) if ndc_map is not None else DEMO_NDC_MAP
        self.records_path = Path(records) if records is not None else None
        self.images_path = Path(images) if images is not None else None
        self.top_k_drugs, self.min_admissions, self.max_history = top_k_drugs, min_admissions, max_history
        self.history_drugs = history_drugs
        self.split_seed, self.image_size, self.skip_bad = split_seed, image_size, skip_bad
        self.stats: MimicStats | None = None
        self.splits: dict[str, list[dict]] | None = None
        self.drug_vocabulary: list[str] | None = None
        self.code_vocabulary: list[str] | None = None

    # ------------------------------------------------------------------------------------- cohort
    def _read(self) -> tuple[list[dict], str]:
        if self.records_path is not None:
            records, _ = load_records_json(self.records_path)
            return records, str(self.records_path)
        records, self.stats = read_mimic_admissions(self.mimic_dir, self.ndc_map, self.skip_bad)
        return records, str(self.mimic_dir)

    def prepare(self) -> None:
        """Read, filter and split the cohort and build the vocabularies (once; later calls do nothing)."""
        if self.splits is not None:
            return
        records, source = self._read()
        records = filter_admissions(records, self.top_k_drugs, self.min_admissions, source)
        patients = group_by_patient(records)
        split = split_patients(list(patients), self.split_seed)
        self.splits = {name: [r for s in split[name] for r in patients[s]] for name in SPLITS}
        for name in ("train", "test"):
            if not self.splits[name]:
                raise ValueError(f"{source}: the {name} split is empty ({len(patients)} patients); use more data")
        stats = self.stats or MimicStats()
        stats.patients, stats.admissions = len(patients), len(records)
        stats.drug_classes = len({d for r in records for d in r["drugs"]})
        self.stats = stats
        if self.drug_vocabulary is None:
            self.drug_vocabulary, self.code_vocabulary = build_vocabularies(
                self.splits["train"], records, self.history_drugs
            )
        log.info("MIMIC drug cohort from %s: %s", source, stats.as_dict())

    @property
    def task(self) -> TaskSpec:
        """``drug_task(drug_vocabulary, code_vocabulary)`` of this cohort (built on first access)."""
        self.prepare()
        return drug_task(self.drug_vocabulary, self.code_vocabulary)

    def split_samples(self, split: str) -> list[dict]:
        """Samples of one split (``patient_samples`` of each of its patients)."""
        self.prepare()
        return [
            s
            for adm in group_by_patient(self.splits[split]).values()
            for s in patient_samples(adm, self.max_history, self.history_drugs)
        ]

    # ------------------------------------------------------------------------------------- datasets
    def _dataset(self, split: str, links: dict[str, str] | None) -> DrugDataset:
        transform = None
        if links is not None:
            from ldoctor.data.transforms import radiograph_postprocess, radiograph_preprocess  # noqa: PLC0415

            pre, post = radiograph_preprocess(self.image_size), radiograph_postprocess(None, self.image_size)
            transform = lambda d: post(pre(d))  # noqa: E731
        return DrugDataset(
            self.split_samples(split),
            self.code_vocabulary,
            self.drug_vocabulary,
            links,
            transform,
            self.image_size,
        )

    def setup(self, stage: str) -> None:
        self.prepare()
        links = read_image_links(self.images_path, self.skip_bad) if self.images_path is not None else None
        if links is not None:
            cohort = {r["hadm_id"] for rs in self.splits.values() for r in rs}
            outside = len(set(links) - cohort)
            if outside:
                rank_zero_warn(f"{self.images_path}: {outside} of {len(links)} linked admissions are not in the cohort")
        self.train_dataset = self._dataset("train", links)
        self.val_dataset = self._dataset("val", links) if self.splits["val"] else None
        self.test_dataset = self._dataset("test", links)
        unknown = self.test_dataset.unknown_codes
        if unknown:
            log.info("%d test codes are not in the training vocabulary and map to %s", unknown, UNKNOWN_CODE)

    def label_rate(self) -> torch.Tensor:
        """Share of training admissions given each drug, ``[num_drugs]`` in [0, 1] (for ``prior_bias``)."""
        if self.train_dataset is None:
            self.setup("fit")
        return self.train_dataset.labels.mean(dim=0)

    @property
    def collate_fn(self) -> Callable[[list[Any]], Any]:
        return collate_drug_batch

    # ------------------------------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        """Vocabularies and split settings, saved in Lightning checkpoints."""
        self.prepare()
        return {
            "drug_vocabulary": list(self.drug_vocabulary),
            "code_vocabulary": list(self.code_vocabulary),
            "split_seed": self.split_seed,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Use the checkpoint's vocabularies (the trained model's input and output indices)."""
        drugs, codes = list(state_dict["drug_vocabulary"]), list(state_dict["code_vocabulary"])
        if (drugs, codes) == (self.drug_vocabulary, self.code_vocabulary):
            return
        if self.drug_vocabulary is not None:
            rank_zero_warn(
                "MIMICDrugDataModule: the checkpoint's vocabularies differ from this data's; "
                "re-encoding the datasets with the checkpoint's"
            )
        self.drug_vocabulary, self.code_vocabulary = drugs, codes
        if self.train_dataset is not None:
            self.setup("fit")
