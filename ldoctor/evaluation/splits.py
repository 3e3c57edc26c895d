"""The project's one patient splitter: whole patients go to one split, so no patient leaks across splits.

Every dataset family splits through this module: it lists its patients in a fixed order (LIDC-IDRI passes the
sorted unique patient ids, MIMIC-III its patients in file order), :func:`split_patients` or
:func:`patient_folds` assigns them to named splits, and :func:`assign_records` sends each record after its
patient. :func:`check_patient_disjoint` is the guard a caller runs on any split it did not make itself.

Two published conventions are kept so that recorded numbers reproduce:

* ``rounding="round", shuffle="numpy"`` (the default): split boundaries at ``np.round`` of the cumulative
  fractions times the patient count, patients shuffled by ``np.random.default_rng(seed).permutation``. The
  LIDC-IDRI benchmark's single seeded split.
* ``rounding="floor", shuffle="python"``: boundaries at the floor of the cumulative fractions, patients shuffled
  by ``random.Random(seed).shuffle``. With ``{"train": 2/3, "test": 1/6, "val": 1/6}`` this is SafeDrug's split
  rule (first two thirds train, the rest halved into test then validation; with ``seed=None``, SafeDrug's
  published split of its processed records in file order) and the MIMIC-III demo benchmark's seeded shuffle.

Example:
    >>> patients = [f"P{i:03d}" for i in range(10)]
    >>> splits = split_patients(patients, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=0)
    >>> [len(splits[name]) for name in ("train", "val", "test")]  # np.round(8.5) is 8: half to even
    [7, 1, 2]
    >>> safedrug = split_patients(patients, {"train": 2 / 3, "test": 1 / 6, "val": 1 / 6}, seed=None,
    ...                           rounding="floor", shuffle="python")
    >>> safedrug["train"], safedrug["test"], safedrug["val"]
    (['P000', 'P001', 'P002', 'P003', 'P004', 'P005'], ['P006', 'P007'], ['P008', 'P009'])
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Literal

import numpy as np

Rounding = Literal["round", "floor"]
Shuffle = Literal["numpy", "python"]

#: Fractions are read as the nearest ratio with a denominator up to this, so ``2 / 3`` floors as two thirds.
_MAX_DENOMINATOR = 1_000_000


def split_patients(
    patients: Sequence[str],
    fractions: Mapping[str, float],
    seed: int | None = 0,
    *,
    rounding: Rounding = "round",
    shuffle: Shuffle = "numpy",
    require_nonempty: bool = True,
) -> dict[str, list[str]]:
    """Shuffle the patients with ``seed`` and cut them into consecutive chunks, one per split.

    Args:
        patients: unique patient ids, ``[n_patients]``, in the order the caller fixes (the result depends on it).
        fractions: split name -> share of the patients, ``>= 0`` and summing to 1; the chunks follow this
            mapping's order, e.g. ``{"train": 0.7, "val": 0.15, "test": 0.15}``.
        seed: shuffling seed; ``None`` keeps the given order.
        rounding: ``"round"``: chunk boundaries at ``np.round(cumsum(fractions) * n_patients)`` (LIDC-IDRI);
            ``"floor"``: at the exact floor of the same products (SafeDrug / MIMIC-III).
        shuffle: ``"numpy"``: ``np.random.default_rng(seed).permutation`` (LIDC-IDRI); ``"python"``:
            ``random.Random(seed).shuffle`` (MIMIC-III demo benchmark).
        require_nonempty: raise when a split with a positive fraction receives no patient.

    Returns:
        ``{split: patient ids in shuffled order}`` with the keys of ``fractions``; disjoint, covering every patient.

    Raises:
        ValueError: duplicate patients, fractions negative or not summing to 1, or (with ``require_nonempty``)
            a split with a positive fraction left empty, naming the split and the patient count.
    """
    _check_unique(patients)
    _check_fractions(fractions)
    order = _shuffled(patients, seed, shuffle)
    bounds = _bounds(len(order), list(fractions.values()), rounding)
    splits = {name: order[start:stop] for name, start, stop in zip(fractions, bounds[:-1], bounds[1:])}
    for name, share in fractions.items():
        if require_nonempty and share > 0 and not splits[name]:
            raise ValueError(
                f"split {name!r} is empty: {len(order)} patients cannot fill fractions {dict(fractions)}; "
                f"add data or lower the fraction of {name!r} to 0"
            )
    return splits


def patient_folds(
    patients: Sequence[str], folds: int, fold: int, val_fraction: float = 0.15, seed: int = 0
) -> dict[str, list[str]]:
    """Patient-grouped K-fold cross-validation: fold ``fold`` of ``folds`` is the test split.

    The patients are shuffled with ``np.random.default_rng(seed).permutation`` and dealt like cards into
    ``folds`` groups (``order[fold::folds]``, sizes differ by at most one); the test split is group ``fold``. The
    remaining patients are shuffled again with ``seed + 1 + fold``; the first ``round(val_fraction * n_rest)``
    form the validation split (checkpoint selection), the rest train. Over ``fold = 0 .. folds - 1`` every
    patient is tested exactly once.

    Args:
        patients: unique patient ids, ``[n_patients]``, in the order the caller fixes (LIDC-IDRI: sorted).
        folds: number of folds, ``>= 2``.
        fold: the test fold, ``0 <= fold < folds``.
        val_fraction: share of the non-test patients used for validation, in ``[0, 1)``.
        seed: shuffling seed, the same for all folds of one cross-validation.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` patient ids, disjoint, covering every patient.

    Raises:
        ValueError: ``folds < 2``, ``fold`` out of range, a bad ``val_fraction``, duplicate patients or fewer
            patients than folds.
    """
    if folds < 2 or not 0 <= fold < folds:
        raise ValueError(f"need folds >= 2 and 0 <= fold < folds, got folds={folds}, fold={fold}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    _check_unique(patients)
    if len(patients) < folds:
        raise ValueError(f"{len(patients)} patients cannot fill {folds} folds; lower the number of folds")
    order = _shuffled(patients, seed, "numpy")
    test = order[fold::folds]
    tested = set(test)
    rest = _shuffled([p for p in order if p not in tested], seed + 1 + fold, "numpy")
    n_val = int(round(val_fraction * len(rest)))
    return {"train": rest[n_val:], "val": rest[:n_val], "test": test}


def locked_test_patients(patients: Iterable[str], share: float = 1 / 6, salt: str = "ldoctor-locked-test") -> set[str]:
    """The patients of a locked test set: those whose ``sha256(salt + id)`` falls in the lowest ``share`` of the
    hash range. A patient's membership depends on its id alone, never on the other patients, a seed or the data's
    order, so the set stays fixed as data is added, and no tuning choice can move a patient in or out.

    Args:
        patients: patient ids (as strings, e.g. MIMIC-III ``SUBJECT_ID``).
        share: the expected share of patients in the locked set, in ``(0, 1)`` (SafeDrug tests on about 1/6).
        salt: prefix of the hashed text; another salt draws another locked set.

    Example:
        >>> sorted(locked_test_patients([str(i) for i in range(20)], share=0.25))
        ['11', '15', '8']
    """
    if not 0 < share < 1:
        raise ValueError(f"share must be in (0, 1), got {share}")
    bound = int(share * 2**64)
    return {p for p in map(str, patients)
            if int.from_bytes(hashlib.sha256(f"{salt}{p}".encode()).digest()[:8], "big") < bound}


def assign_records(
    records: Sequence[dict], patient_splits: Mapping[str, Sequence[str]], key: str = "patient_id"
) -> dict[str, list[dict]]:
    """Send every record to its patient's split, keeping the records' order inside each split.

    Args:
        records: dicts holding the patient id under ``key`` (nodules, admissions, images).
        patient_splits: split name -> patient ids, e.g. the output of :func:`split_patients`.
        key: the record field holding the patient id (``"patient_id"``, ``"subject_id"``).

    Returns:
        ``{split: records}`` with the keys of ``patient_splits`` (a split without records maps to ``[]``).

    Raises:
        ValueError: a patient listed in two splits, or a record whose patient is in no split.
    """
    check_patient_disjoint(patient_splits)
    split_of = {patient: name for name, members in patient_splits.items() for patient in members}
    splits: dict[str, list[dict]] = {name: [] for name in patient_splits}
    for i, record in enumerate(records):
        patient = record[key]
        if patient not in split_of:
            raise ValueError(
                f"record {i}: patient {patient!r} ({key}) is in no split of {list(patient_splits)}; "
                "split the same patients whose records are assigned"
            )
        splits[split_of[patient]].append(record)
    return splits


def check_patient_disjoint(splits: Mapping[str, Iterable[str]]) -> None:
    """Raise when a patient appears in two splits.

    Args:
        splits: split name -> patient ids.

    Raises:
        ValueError: naming the first two overlapping splits, how many patients they share and up to five of them.
    """
    members = {name: set(patients) for name, patients in splits.items()}
    for first, second in itertools.combinations(members, 2):
        shared = sorted(members[first] & members[second])
        if shared:
            raise ValueError(
                f"splits {first!r} and {second!r} share {len(shared)} patients (e.g. {shared[:5]}); "
                "split by patient, never by record"
            )


def _check_unique(patients: Sequence[str]) -> None:
    repeated = sorted(patient for patient, count in Counter(patients).items() if count > 1)
    if repeated:
        raise ValueError(
            f"{len(repeated)} patient ids are listed more than once (e.g. {repeated[:5]}); pass unique patients"
        )


def _check_fractions(fractions: Mapping[str, float]) -> None:
    if not fractions or abs(sum(fractions.values()) - 1.0) > 1e-6 or any(f < 0 for f in fractions.values()):
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {dict(fractions)}")


def _shuffled(patients: Sequence[str], seed: int | None, shuffle: Shuffle) -> list[str]:
    """The patients in the order of the seeded shuffle; ``seed=None`` keeps the given order."""
    if shuffle not in ("numpy", "python"):
        raise ValueError(f"shuffle must be 'numpy' or 'python', got {shuffle!r}")
    order = list(patients)
    if seed is None:
        return order
    if shuffle == "numpy":
        return [order[i] for i in np.random.default_rng(seed).permutation(len(order))]
    random.Random(seed).shuffle(order)
    return order


def _bounds(n_patients: int, fractions: Sequence[float], rounding: Rounding) -> list[int]:
    """Chunk boundaries ``[n_splits + 1]``, from 0 to ``n_patients``.

    ``"round"`` keeps the LIDC-IDRI float expression bit for bit. ``"floor"`` computes in exact fractions, since
    in floats ``18 * (2/3 + 1/6)`` is ``14.999...`` and would floor to 14 where SafeDrug's rule gives 15. The
    last boundary is ``n_patients`` in both, so fractions summing to 1 within 1e-6 still place every patient.
    """
    if rounding == "round":
        bounds = [int(b) for b in np.round(np.cumsum([0.0, *fractions]) * n_patients)]
    elif rounding == "floor":
        exact = [Fraction(f).limit_denominator(_MAX_DENOMINATOR) for f in fractions]
        bounds = [0, *(math.floor(n_patients * share) for share in itertools.accumulate(exact))]
    else:
        raise ValueError(f"rounding must be 'round' or 'floor', got {rounding!r}")
    return [*(min(b, n_patients) for b in bounds[:-1]), n_patients]
