"""Cut an NIH-format ChestX-ray14 folder (``images/*.png`` + ``Data_Entry_2017_v2020.csv.gz``) for a set of PNGs.

Regenerates the shipped ``ldoctor/demo_data/nih-cxr14-64/`` from the project's shared data folder:

    python tools/make_nih_subset.py --images ../shared/data/nih-cxr14/images/nih1000_64 \
        --table ../shared/data/nih-cxr14/Data_Entry_2017_v2020.csv.gz --out ldoctor/demo_data/nih-cxr14-64

The PNGs are copied byte for byte. The label table keeps the header and, in the original order, exactly the
rows of the copied images, each line as it is in the source (all 11 columns, no re-formatting of numbers); it is
written with gzip ``mtime=0``, so the same inputs give the same bytes. No list files are written: the folder's
readers draw a seeded patient split or patient-grouped folds (``ldoctor.evaluation.splits``). The README beside
the data (licence, provenance) is not written by this tool.

With ``--hold-out SHARE`` it writes two folders of the same layout instead, ``OUT/train`` and ``OUT/test``, the
test one holding the patients of :func:`~ldoctor.evaluation.splits.locked_test_patients` (a hash of the patient
id, about ``SHARE`` of them), so ``benchmarks/chestxray14.py --root OUT/train --test-root OUT/test`` can be run:

    python tools/make_nih_subset.py --images ldoctor/demo_data/nih-cxr14-64/images \
        --table ldoctor/demo_data/nih-cxr14-64/Data_Entry_2017_v2020.csv.gz --hold-out 0.2 --out outputs/nih_held_out
"""

from __future__ import annotations

import argparse
import gzip
import io
import shutil
from collections.abc import Callable
from pathlib import Path

from ldoctor.evaluation.splits import locked_test_patients

TABLE_NAME = "Data_Entry_2017_v2020.csv.gz"


def table_lines(table: Path, names: set[str]) -> list[str]:
    """The header and the lines of ``table`` (``.csv`` or ``.csv.gz``) whose first field is in ``names``.

    Raises:
        ValueError: a name without a row, or a name listed twice in the table.
    """
    opener = gzip.open if table.suffix == ".gz" else open
    with opener(table, "rt", newline="") as f:
        lines = f.read().splitlines()
    kept, seen = [lines[0]], set()
    for number, line in enumerate(lines[1:], start=2):
        name = line.split(",", 1)[0]
        if name in names:
            if name in seen:
                raise ValueError(f"{table} line {number}: {name} is listed twice")
            seen.add(name)
            kept.append(line)
    missing = sorted(names - seen)
    if missing:
        raise ValueError(f"{len(missing)} images have no row in {table} (e.g. {missing[:5]}); expected NIH file names")
    return kept


def patient_of(name: str) -> str:
    """The patient of an NIH file name (``00000001_000.png`` -> ``"1"``, as in the table's ``Patient ID``)."""
    return str(int(name.split("_", 1)[0]))


def write_subset(images: Path, table: Path, out: Path, keep: Callable[[str], bool] = lambda name: True
                 ) -> tuple[int, int]:
    """Copy the ``images/*.png`` whose name passes ``keep`` to ``out/images/`` and write their rows to
    ``out/Data_Entry_2017_v2020.csv.gz``.

    Returns:
        ``(images, patients)`` written.
    """
    pngs = sorted(p for p in images.iterdir() if p.suffix.lower() == ".png" and keep(p.name))
    if not pngs:
        raise FileNotFoundError(f"{images}: no PNG files; expected NIH ChestX-ray14 images (e.g. 00000001_000.png)")
    lines = table_lines(table, {p.name for p in pngs})
    (out / "images").mkdir(parents=True, exist_ok=True)
    for png in pngs:
        shutil.copyfile(png, out / "images" / png.name)
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as f:
        f.write(("\n".join(lines) + "\n").encode())
    (out / TABLE_NAME).write_bytes(buffer.getvalue())
    patient_column = lines[0].split(",").index("Patient ID")
    return len(pngs), len({line.split(",")[patient_column] for line in lines[1:]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True, type=Path, help="folder of NIH PNGs (e.g. shared nih1000_64/)")
    parser.add_argument("--table", required=True, type=Path, help="the full Data_Entry_2017_v2020.csv[.gz]")
    parser.add_argument("--out", default=Path("ldoctor/demo_data/nih-cxr14-64"), type=Path)
    parser.add_argument("--hold-out", type=float, metavar="SHARE",
                        help="write OUT/train and OUT/test, the test folder holding about SHARE of the patients")
    args = parser.parse_args()
    if args.hold_out is None:
        n_images, n_patients = write_subset(args.images, args.table, args.out)
        print(f"{args.out}: {n_images} images of {n_patients} patients, {TABLE_NAME} with their rows")
        return
    if args.out.exists():
        parser.error(f"{args.out} exists; choose a new folder")
    patients = {patient_of(p.name) for p in args.images.iterdir() if p.suffix.lower() == ".png"}
    test = locked_test_patients(patients, share=args.hold_out)
    for part, inside in (("train", False), ("test", True)):
        n_images, n_patients = write_subset(args.images, args.table, args.out / part,
                                            keep=lambda name, inside=inside: (patient_of(name) in test) == inside)
        print(f"{args.out / part}: {n_images} images of {n_patients} patients")


if __name__ == "__main__":
    main()
