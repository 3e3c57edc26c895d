"""Synthetic samples with a learnable signal for every task kind (tests, smoke runs, benchmarks).

Each dataset draws sample ``i`` from its own generator seeded by ``(seed, i)``, so samples are identical
across epochs, workers and processes without being stored.

- ``SyntheticNoduleViews``: 2.5D CT views ``[views, 3, S, S]``; malignant nodules are larger and brighter.
- ``SyntheticRadiographs``: ``[3, S, S]``; finding ``k`` is a bright patch in cell ``k`` of a 4x4 grid.
- ``SyntheticHistories``: code histories ``[admissions, codes]``; drug ``d`` is given when code
  ``d + 1`` is among the current admission's codes.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset


def _generator(seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + index)


class SyntheticNoduleViews(Dataset):
    """Binary nodule malignancy on multi-view patches.

    Args:
        num_samples: dataset length.
        image_size: view side ``S`` in pixels.
        views: number of 2.5D views ``V``.
        seed: sample seed.
        unknown_fraction: share of samples whose label is NaN (unknown).
    """

    def __init__(
        self, num_samples: int, image_size: int = 32, views: int = 3, seed: int = 0, unknown_fraction: float = 0.0
    ) -> None:
        self.num_samples, self.size, self.views, self.seed = num_samples, image_size, views, seed
        self.unknown_fraction = unknown_fraction

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict:
        g = _generator(self.seed, index)
        malignant = float(torch.rand(1, generator=g) < 0.5)
        radius = self.size * (0.22 if malignant else 0.12) * (0.85 + 0.3 * float(torch.rand(1, generator=g)))
        yy, xx = torch.meshgrid(torch.arange(self.size), torch.arange(self.size), indexing="ij")
        shift = (torch.rand(self.views, 2, generator=g) - 0.5) * self.size * 0.2
        centre = self.size / 2 + shift
        dist = ((yy[None] - centre[:, 0, None, None]) ** 2 + (xx[None] - centre[:, 1, None, None]) ** 2).sqrt()
        blob = (dist < radius).float() * (0.8 + 0.6 * malignant)  # [V, S, S]
        noise = 0.4 * torch.randn(self.views, 3, self.size, self.size, generator=g)
        image = blob[:, None].expand(-1, 3, -1, -1) + noise
        label = math.nan if float(torch.rand(1, generator=g)) < self.unknown_fraction else malignant
        return {"image": image, "label": torch.tensor([label]), "id": f"nodule-{index}"}


class SyntheticRadiographs(Dataset):
    """Multilabel findings on radiograph-like images.

    Args:
        num_samples: dataset length.
        image_size: side ``S`` in pixels (a multiple of 4 works best).
        num_findings: number of labels (at most 16).
        prevalence: probability of each finding.
        seed: sample seed.
    """

    def __init__(
        self, num_samples: int, image_size: int = 32, num_findings: int = 14, prevalence: float = 0.3, seed: int = 0
    ) -> None:
        if not 1 <= num_findings <= 16:
            raise ValueError(f"num_findings must be in 1..16, got {num_findings}")
        self.num_samples, self.size, self.num_findings = num_samples, image_size, num_findings
        self.prevalence, self.seed = prevalence, seed

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict:
        g = _generator(self.seed, index)
        labels = (torch.rand(self.num_findings, generator=g) < self.prevalence).float()
        image = 0.3 * torch.randn(1, self.size, self.size, generator=g)
        cell = self.size // 4
        for k in torch.nonzero(labels).flatten().tolist():
            r, c = divmod(k, 4)
            image[:, r * cell + 1 : (r + 1) * cell - 1, c * cell + 1 : (c + 1) * cell - 1] += 1.0
        return {"image": image.expand(3, -1, -1).clone(), "label": labels, "id": f"radiograph-{index}"}


class SyntheticHistories(Dataset):
    """Medication sets from code histories.

    Args:
        num_samples: dataset length (admissions).
        vocab_size: number of codes; codes ``1..num_drugs`` trigger drugs, the rest are noise.
        num_drugs: number of drug classes.
        max_admissions: admissions per history, the last one is current.
        codes_per_admission: codes drawn per admission.
        image_size: if > 0, also an ``image`` ``[3, S, S]`` for a share ``image_fraction`` of admissions.
        image_fraction: share of admissions with an image (``has_image``).
        seed: sample seed.
    """

    def __init__(self, num_samples: int, vocab_size: int = 40, num_drugs: int = 8, max_admissions: int = 3,
                 codes_per_admission: int = 5, image_size: int = 0, image_fraction: float = 0.0, seed: int = 0) -> None:
        if vocab_size <= num_drugs:
            raise ValueError(f"vocab_size ({vocab_size}) must exceed num_drugs ({num_drugs})")
        self.num_samples, self.vocab_size, self.num_drugs = num_samples, vocab_size, num_drugs
        self.max_admissions, self.codes_per_admission = max_admissions, codes_per_admission
        self.image_size, self.image_fraction, self.seed = image_size, image_fraction, seed

    @property
    def code_vocabulary(self) -> list[str]:
        return [f"D:{i:03d}" for i in range(1, self.vocab_size + 1)]

    @property
    def drug_vocabulary(self) -> list[str]:
        return [f"DRUG{d:02d}" for d in range(self.num_drugs)]

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict:
        g = _generator(self.seed, index)
        n_adm = int(torch.randint(1, self.max_admissions + 1, (1,), generator=g))
        codes = torch.zeros(self.max_admissions, self.codes_per_admission, dtype=torch.long)
        for a in range(n_adm):
            codes[a] = torch.randperm(self.vocab_size, generator=g)[: self.codes_per_admission] + 1
        current = codes[n_adm - 1]
        label = torch.zeros(self.num_drugs)
        triggered = current[current <= self.num_drugs] - 1
        label[triggered] = 1.0
        sample = {"codes": codes, "label": label, "id": f"admission-{index}"}
        if self.image_size > 0:
            has_image = bool(torch.rand(1, generator=g) < self.image_fraction)
            sample["has_image"] = torch.tensor(has_image)
            sample["image"] = torch.randn(3, self.image_size, self.image_size, generator=g) * float(has_image)
        return sample
