"""``report.json`` / ``report.html`` writing without a browser: self-contained page, escaping, size, safe writes."""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import json
import math
import os
import re
from html.parser import HTMLParser

import pytest

from ldoctor.report import render
from ldoctor.report.example import example_report
from ldoctor.report.render import ReportMedia, finding_ids, render_html, write_report
from ldoctor.report.schema import check_report

HOSTILE_FINDING = "<script>alert(1)</script>"
HOSTILE_TEXTS = ['"><img src=x onerror=alert(2)>', "</script><script>alert(3)</script>", "a & b <c>"]
BASE64_PNG = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")


class Page(HTMLParser):
    """The tags (with attributes) and the text of each ``<script>`` and ``<style>`` of a page."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.styles: list[str] = []
        self._open: str | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "style"):
            self._open = tag
            (self.scripts.append((dict(attrs), "")) if tag == "script" else self.styles.append(""))

    def handle_endtag(self, tag):
        self._open = None

    def handle_data(self, data):
        if self._open == "script":
            self.scripts[-1] = (self.scripts[-1][0], self.scripts[-1][1] + data)
        elif self._open == "style":
            self.styles[-1] += data

    def by_id(self, element_id: str) -> tuple[str, dict[str, str | None]]:
        (found,) = [t for t in self.tags if t[1].get("id") == element_id]
        return found

    def data_block(self) -> dict:
        (text,) = [text for attrs, text in self.scripts if attrs.get("id") == "report-data"]
        return json.loads(text)


@functools.cache
def _example() -> tuple[dict, ReportMedia]:
    return example_report(seed=0)


def example_copy() -> tuple[dict, ReportMedia]:
    """A copy of ``example_report(seed=0)`` to change (drawing the images again takes a while)."""
    return copy.deepcopy(_example())


@pytest.fixture()
def example():
    return example_copy()


def hostile_report() -> tuple[dict, ReportMedia]:
    """The example with a flagged finding named ``<script>alert(1)</script>`` and markup in other texts."""
    report, media = example_copy()
    finding = report["disease"]["findings"][0]
    assert finding["heatmap"]
    media.finding_heat[HOSTILE_FINDING] = media.finding_heat.pop(finding["name"])
    finding["name"] = HOSTILE_FINDING
    report["problems"].append({"input": "history", "message": HOSTILE_TEXTS[0]})
    report["drug"]["recommended"][0]["name"] = HOSTILE_TEXTS[1]
    report["case"]["pseudonym"] = HOSTILE_TEXTS[2]
    return report, media


def test_report_json_round_trips_and_passes_the_schema_check(example, tmp_path):
    report, media = example
    json_path, html_path = write_report(report, media, tmp_path / "case")
    assert (json_path.name, html_path.name) == ("report.json", "report.html")
    written = json.loads(json_path.read_text(encoding="utf-8"))
    assert written == report
    check_report(written)
    assert json_path.read_text(encoding="utf-8").startswith('{\n  "schema": "ldoctor.report/1"')  # indent 2


def test_page_is_self_contained_under_a_strict_content_security_policy(example):
    html = render_html(*example)
    page = Page(html)
    (csp,) = [a["content"] for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp.startswith("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-")
    (code,) = [text for attrs, text in page.scripts if "type" not in attrs]  # the one script that runs
    digest = base64.b64encode(hashlib.sha256(code.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp  # the browser runs it, and nothing else
    assert "<link" not in html.lower() and "@import" not in html and "@font-face" not in html
    for tag, attrs in page.tags:
        for name in ("src", "href", "srcset", "action", "poster", "data"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith(("data:image/png;base64,", "#")), (tag, name, value[:80])
    assert "url(" not in html
    for url in re.findall(r"(?:https?:)?//[\w.-]+", BASE64_PNG.sub("", html)):  # no scheme-relative URL either
        pytest.fail(f"page names {url}")


def test_page_shows_every_section_with_the_reports_values(example):
    report, media = example
    page = Page(render_html(report, media))
    ids = {a.get("id") for _, a in page.tags}
    for element in ("header", "disclaimer", "problems", "tumor", "disease", "drug", "model", "finding-table",
                    "nodule-table", "drug-recommended", "drug-stopped", "drug-interactions", "model-validation",
                    "radiograph", "gradcam-select"):
        assert element in ids, element
    for nodule in report["tumor"]["nodules"]:
        i = nodule["index"]
        tag, slider = page.by_id(f"nodule-{i}-slider")
        assert (slider["type"], slider["min"], slider["max"]) == ("range", "0", str(nodule["slices"] - 1))
        start = int(slider["value"])
        assert page.by_id(f"nodule-{i}-slice")[1]["src"] == render._uri(media.nodule_slices[i][start])
        assert page.by_id(f"nodule-{i}-overlay")[1]["src"] == render._uri(media.nodule_heat[i][start])
        assert page.by_id(f"nodule-{i}-overlay-toggle")[1]["type"] == "checkbox"
    data = page.data_block()
    assert [len(data["nodules"][str(n["index"])]["slices"]) for n in report["tumor"]["nodules"]] == [12, 12]
    rows = [a["id"] for t, a in page.tags if t == "tr" and (a.get("id") or "").startswith("finding-")]
    assert rows == [f"finding-{f['name']}-row" for f in report["disease"]["findings"]]  # highest probability first
    assert len(rows) == 14 and "finding-Pleural_Thickening-row" in rows
    for finding in report["disease"]["findings"]:
        slider = page.by_id(f"finding-{finding['name']}-threshold")[1]
        assert float(slider["value"]) == finding["threshold"]
    gradcams = [a["id"] for t, a in page.tags if "gradcam" in (a.get("class") or "")]
    assert gradcams == [f"gradcam-{f['name']}" for f in report["disease"]["findings"] if f["heatmap"]]
    assert sum(f["positive"] for f in report["disease"]["findings"]) == 3


def test_hostile_strings_are_escaped_in_the_page_and_in_its_data_block():
    report, media = hostile_report()
    html = render_html(report, media)
    for raw in [HOSTILE_FINDING, *HOSTILE_TEXTS]:
        assert raw not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown as text
    assert html.lower().count("<script") == 2  # the data block and the page's own script, nothing injected
    page = Page(html)
    (block,) = [text for attrs, text in page.scripts if attrs.get("id") == "report-data"]
    assert not set("<>&") & set(block)
    assert page.data_block()["findings"][0]["name"] == HOSTILE_FINDING  # the JSON decodes to the real name
    for _, attrs in page.tags:
        if "id" in attrs:
            assert re.fullmatch(r"[A-Za-z0-9_-]+", attrs["id"]), attrs["id"]


def test_finding_ids_are_safe_and_unique():
    names = ["Pleural_Thickening", "Pleural Thickening", "Pleural-Thickening", "", HOSTILE_FINDING, "Émphysème"]
    ids = finding_ids(names)
    assert ids["Pleural_Thickening"] == "Pleural_Thickening"
    assert ids["Pleural Thickening"] == "Pleural-Thickening"
    assert ids["Pleural-Thickening"] == "Pleural-Thickening-2"
    assert len(set(ids.values())) == len(names)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", i) for i in ids.values())


def test_page_of_two_16_slice_nodules_and_a_radiograph_stays_small():
    report, media = example_report(seed=1, slices=16, size=64, radiograph_size=256)
    size = len(render_html(report, media).encode("utf-8"))
    images = sum(map(len, [media.radiograph, *media.finding_heat.values()]))
    images += sum(len(p) for stacks in (media.nodule_slices, media.nodule_heat) for s in stacks.values() for p in s)
    assert size < 400_000, size
    assert size < 4 / 3 * images + 60_000  # the base64 images are what it weighs; markup, CSS and JS are small


def test_refuses_to_overwrite_a_file_that_is_not_an_ldoctor_report(example, tmp_path):
    for name, foreign in [("report.html", "<html>my notes</html>"), ("report.json", '{"schema": "other/1"}'),
                          ("report.json", "not json")]:
        folder = tmp_path / f"{name}-{len(foreign)}"
        folder.mkdir()
        (folder / name).write_text(foreign)
        with pytest.raises(FileExistsError, match=re.escape(str(folder / name))):
            write_report(*example, folder)
        assert (folder / name).read_text() == foreign
        assert sorted(p.name for p in folder.iterdir()) == [name]  # neither file written
    folder = tmp_path / "link"
    folder.mkdir()
    (tmp_path / "target.txt").write_text("keep")
    (folder / "report.html").symlink_to(tmp_path / "target.txt")
    with pytest.raises(FileExistsError, match="not an ldoctor report"):
        write_report(*example, folder)
    assert (tmp_path / "target.txt").read_text() == "keep"


def previous(example: tuple[dict, ReportMedia]) -> tuple[dict, ReportMedia]:
    report, media = copy.deepcopy(example)
    report["case"]["pseudonym"] = "case-0000000000"
    return report, media


def test_a_previous_report_is_replaced_and_no_temporary_file_is_left(example, tmp_path):
    write_report(*previous(example), tmp_path)
    json_path, html_path = write_report(*example, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.json"]
    assert json.loads(json_path.read_text())["case"] == example[0]["case"]
    assert oct(html_path.stat().st_mode & 0o777) == "0o644"


def test_a_failed_write_keeps_the_previous_report_and_leaves_no_temporary_file(example, tmp_path, monkeypatch):
    write_report(*previous(example), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_report(*example, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_output_holds_nothing_but_the_report_no_path_or_planted_identifier(example, tmp_path):
    planted = ["LIDC-IDRI-0001", "1.3.6.1.4.1.14519.5.2.1.6279", "subject_id", "10006", "00000001_000"]
    folders = [tmp_path / f"{planted[0]}_{planted[1]}", tmp_path / f"{planted[2]}={planted[3]}" / planted[4]]
    written = [write_report(*example, folder) for folder in folders]
    texts = [[p.read_bytes() for p in paths] for paths in written]
    assert texts[0] == texts[1]  # the output does not depend on where (or when) it is written
    json_text, html = (b.decode("utf-8") for b in texts[0])
    assert json.loads(json_text) == example[0]
    readable = BASE64_PNG.sub("", html) + json_text
    for needle in [str(tmp_path), "file:", os.sep + "tmp", *planted]:
        assert needle not in readable, needle


def test_media_that_does_not_match_the_report_is_refused(example):
    report, media = example
    short = copy.copy(media)
    short.nodule_slices = {**media.nodule_slices, 1: media.nodule_slices[1][:-1]}
    with pytest.raises(ValueError, match="nodule 1: report says 12 slices; ReportMedia has 11"):
        render_html(report, short)
    missing = copy.copy(media)
    missing.finding_heat = dict(list(media.finding_heat.items())[1:])
    with pytest.raises(ValueError, match="heatmap: true"):
        render_html(report, missing)
    with pytest.raises(ValueError, match="radiograph is not PNG bytes"):
        ReportMedia(radiograph=b"GIF89a")


def test_repeated_names_are_refused_they_would_share_element_ids(example):
    report, media = example
    report["disease"]["findings"][1]["name"] = report["disease"]["findings"][0]["name"]
    with pytest.raises(ValueError, match="appears twice"):
        render_html(report, media)
    report, media = example_copy()
    report["tumor"]["nodules"][1]["index"] = "1 onmouseover"
    with pytest.raises(ValueError, match="distinct integers"):
        render_html(report, media)


def test_a_nan_in_the_report_is_refused_naming_its_key(example):
    report = copy.deepcopy(example[0])
    report["model"]["validation"]["tumor"]["auroc"] = math.nan
    with pytest.raises(ValueError, match=r"report\.model\.validation\.tumor\.auroc is nan"):
        render_html(report, example[1])


def test_a_case_without_inputs_for_any_task_renders_each_absence(example):
    report = example[0]
    report.update(tumor=None, disease=None, drug=None)
    report["case"]["inputs"] = []
    html = render_html(report, ReportMedia())
    for text in ("No CT in this case", "No radiograph in this case", "No admission history in this case"):
        assert text in html
    assert Page(html).data_block() == {"schema": "ldoctor.report/1", "nodules": {}, "findings": []}
