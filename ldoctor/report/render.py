"""``report.html``: one self-contained, interactive page per case, rendered from ``report.json`` and the images.

The page makes no network request of any kind: CSS and JS are inline, images are base64 ``data:image/png`` URIs,
and a Content-Security-Policy meta (``default-src 'none'``, images from ``data:`` only, the one inline script
allowed by its SHA-256 hash) makes the browser refuse anything else. It opens from a USB stick or an e-mail
attachment, prints on paper (sliders and toggles hidden, the current slice shown) and works without a server.

Text comes from the report dict only, through Jinja2 with autoescaping; the data the script needs (slice URIs,
finding curves) sit in a ``<script type="application/json">`` block with ``<``, ``>`` and ``&`` written as
``\\u003c`` etc., so no string in the report can close it.

Size: the base64 PNGs are nearly all of it (4/3 of their bytes); markup, CSS, JS and the findings' curves are
~35 kB. Each nodule's slices and heat maps are inlined once (in the data block; the middle slice a second time, as
the image shown before the script runs). The example's 2 nodules x 16 slices of 64 px, 256 px radiograph and 3
Grad-CAM maps come to ~0.25 MB; real CT noise compresses worse, so expect up to ~2x that.

Example:
    >>> from ldoctor.report.example import example_report
    >>> report, media = example_report()
    >>> json_path, html_path = write_report(report, media, out_dir)  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from ldoctor.report.schema import ATTENTION_NOTE, SCHEMA_VERSION, check_report

JSON_NAME = "report.json"
HTML_NAME = "report.html"
#: Written in every page's ``<head>``; :func:`write_report` overwrites only an HTML file that carries it.
GENERATOR = "ldoctor report"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class ReportMedia:
    """The images of one case report (PNG files as bytes); :func:`render_html` checks them against the report.

    Attributes:
        nodule_slices: per nodule ``index`` (as in ``tumor.nodules``), its axial slices, top to bottom: grey
            PNGs (``L`` mode), as many as the nodule's ``slices``, all the same size.
        nodule_heat: per nodule ``index``, one heat-map overlay per slice (same length and size): RGBA PNGs,
            transparent where cold (:func:`ldoctor.report.images.heat_png` makes one from a ``[H, W]`` map).
        radiograph: the chest radiograph as a grey PNG; ``None`` when the report has no ``disease``.
        finding_heat: per finding ``name`` with ``heatmap: true``, its Grad-CAM overlay: an RGBA PNG of the
            radiograph's size, transparent where cold.
    """

    nodule_slices: dict[int, list[bytes]] = field(default_factory=dict)
    nodule_heat: dict[int, list[bytes]] = field(default_factory=dict)
    radiograph: bytes | None = None
    finding_heat: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        pngs = [("radiograph", self.radiograph)] if self.radiograph is not None else []
        pngs += [(f"finding {name!r} heat map", png) for name, png in self.finding_heat.items()]
        for kind, stacks in (("slice", self.nodule_slices), ("heat map", self.nodule_heat)):
            pngs += [(f"nodule {i} {kind} {k}", png) for i, stack in stacks.items() for k, png in enumerate(stack)]
        for what, png in pngs:
            if not isinstance(png, bytes) or not png.startswith(_PNG_SIGNATURE):
                raise ValueError(f"ReportMedia: {what} is not PNG bytes; encode arrays with ldoctor.report.images")


def render_html(report: dict[str, Any], media: ReportMedia) -> str:
    """The self-contained ``report.html`` page (a ``str``) of ``report`` (checked by ``check_report``).

    Raises:
        ValueError: the report breaks the schema, holds a NaN / infinite number, or ``media`` does not match it
            (a nodule's slice count, a finding's Grad-CAM map, a missing radiograph); the message names which.
    """
    check_report(report)
    _check_finite(report, "report")
    _check_names(report)
    _check_media(report, media)
    ids = finding_ids([f["name"] for f in (report["disease"] or {}).get("findings", [])])
    drugs = (report["drug"] or {}).get("recommended", []) + (report["drug"] or {}).get("stopped", [])
    script = _script()
    return _environment().get_template("report.html.j2").render(
        r=report, ids=ids, media=_media_uris(media), attention_note=ATTENTION_NOTE, generator=GENERATOR,
        atc_names={d["atc3"]: d["name"] for d in drugs if d.get("name")},
        csp=Markup(_csp(script)), data=Markup(_script_json(_page_data(report, media, ids))), script=Markup(script),
    )


def write_report(report: dict[str, Any], media: ReportMedia, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.json`` (indent 2) and ``report.html`` into ``out_dir`` (created); returns their paths.

    Each file is written to a temporary file in ``out_dir`` and moved into place (``os.replace``), so a reader
    never sees half a report. A previous ldoctor report is overwritten; any other file under either name is not.

    Raises:
        FileExistsError: ``out_dir`` holds a ``report.json`` / ``report.html`` that is not an ldoctor report
            (nothing is written).
        ValueError: as :func:`render_html`.
    """
    out_dir = Path(out_dir)
    html = render_html(report, media)
    text = json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    json_path, html_path = out_dir / JSON_NAME, out_dir / HTML_NAME
    for path in (json_path, html_path):
        if path.is_symlink() or (path.exists() and not _is_ldoctor_report(path)):
            raise FileExistsError(f"{path}: exists and is not an ldoctor report; move it or pick another folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(json_path, text)
    _write_atomic(html_path, html)
    return json_path, html_path


def finding_ids(names: list[str]) -> dict[str, str]:
    """Per finding name, the safe, unique part of its element ids (``Pleural_Thickening`` stays as it is).

    Characters outside ``[A-Za-z0-9_-]`` become ``-``; a name whose result is taken gets ``-2``, ``-3`` ...
    """
    ids: dict[str, str] = {}
    for name in names:
        base = re.sub(r"[^A-Za-z0-9_-]", "-", name) or "-"
        candidate, k = base, 1
        while candidate in ids.values():
            k += 1
            candidate = f"{base}-{k}"
        ids[name] = candidate
    return ids


def _check_finite(value: Any, where: str) -> None:
    """Raise ``ValueError`` naming the first NaN / infinite number (JSON has none: write ``null`` for unknown)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} is {value}; report.json takes null for an unknown value")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for k, item in enumerate(value):
            _check_finite(item, f"{where}[{k}]")


def _check_names(report: dict[str, Any]) -> None:
    """Raise ``ValueError`` unless nodule indices are distinct integers and finding names distinct (they name the
    page's elements and the images)."""
    indices = [n["index"] for n in (report["tumor"] or {}).get("nodules", [])]
    if any(type(i) is not int for i in indices) or len(set(indices)) != len(indices):
        raise ValueError(f"tumor nodule indices {indices}: expected distinct integers")
    names = [f["name"] for f in (report["disease"] or {}).get("findings", [])]
    if len(set(names)) != len(names):
        raise ValueError(f"disease finding names {names}: a name appears twice")


def _check_media(report: dict[str, Any], media: ReportMedia) -> None:
    """Raise ``ValueError`` where ``media`` does not hold exactly the images ``report`` names."""
    nodules = {n["index"]: n["slices"] for n in (report["tumor"] or {}).get("nodules", [])}
    for index in sorted(set(media.nodule_slices) | set(media.nodule_heat), key=str):
        if index not in nodules:
            raise ValueError(f"ReportMedia has images for nodule {index!r}; the report's nodules are {list(nodules)}")
    for index, count in nodules.items():
        slices, heat = media.nodule_slices.get(index, []), media.nodule_heat.get(index, [])
        if len(slices) != count or len(heat) != count:
            raise ValueError(f"nodule {index}: report says {count} slices; ReportMedia has {len(slices)} slices "
                             f"and {len(heat)} heat maps")
    findings = (report["disease"] or {}).get("findings", [])
    mapped = {f["name"] for f in findings if f.get("heatmap")}
    if set(media.finding_heat) != mapped:
        raise ValueError(f"Grad-CAM maps for {sorted(media.finding_heat)}; the report's findings with "
                         f"heatmap: true are {sorted(mapped)}")
    if (report["disease"] is not None) != (media.radiograph is not None):
        raise ValueError("ReportMedia.radiograph must be given exactly when the report has a disease section")


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _media_uris(media: ReportMedia) -> dict[str, Any]:
    """What the page shows before the script runs: per nodule its middle slice (``start``) with heat map, the
    radiograph and the Grad-CAM maps."""
    start = {i: len(stack) // 2 for i, stack in media.nodule_slices.items() if stack}
    return {
        "start": start,
        "slice": {i: _uri(media.nodule_slices[i][k]) for i, k in start.items()},
        "heatmap": {i: _uri(media.nodule_heat[i][k]) for i, k in start.items()},
        "radiograph": _uri(media.radiograph) if media.radiograph is not None else None,
        "gradcam": {name: _uri(png) for name, png in media.finding_heat.items()},
    }


def _page_data(report: dict[str, Any], media: ReportMedia, ids: dict[str, str]) -> dict[str, Any]:
    """The data block the script reads: slice URIs per nodule, curves per finding."""
    nodules = {
        str(i): {"slices": [_uri(p) for p in stack], "heatmaps": [_uri(p) for p in media.nodule_heat[i]]}
        for i, stack in media.nodule_slices.items()
    }
    findings = [
        {"id": ids[f["name"]], "name": f["name"], "probability": f["probability"], "threshold": f["threshold"],
         "curve": f["curve"]}
        for f in (report["disease"] or {}).get("findings", [])
    ]
    return {"schema": SCHEMA_VERSION, "nodules": nodules, "findings": findings}


def _script_json(data: dict[str, Any]) -> str:
    """JSON for a ``<script type="application/json">`` block: no ``<``, ``>`` or ``&`` that HTML could read."""
    text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _csp(script: str) -> str:
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; "
            "base-uri 'none'; form-action 'none'")


@lru_cache(maxsize=1)
def _environment() -> Environment:
    environment = Environment(loader=PackageLoader("ldoctor", "report/templates"), autoescape=True,
                              undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters["num"] = _number
    environment.filters["percent"] = lambda x: f"{100 * min(max(float(x), 0.0), 1.0):.1f}%"
    return environment


def _number(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals; ``None`` as a dash; anything else as its text."""
    if value is None:
        return "\u2014"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.{digits}f}"
    return str(value)


@lru_cache(maxsize=1)
def _script() -> str:
    """The page's one inline script (its hash goes into the CSP, so it is inserted verbatim)."""
    environment = _environment()
    source = environment.loader.get_source(environment, "report.js")[0]  # type: ignore[union-attr]
    if "</" in source:
        raise ValueError("report.js must not contain '</': it would end the inline <script>")
    return source


def _is_ldoctor_report(path: Path) -> bool:
    """Whether ``path`` is a report this module wrote (``report.json`` of our schema, a page with our marker)."""
    if not path.is_file():
        return False
    if path.name == JSON_NAME:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError):
            return False
        return isinstance(data, dict) and str(data.get("schema", "")).startswith("ldoctor.report/")
    with path.open("rb") as handle:
        head = handle.read(4096)
    return f'<meta name="generator" content="{GENERATOR}">'.encode() in head


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in its folder and ``os.replace``."""
    handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, path.stat().st_mode & 0o777 if path.exists() else 0o644)  # not mkstemp's 0600
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
