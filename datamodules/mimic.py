"""MIMIC-III medication recommendation (``drug`` task): admissions -> ATC level-3 drug classes.

Input: the raw MIMIC-III tables (:mod:`ldoctor.datasets.mimic.records`; the shipped MIMIC-III demo by default) or a
``records.json`` converted from SafeDrug / GAMENet processed records (:mod:`ldoctor.datasets.mimic.safedrug`).
Each sample is one admission: the diagnosis and procedure codes of this and the patient's earlier admissions
(``"codes"``), and the drug classes prescribed in this admission (``"label"``); batches as described in
:mod:`ldoctor.datasets.mimic.dataset`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn

from ldoctor.datamodule import TaskDataModule
from ldoctor.datasets.mimic.dataset import DrugDataset, collate_drug_batch, read_image_links
from ldoctor.datasets.mimic.records import (
    DEMO_DIR,
    DEMO_NDC_MAP,
    UNKNOWN_CODE,
    MimicStats,
    build_vocabularies,
    drug_task,
    filter_admissions,
    group_by_patient,
    patient_samples,
    read_mimic_admissions,
)
from ldoctor.datasets.mimic.safedrug import load_records_json
from ldoctor.errors import BadInputLog
from ldoctor.evaluation.splits import locked_test_patients, patient_folds, split_patients
from ldoctor.tasks import TaskSpec

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: SafeDrug's split rule: the first two thirds of the patients train, the rest is halved into test then validation.
SAFEDRUG_FRACTIONS = {"train": 2 / 3, "test": 1 / 6, "val": 1 / 6}


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
        records: a ``records.json`` from ``ldoctor.datasets.mimic.safedrug`` instead of ``mimic_dir`` (SafeDrug /
            GAMENet pickles are converted once by that module, which refuses to unpickle without its explicit
            ``--allow-pickle`` flag: a pickle can run code). Use ``split_seed: null`` for SafeDrug's split.
        images: optional CSV ``hadm_id,image_path`` linking admissions to a radiograph (PNG or DICOM);
            batches then carry ``image`` and ``has_image``.
        top_k_drugs: keep only the k most frequent ATC-3 classes; ``None`` keeps all.
        min_admissions: drop patients with fewer kept admissions (SafeDrug uses 2 on the full data).
        max_history: keep at most this many admissions (the current one included) per sample; ``None`` = all.
        history_drugs: earlier admissions also show the drugs they were given (``M:<atc3>`` codes), as in
            GAMENet / COGNet; the current admission never shows its own.
        locked_test: test on a locked set of patients instead (about 1/6, fixed by a hash of ``SUBJECT_ID``:
            :func:`ldoctor.evaluation.splits.locked_test_patients`), the same whatever the seed or the other options,
            so nothing tuned on the seeded train / validation splits of the rest ever sees them; the rest is split
            into train and validation with ``split_seed`` (``val_share`` of it validates), or into ``folds``.
        val_share: with ``locked_test`` (and no ``folds``), the share of the non-locked patients that validates;
            0 trains on all of them (a final fit after tuning).
        folds: with ``locked_test``, patient-grouped cross-validation inside the non-locked patients: they are
            dealt into ``folds`` groups (:func:`ldoctor.evaluation.splits.patient_folds`, seed ``split_seed``),
            group ``fold`` validates and the others train. The locked test stays out of every fold.
        fold: the validating group, ``0 <= fold < folds``.
        split_seed: seed of the patient shuffle before the 2/3 : 1/6 : 1/6 train/test/val split; ``None``
            keeps file order (SafeDrug's split of its processed records).
        image_size: side of the images, pixels.
        skip_bad: skip and count bad rows, and linked images that fail their header checks
            (:func:`~ldoctor.datasets.mimic.dataset.read_image_links`), instead of failing. An image that fails only
            when decoded, while a batch is loaded, still raises, naming the file.
        batch_size: admissions per batch.
        num_workers: loader worker processes.
        pin_memory: pin host memory.
    """

    def __init__(
        self,
        # the files
        mimic_dir: str | None = None, ndc_map: str | None = None, records: str | None = None, images: str | None = None,
        # the cohort, its samples and its split
        top_k_drugs: int | None = None, min_admissions: int = 1, max_history: int | None = None,
        history_drugs: bool = True, locked_test: bool = False, split_seed: int | None = 0, val_share: float = 0.2,
        folds: int | None = None, fold: int = 0,
        # reading and loading
        image_size: int = 224, skip_bad: bool = False, batch_size: int = 16, num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        if mimic_dir is not None and records is not None:
            raise ValueError("MIMICDrugDataModule: give mimic_dir (raw CSVs) or records (records.json), not both")
        if min_admissions < 1:
            raise ValueError(f"min_admissions must be >= 1, got {min_admissions}")
        if not 0 <= val_share < 1:
            raise ValueError(f"val_share must be in [0, 1), got {val_share}")
        if folds is not None and (not locked_test or folds < 2 or not 0 <= fold < folds):
            raise ValueError(f"folds needs locked_test=True, folds >= 2 and 0 <= fold < folds; got locked_test="
                             f"{locked_test}, folds={folds}, fold={fold}")
        if max_history is not None and max_history < 1:
            raise ValueError(f"max_history must be >= 1 or None, got {max_history}")
        self.mimic_dir = Path(mimic_dir) if mimic_dir is not None else (None if records else DEMO_DIR)
        self.ndc_map = Path(ndc_map) if ndc_map is not None else DEMO_NDC_MAP
        self.records_path = Path(records) if records is not None else None
        self.images_path = Path(images) if images is not None else None
        self.top_k_drugs, self.min_admissions, self.max_history = top_k_drugs, min_admissions, max_history
        self.history_drugs = history_drugs
        self.split_seed, self.image_size, self.locked_test = split_seed, image_size, locked_test
        self.val_share, self.folds, self.fold = val_share, folds, fold
        self.bad = BadInputLog(skip_bad, f"MIMIC-III {records or mimic_dir or DEMO_DIR}")
        self.stats: MimicStats | None = None
        self.splits: dict[str, list[dict]] | None = None
        self.drug_vocabulary: list[str] | None = None
        self.code_vocabulary: list[str] | None = None

    # ------------------------------------------------------------------------------------- cohort
    def _read(self) -> tuple[list[dict], str]:
        if self.records_path is not None:
            records, _ = load_records_json(self.records_path)
            return records, str(self.records_path)
        records, self.stats = read_mimic_admissions(self.mimic_dir, self.ndc_map, self.bad)
        return records, str(self.mimic_dir)

    def prepare(self) -> None:
        """Read, filter and split the cohort and build the vocabularies (once; later calls do nothing)."""
        if self.splits is not None:
            return
        records, source = self._read()
        records = filter_admissions(records, self.top_k_drugs, self.min_admissions, source)
        patients = group_by_patient(records)
        split = self._split_patients(list(patients))
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

    def _split_patients(self, patients: list[str]) -> dict[str, list[str]]:
        if self.locked_test:
            locked = locked_test_patients(patients)
            rest = [p for p in patients if p not in locked]
            if self.folds is not None:
                inner = patient_folds(rest, self.folds, self.fold, val_fraction=0.0, seed=self.split_seed or 0)
                split = {"train": inner["train"] + inner["val"], "val": inner["test"]}
            else:
                split = split_patients(rest, {"train": 1 - self.val_share, "val": self.val_share}, self.split_seed,
                                       require_nonempty=False)
            return {**split, "test": [p for p in patients if p in locked]}
        # the published SafeDrug rule; a seed shuffles with Python's ``random`` first, as the demo benchmark's splits
        return split_patients(patients, SAFEDRUG_FRACTIONS, self.split_seed, rounding="floor", shuffle="python",
                              require_nonempty=False)

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
            from ldoctor.transforms.radiograph import radiograph_postprocess, radiograph_preprocess  # noqa: PLC0415

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
        links = read_image_links(self.images_path, self.bad) if self.images_path is not None else None
        self.bad.summary()
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

    def train_labels(self) -> torch.Tensor:
        """``[N, num_drugs]`` 0/1 drug sets of the training admissions."""
        if self.train_dataset is None:
            self.setup("fit")
        return self.train_dataset.labels

    @property
    def collate_fn(self) -> Callable[[list[Any]], Any]:
        return collate_drug_batch

    def inference_settings(self) -> dict[str, Any]:
        """A report encodes a new history with the task's code vocabulary (in the task spec)."""
        return {"input": "history", "description": "MIMIC-III admissions (diagnoses, procedures, earlier drugs)"}

    # ------------------------------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        """Vocabularies and split settings, saved in Lightning checkpoints."""
        self.prepare()
        return {
            "drug_vocabulary": list(self.drug_vocabulary),
            "code_vocabulary": list(self.code_vocabulary),
            "split_seed": self.split_seed,
            "locked_test": self.locked_test,
            "val_share": self.val_share,
            "folds": self.folds,
            "fold": self.fold,
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
