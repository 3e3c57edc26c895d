"""LIDC XML reader files (``LidcReadMessage`` / ``readingSession`` / ``unblindedReadNodule`` with
``characteristics`` and ``roi`` = ``imageZposition`` + ``edgeMap`` ``xCoord``/``yCoord``), one file per series, next
to its DICOM slices (Armato et al., Med. Phys. 38(2), 2011; LIDC XML schema 3.12).
"""

from __future__ import annotations

import hashlib
import logging
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ldoctor.datasets.lidc.annotations import RATING_SCALES, RATINGS, Contour, ReaderAnnotation
from ldoctor.errors import BadInput

logger = logging.getLogger(__name__)

LIDC_XML_NAMESPACE = "http://www.nih.gov"


def _strip_namespace(root: ET.Element) -> ET.Element:
    for element in root.iter():
        if isinstance(element.tag, str) and "}" in element.tag:
            element.tag = element.tag.split("}", 1)[1]
    return root


def _text(element: ET.Element, tag: str, where: str) -> str:
    found = element.find(tag)
    if found is None or found.text is None:
        raise BadInput(f"{where}: <{element.tag}> has no <{tag}>")
    return found.text.strip()


def _read_roi(roi: ET.Element, where: str) -> Contour:
    z = float(_text(roi, "imageZposition", where))
    inclusion = _text(roi, "inclusion", where).upper() == "TRUE"
    points = [(int(float(_text(e, "xCoord", where))), int(float(_text(e, "yCoord", where)))) for e in roi.iter("edgeMap")]
    if not points:
        raise BadInput(f"{where}: <roi> at z={z} has no <edgeMap> points")
    sop = roi.find("imageSOP_UID")
    return Contour(z, np.asarray(points), inclusion, sop.text.strip() if sop is not None and sop.text else "")


def read_lidc_sessions(path: str | Path) -> list[list[ReaderAnnotation]]:
    """Read the reader annotations of one LIDC XML file, one list per ``readingSession`` in file order (a session
    without nodules >= 3 mm gives an empty list); see :func:`read_lidc_xml`."""
    path = Path(path)
    try:
        root = _strip_namespace(ET.parse(path).getroot())
    except ET.ParseError as err:
        raise BadInput(f"{path}: not well-formed XML ({err})") from err
    except OSError as err:
        raise BadInput(f"{path}: cannot be read ({err})") from err
    if root.tag != "LidcReadMessage":
        raise BadInput(f"{path}: root element is <{root.tag}>, expected <LidcReadMessage> (LIDC reader XML)")
    header = root.find("ResponseHeader")
    series = header.findtext("SeriesInstanceUid") if header is not None else None
    if not series:
        raise BadInput(f"{path}: <ResponseHeader> has no <SeriesInstanceUid>")
    sessions, small = [], 0
    for s, session in enumerate(root.iter("readingSession")):
        reader = session.findtext("servicingRadiologistID") or f"session{s}"
        annotations = []
        for nodule in session.iter("unblindedReadNodule"):
            nodule_id = nodule.findtext("noduleID", default="").strip()
            where = f"{path}: reader {reader} nodule {nodule_id!r}"
            characteristics = nodule.find("characteristics")
            if characteristics is None or characteristics.find("malignancy") is None:
                small += 1
                continue
            ratings = {}
            for name in RATINGS:
                value = characteristics.findtext(name)
                low, high = RATING_SCALES[name]
                if value is None or not value.strip().isdigit() or not low <= int(value) <= high:
                    raise BadInput(f"{where}: <{name}> is {value!r}, expected an integer rating {low}-{high}")
                ratings[name] = int(value)
            contours = [_read_roi(roi, where) for roi in nodule.iter("roi")]
            annotations.append(ReaderAnnotation(series.strip(), "", nodule_id, ratings, contours, reader,
                                                f"{path.name}:{reader}:{nodule_id}"))
        sessions.append(annotations)
    logger.debug("%s: %d nodules >= 3 mm, %d small nodules skipped", path, sum(map(len, sessions)), small)
    return sessions


def read_lidc_xml(path: str | Path) -> list[ReaderAnnotation]:
    """Read the reader annotations of one LIDC XML file (nodules >= 3 mm: those with ``characteristics``).

    Small nodules (< 3 mm, one point and no characteristics) and ``nonNodule`` marks are skipped (logged).
    ``patient_id`` is left "" (the XML does not carry it; the DICOM series does).

    Raises:
        BadInput: naming the file when it is unreadable, not well-formed or not LIDC XML, has no series UID, or a
            rating (missing, not an integer, outside its scale :data:`~ldoctor.datasets.lidc.annotations.RATING_SCALES`)
            or roi is malformed.
    """
    return [annotation for session in read_lidc_sessions(path) for annotation in session]


def session_fingerprint(session: Sequence[ReaderAnnotation]) -> str:
    """A digest of one reading session's content: per nodule its series, id, ratings and outlines (slice position,
    inclusion, points); the reader's name is left out. Two sessions with the same digest are the same reading."""
    digest = hashlib.sha256()
    for annotation in session:
        digest.update(repr((annotation.series_uid, annotation.nodule_id, sorted(annotation.ratings.items()))).encode())
        for contour in annotation.contours:
            points = np.ascontiguousarray(contour.points, dtype=np.int64)
            digest.update(repr((round(float(contour.z_mm), 3), bool(contour.inclusion), points.shape)).encode())
            digest.update(points.tobytes())
    return digest.hexdigest()


def is_lidc_xml(path: str | Path) -> bool:
    """True when the file's root element is ``LidcReadMessage`` (cheap check for folder scans).

    Raises:
        BadInput: the file cannot be read or is not well-formed XML: it may be a damaged reader file, whose
            nodules would otherwise vanish without a word.
    """
    try:
        for _, element in ET.iterparse(str(path), events=("start",)):
            return element.tag.rsplit("}", 1)[-1] == "LidcReadMessage"
    except ET.ParseError as err:
        raise BadInput(f"{path}: not well-formed XML ({err}); expected an LIDC reader file (<LidcReadMessage>) or "
                       "another well-formed XML file; fix or remove it") from err
    except OSError as err:
        raise BadInput(f"{path}: cannot be read ({err}); expected an LIDC reader file") from err
    return False


def write_lidc_xml(
    path: str | Path, series_uid: str, study_uid: str, sessions: Sequence[Sequence[ReaderAnnotation]]
) -> Path:
    """Write reader annotations as an LIDC XML file (one ``readingSession`` per reader).

    Args:
        path: output file.
        series_uid: ``SeriesInstanceUid`` of the annotated series.
        study_uid: ``StudyInstanceUID``.
        sessions: per reader, the annotations it made (``reader`` names the session).
    """
    ET.register_namespace("", LIDC_XML_NAMESPACE)
    ns = f"{{{LIDC_XML_NAMESPACE}}}"
    root = ET.Element(f"{ns}LidcReadMessage", {"uid": series_uid + ".xml", "source": "ldoctor virtual case"})
    header = ET.SubElement(root, f"{ns}ResponseHeader")
    for tag, value in (("Version", "1.8.1"), ("TaskDescription", "Second unblinded read"),
                       ("SeriesInstanceUid", series_uid), ("StudyInstanceUID", study_uid)):
        ET.SubElement(header, f"{ns}{tag}").text = value
    for s, session in enumerate(sessions):
        element = ET.SubElement(root, f"{ns}readingSession")
        ET.SubElement(element, f"{ns}annotationVersion").text = "3.12"
        reader = next((a.reader for a in session if a.reader), f"reader{s + 1}")
        ET.SubElement(element, f"{ns}servicingRadiologistID").text = reader
        for annotation in session:
            _write_nodule(element, annotation, ns)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)
    return Path(path)


def _write_nodule(parent: ET.Element, annotation: ReaderAnnotation, ns: str) -> None:
    nodule = ET.SubElement(parent, f"{ns}unblindedReadNodule")
    ET.SubElement(nodule, f"{ns}noduleID").text = annotation.nodule_id
    characteristics = ET.SubElement(nodule, f"{ns}characteristics")
    for name in RATINGS:
        ET.SubElement(characteristics, f"{ns}{name}").text = str(int(annotation.ratings[name]))
    for contour in annotation.contours:
        roi = ET.SubElement(nodule, f"{ns}roi")
        ET.SubElement(roi, f"{ns}imageZposition").text = f"{contour.z_mm:.6f}"
        ET.SubElement(roi, f"{ns}imageSOP_UID").text = contour.sop_uid
        ET.SubElement(roi, f"{ns}inclusion").text = "TRUE" if contour.inclusion else "FALSE"
        for x, y in np.asarray(contour.points).tolist():
            edge = ET.SubElement(roi, f"{ns}edgeMap")
            ET.SubElement(edge, f"{ns}xCoord").text = str(int(x))
            ET.SubElement(edge, f"{ns}yCoord").text = str(int(y))
