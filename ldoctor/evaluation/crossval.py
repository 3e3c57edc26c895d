"""Run the jobs of a cross-validation (folds x ensemble members) in parallel processes and average ensembles.

The work function and the data it closes over are inherited by forked workers (set before the pool starts), so
large in-memory caches are shared instead of pickled; only each job's small argument and result travel.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

_WORK: Callable[[Any], Any] | None = None  # the job function, inherited by forked workers


def _run(job: Any) -> Any:
    assert _WORK is not None
    return _WORK(job)


def run_jobs(work: Callable[[Any], Any], jobs: Sequence[Any], processes: int = 1) -> list[Any]:
    """``[work(job) for job in jobs]``, in ``processes`` forked processes when more than one (results in job
    order). ``work`` may be a closure: it is not pickled."""
    global _WORK
    if processes <= 1:
        return [work(job) for job in jobs]
    _WORK = work
    try:
        with mp.get_context("fork").Pool(processes) as pool:
            return pool.map(_run, jobs, chunksize=1)
    finally:
        _WORK = None


def mean_members(members: Sequence[dict], keys: Sequence[str] = ("prob", "val_prob")) -> dict:
    """One fold's ensemble: the members' ``keys`` (probabilities of the same cases, same order) averaged; the
    members' own ``prob`` kept as ``member_prob`` and their ``best_score`` as a list.

    Raises:
        ValueError: members that scored different cases.
    """
    first = members[0]
    for member in members[1:]:
        if member["ids"] != first["ids"] or member.get("val_ids") != first.get("val_ids"):
            raise ValueError("ensemble members must score the same cases in the same order")
    averaged = {key: np.mean([m[key] for m in members], axis=0).tolist() for key in keys}
    return {**first, **averaged, "member_prob": [m["prob"] for m in members],
            "best_score": [m["best_score"] for m in members],
            "fit_seconds": round(sum(m["fit_seconds"] for m in members), 1)}


def fold_mean(values: Sequence[float | None]) -> dict[str, float | None]:
    """Mean and standard deviation (ddof 1) over folds; ``None`` for both when any fold has no value."""
    if any(v is None for v in values):
        return {"mean": None, "std": None}
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
