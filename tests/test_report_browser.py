"""``report.html`` in headless Chromium (Playwright): offline load, sliders, toggles, sorting, print view, screenshot.

Needs ``pip install playwright`` (the ``dev`` extra) and Debian's ``/usr/bin/chromium`` (``apt-get install
chromium``); ``playwright install`` is not used. ``LDOCTOR_WRITE_SCREENSHOT=1`` also writes
``docs/report_screenshot.png``.
"""

from __future__ import annotations

import copy
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ldoctor.report.render import write_report
from tests.helpers import ROOT
from tests.test_report_render import BASE64_PNG, HOSTILE_FINDING, example_copy, hostile_report

CHROMIUM = Path("/usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'")
if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} not found: apt-get install chromium (playwright's own download is not used)",
                allow_module_level=True)


@dataclass
class Loaded:
    """A page opened from ``file://`` and what it did: request URLs, console errors, dialogs."""

    page: sync_api.Page
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


def edge_report():
    """The hostile-names report plus a nodule 10 of 9 mm (its index and diameter sort wrongly as text)."""
    report, media = hostile_report()
    extra = {**copy.deepcopy(report["tumor"]["nodules"][1]), "index": 10, "diameter_mm": 9.0,
             "diameter_source": "LIDC readers' outlines"}
    report["tumor"]["nodules"].append(extra)
    media.nodule_slices[10], media.nodule_heat[10] = media.nodule_slices[2], media.nodule_heat[2]
    return report, media


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reports")
    example, edge = example_copy(), edge_report()
    return {"example": (example[0], write_report(*example, folder / "example")[1]),
            "edge": (edge[0], write_report(*edge, folder / "edge")[1])}


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


def open_page(browser, path: Path) -> Loaded:
    page = browser.new_page(viewport={"width": 1000, "height": 1200})
    loaded = Loaded(page)
    page.on("request", lambda request: loaded.requests.append(request.url))
    page.on("console", lambda message: loaded.errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: loaded.errors.append(str(error)))
    page.on("dialog", lambda dialog: (loaded.dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(path.as_uri(), wait_until="load")
    return loaded


@pytest.fixture()
def example(browser, reports):
    """The example report's page and its report dict; fails the test on any console error it logged."""
    loaded = open_page(browser, reports["example"][1])
    yield loaded, reports["example"][0]
    assert loaded.errors == []
    loaded.page.close()


def test_page_loads_from_file_without_any_network_request_or_error(example, reports):
    loaded, report = example
    page = loaded.page
    page.fill("#nodule-1-slider", "0")  # the script runs (its CSP hash matches) and loads other images
    page.select_option("#gradcam-select", page.locator("#gradcam-select option").nth(2).get_attribute("value"))
    page.wait_for_timeout(100)
    assert loaded.requests[0] == reports["example"][1].as_uri()
    assert [url for url in loaded.requests if not url.startswith(("file:", "data:"))] == []
    assert [url for url in loaded.requests if url.startswith("file:")] == [reports["example"][1].as_uri()]
    assert loaded.errors == [] and loaded.dialogs == []
    assert page.title() == f"Case report {report['case']['pseudonym']}"
    live = BASE64_PNG.sub("", page.content())  # the DOM after the script ran: no path of where it was opened
    assert "file:" not in live and str(reports["example"][1].parent) not in live


def test_slice_slider_shows_one_slice_at_a_time_with_its_heat_map(example):
    page = example[0].page
    stack = stack_of(page, "1")
    start = int(page.get_attribute("#nodule-1-slider", "value"))
    assert page.get_attribute("#nodule-1-slice", "src") == stack["slices"][start]
    for k in (0, len(stack["slices"]) - 1, 3):
        page.fill("#nodule-1-slider", str(k))
        assert page.get_attribute("#nodule-1-slice", "src") == stack["slices"][k]
        assert page.get_attribute("#nodule-1-overlay", "src") == stack["heatmaps"][k]
        assert page.inner_text("#nodule-1-slice-number") == str(k + 1)
    assert len(set(stack["slices"])) == len(stack["slices"])  # the slices differ: the src really changed
    assert page.get_attribute("#nodule-2-slice", "src") == stack_of(page, "2")["slices"][start]  # other untouched


def stack_of(page, index: str) -> dict:
    return page.evaluate(f"JSON.parse(document.getElementById('report-data').textContent).nodules['{index}']")


def test_overlay_toggle_hides_and_shows_the_heat_map(example):
    page = example[0].page
    assert page.is_visible("#nodule-1-overlay") and page.is_checked("#nodule-1-overlay-toggle")
    page.uncheck("#nodule-1-overlay-toggle")
    assert page.is_hidden("#nodule-1-overlay") and page.is_visible("#nodule-1-slice")
    assert page.is_visible("#nodule-2-overlay")
    page.check("#nodule-1-overlay-toggle")
    assert page.is_visible("#nodule-1-overlay")


def test_gradcam_choice_shows_one_map_labelled_attention_not_localisation(example):
    page, report = example[0].page, example[1]
    mapped = [f["name"] for f in report["disease"]["findings"] if f["heatmap"]]
    assert [n for n in mapped if page.is_visible(f"#gradcam-{n}")] == mapped[:1]
    page.select_option("#gradcam-select", mapped[2])
    assert [n for n in mapped if page.is_visible(f"#gradcam-{n}")] == mapped[2:3]
    page.select_option("#gradcam-select", "")
    assert not any(page.is_visible(f"#gradcam-{n}") for n in mapped)
    assert "attention, not localisation" in page.inner_text("#radiograph-figure")


def shown(page, name: str) -> tuple[str, float, float, str]:
    prefix = f"#finding-{name}-"
    return (page.inner_text(prefix + "label"), float(page.inner_text(prefix + "sens")),
            float(page.inner_text(prefix + "spec")), page.inner_text(prefix + "threshold-value"))


def test_threshold_slider_relabels_the_finding_and_interpolates_the_validation_curve(example):
    page, report = example[0].page, example[1]
    (effusion,) = [f for f in report["disease"]["findings"] if f["name"] == "Effusion"]
    assert effusion["positive"] and shown(page, "Effusion")[0] == "positive"
    curve = np.array(effusion["curve"])
    above = int(np.searchsorted(curve[:, 0], effusion["probability"]))
    below = above - 2
    for t in [(curve[above, 0] + curve[above + 1, 0]) / 2, (curve[below, 0] + 3 * curve[below + 1, 0]) / 4, 0.99, 0.0]:
        page.fill("#finding-Effusion-threshold", repr(float(t)))
        label, sensitivity, specificity, value = shown(page, "Effusion")
        assert label == ("positive" if effusion["probability"] >= t else "negative"), t
        assert sensitivity == pytest.approx(np.interp(t, curve[:, 0], curve[:, 1]), abs=5e-4 + 1e-9)
        assert specificity == pytest.approx(np.interp(t, curve[:, 0], curve[:, 2]), abs=5e-4 + 1e-9)
        assert value == f"{t:.3f}"
    page.fill("#finding-Effusion-threshold", repr(float(curve[above, 0])))
    label, sensitivity, specificity, _ = shown(page, "Effusion")  # exactly on a validation point
    assert (label, sensitivity, specificity) == ("negative", pytest.approx(curve[above, 1], abs=5e-4 + 1e-9),
                                                 pytest.approx(curve[above, 2], abs=5e-4 + 1e-9))
    assert page.inner_text("#finding-Cardiomegaly-label") == "positive"  # the other findings keep theirs


def row_ids(page, table: str) -> list[str]:
    return page.eval_on_selector_all(f"#{table} tbody tr", "rows => rows.map(r => r.id)")


def test_clicking_a_header_sorts_the_rows_and_again_reverses_them(example):
    page, report = example[0].page, example[1]
    findings = report["disease"]["findings"]
    headers = page.locator("#finding-table thead th")
    assert row_ids(page, "finding-table") == [f"finding-{f['name']}-row" for f in findings]
    headers.nth(0).click()
    by_name = [f"finding-{n}-row" for n in sorted(f["name"] for f in findings)]
    assert row_ids(page, "finding-table") == by_name
    headers.nth(0).click()
    assert row_ids(page, "finding-table") == by_name[::-1]
    headers.nth(1).click()
    assert row_ids(page, "finding-table") == [f"finding-{f['name']}-row" for f in findings[::-1]]


def test_numbers_sort_numerically_and_hostile_names_stay_text(browser, reports):
    loaded = open_page(browser, reports["edge"][1])
    page = loaded.page
    headers = page.locator("#nodule-table thead th")
    headers.nth(1).click()  # diameter: 9.0 before 14.2 (as text, "14.2" < "9.0"); "not measured" last
    assert row_ids(page, "nodule-table") == ["nodule-10-row", "nodule-1-row", "nodule-2-row"]
    headers.nth(0).click()  # index: 1, 2, 10 (as text 1, 10, 2)
    assert row_ids(page, "nodule-table") == ["nodule-1-row", "nodule-2-row", "nodule-10-row"]
    first = page.locator("#finding-table tbody tr").nth(0)
    assert first.locator("td.name").inner_text() == HOSTILE_FINDING
    first.locator("input[type=range]").fill("1")
    assert first.locator(".flag").inner_text() == "negative"
    assert loaded.dialogs == [] and loaded.errors == []
    loaded.page.close()


def test_print_view_hides_the_controls_and_keeps_the_slice_and_the_text(example):
    page = example[0].page
    page.emulate_media(media="print")
    for hidden in ("#nodule-1-slider", "#nodule-1-overlay-toggle", "#finding-Effusion-threshold"):
        assert page.is_hidden(hidden), hidden
    for visible in ("#nodule-1-slice", "#nodule-1-slice-number", "#disclaimer", "#finding-Effusion-label",
                    "#finding-Effusion-threshold-value", "#model-validation", "#gradcam-select"):  # names the map
        assert page.is_visible(visible), visible


def test_screenshot_is_not_blank(example, browser):
    page = example[0].page
    image = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    pixels = np.asarray(image)
    assert image.width == 1000 and image.height > 2000
    assert len(image.getcolors(1 << 24)) > 500 and pixels.std() > 30
    top = pixels[: pixels.shape[0] // 2]  # images, not only text: a range of greys in the CT / radiograph half
    assert len(np.unique(top.reshape(-1, 3)[:, 0])) > 200
    if os.environ.get("LDOCTOR_WRITE_SCREENSHOT") == "1":
        # README's picture: the report LDOCTOR_SCREENSHOT_OF names (make demo's), else this example; top of the page
        shown = os.environ.get("LDOCTOR_SCREENSHOT_OF")
        if shown:
            page = open_page(browser, Path(shown)).page
            image = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
        target = ROOT / "docs" / "report_screenshot.png"
        target.parent.mkdir(exist_ok=True)
        top = image.crop((0, 0, image.width, min(image.height, 1700)))
        top.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
        assert target.stat().st_size < 300_000, target.stat().st_size
