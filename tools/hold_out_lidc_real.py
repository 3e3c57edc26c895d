"""Split the shared real LIDC-IDRI folders by patient into a training folder and a held-out test folder of the
same layout, so the benchmarks' ``--test-slices`` / ``--test-vois`` path can be run here.

    python tools/hold_out_lidc_real.py --slices ../shared/data/lidc-slices --vois ../shared/data/lidc-vois \
        --out outputs/lidc_held_out

writes ``OUT/{train,test}-slices`` and ``OUT/{train,test}-vois``. The test patients are
:func:`~ldoctor.evaluation.splits.locked_test_patients` (a hash of the patient id, ``--share`` of them), the same
patients for both layouts, so no tuning choice can move one; the real hidden test sets are other patients again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from ldoctor.datasets.lidc import write_slice_subset, write_voi_subset
from ldoctor.evaluation.splits import locked_test_patients


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=Path, default=Path("../shared/data/lidc-slices"))
    parser.add_argument("--vois", type=Path, default=Path("../shared/data/lidc-vois"))
    parser.add_argument("--out", type=Path, required=True, help="a folder that does not exist yet")
    parser.add_argument("--share", type=float, default=1 / 6, help="expected share of patients held out")
    args = parser.parse_args()
    if args.out.exists():
        parser.error(f"{args.out} exists; choose a new folder")
    nodules = pd.read_csv(args.slices / "nodules.csv", dtype=str, keep_default_na=False)
    vois = pd.read_csv(args.vois / "vois.csv", dtype=str, keep_default_na=False)
    test = locked_test_patients(set(nodules["patient_id"]) | set(vois["patient_id"]), share=args.share)
    for part, keep in (("train", lambda p: p not in test), ("test", lambda p: p in test)):
        chosen = nodules[nodules["patient_id"].map(keep)]
        write_slice_subset(args.slices, args.out / f"{part}-slices",
                           list(zip(chosen["patient_id"], chosen["nodule_dir"])))
        keys = vois.loc[vois["patient_id"].map(keep), "key"].tolist()
        write_voi_subset(args.vois, args.out / f"{part}-vois", keys)
        print(f"{part}: {len(chosen)} slice nodules of {chosen['patient_id'].nunique()} patients, {len(keys)} VOIs")


if __name__ == "__main__":
    main()
