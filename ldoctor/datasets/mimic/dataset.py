"""The ``drug`` task's samples as tensors: admission histories encoded with the vocabularies, padded batches.

Batch (:func:`collate_drug_batch`)::

    "codes":     int64 [B, admissions, codes], 0 = padding, i >= 1 = code_vocabulary[i - 1]; admissions
                 oldest first, left-aligned, the current admission is the last non-empty row
    "label":     float [B, num_drugs], 1 = prescribed
    "id":        list of "<subject_id>/<hadm_id>"
    "image":     float [B, 3, S, S] ImageNet-normalised, zeros where has_image is False (with image links)
    "has_image": bool [B]                                                               (with image links)

Linked images are checked when the links are read (:func:`read_image_links`: headers only, so ``skip_bad`` can leave a
bad one out) and decoded when a batch is loaded, where a failure raises one error naming the file: a batch cannot
leave a sample out, so ``skip_bad`` does not apply there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ldoctor.datasets.mimic.records import UNKNOWN_CODE
from ldoctor.errors import BadInput, BadInputLog
from ldoctor.io.radiograph import RADIOGRAPH_EXPECTED, check_radiograph_file
from ldoctor.io.tables import read_csv_columns
from ldoctor.transforms.failures import named_error

#: Appended to the error of a linked image that fails while a batch is loaded.
IMAGE_HINT = ("found while loading a batch, where skip_bad cannot leave a sample out: fix the file, or remove its "
              "line from the image links")


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
                sample["image"] = self._image(path)
            sample["has_image"] = path is not None
        return sample

    def _image(self, path: str) -> torch.Tensor:
        """The transformed image of one admission; a failure raises one error naming the file."""
        try:
            return self.image_transform({"image": path})["image"]
        except Exception as err:  # any reader's failure becomes one error naming the file
            error = named_error(err, path, RADIOGRAPH_EXPECTED, IMAGE_HINT)
            raise error from error.__cause__


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


def read_image_links(path: str | Path, bad: BadInputLog) -> dict[str, str]:
    """Read a ``hadm_id,image_path`` CSV; relative image paths are relative to the CSV's folder.

    Each image is checked from its header (:func:`ldoctor.io.radiograph.check_radiograph_file`): a DICOM that is
    multi-frame, colour, compressed with a transfer syntax no installed plugin decodes, truncated or not a radiograph's
    modality, and a PNG that is truncated or over the decompression-bomb limit, are reported (counted as
    ``"unreadable images"`` with ``skip_bad``, and the admission keeps no image).

    Raises:
        ValueError: missing columns, an empty ``hadm_id`` or path, or one admission linked to two images.
        FileNotFoundError: an image file that does not exist (file and line named), unless ``bad`` skips it.
        BadInput: an image that fails its header checks (file and line named), unless ``bad`` skips it.
    """
    path = Path(path)
    frame = read_csv_columns(path, ("hadm_id", "image_path"))
    links: dict[str, str] = {}
    for hadm, image, line in frame.itertuples(index=False):
        image_path = Path(image) if Path(image).is_absolute() else path.parent / image
        if not hadm or not image:
            raise BadInput(f"{path} line {line}: expected a hadm_id and an image_path, got {hadm!r}, {image!r}")
        if hadm in links and links[hadm] != str(image_path):
            raise BadInput(f"{path} line {line}: hadm_id {hadm} is linked to a second image ({image})")
        if not image_path.is_file():
            bad.report("missing images", f"{image_path}: listed in {path} line {line}, not found; check data.images",
                       FileNotFoundError)
            continue
        try:
            check_radiograph_file(image_path)
        except BadInput as err:
            bad.report("unreadable images", f"{err}; linked in {path} line {line}")
            continue
        links[hadm] = str(image_path)
    return links
