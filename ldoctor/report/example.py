"""A synthetic, schema-valid case report with all three tasks: for tests, and for a look at the page.

Nothing in it comes from a patient: the CT slices are a drawn blob, the radiograph is drawn ellipses, the numbers are
seeded draws. Example:

    >>> from ldoctor.report.example import example_report
    >>> from ldoctor.report.render import write_report
    >>> report, media = example_report(seed=0)
    >>> write_report(report, media, "example-report")  # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ldoctor.datasets.nih import CHESTXRAY14_FINDINGS
from ldoctor.report.images import heat_png, png_bytes
from ldoctor.report.render import ReportMedia
from ldoctor.report.schema import ATTENTION_NOTE, DISCLAIMER, INSUFFICIENT, SCHEMA_VERSION

#: The findings the example flags positive (each with a Grad-CAM map) and where on the radiograph their map sits
#: (row, column as fractions of the image).
FLAGGED = {"Cardiomegaly": (0.62, 0.55), "Effusion": (0.78, 0.25), "Pleural_Thickening": (0.22, 0.72)}
#: Recommended ATC-3 classes: code, name, status.
RECOMMENDED = [
    ("B01A", "Antithrombotic agents", "continued"),
    ("C07A", "Beta blocking agents", "continued"),
    ("A02B", "Drugs for peptic ulcer and gastro-oesophageal reflux disease (GORD)", "continued"),
    ("N02B", "Other analgesics and antipyretics", "new"),
    ("M01A", "Anti-inflammatory and antirheumatic products, non-steroids", "new"),
    ("C09A", "ACE inhibitors, plain", "continued"),
    ("C03C", "High-ceiling diuretics", "new"),
]
STOPPED = [("N05B", "Anxiolytics"), ("J01D", "Other beta-lactam antibacterials")]
INTERACTIONS = [("B01A", "M01A", "major: bleeding risk"), ("C09A", "C03C", None)]


def example_report(seed: int = 0, slices: int = 12, size: int = 64,
                   radiograph_size: int = 256) -> tuple[dict[str, Any], ReportMedia]:
    """A report dict (schema ``ldoctor.report/1``) and its images, reproducible for a ``seed``.

    Args:
        seed: the draws (probabilities, blob positions, noise).
        slices: axial slices per nodule (2 nodules), each ``size`` x ``size`` px.
        radiograph_size: side of the square radiograph in px; 3 findings are flagged, each with a Grad-CAM map.
    """
    rng = np.random.default_rng(seed)
    tumor, nodule_slices, nodule_heat = _tumor(rng, slices, size)
    disease = _disease(rng)
    radiograph, gradcam = _radiograph(rng, radiograph_size)
    report = {
        "schema": SCHEMA_VERSION,
        "case": {"pseudonym": f"case-{rng.bytes(5).hex()}", "inputs": ["ct", "radiograph", "history"]},
        "generated": "2026-01-02",
        "disclaimer": DISCLAIMER,
        "model": _model(rng),
        "problems": [{"input": "nodules", "message": "candidate 3 lies outside the CT volume; left out"}],
        "tumor": tumor,
        "disease": disease,
        "drug": _drug(rng),
    }
    media = ReportMedia(nodule_slices=nodule_slices, nodule_heat=nodule_heat, radiograph=radiograph,
                        finding_heat=gradcam)
    return report, media


def _model(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "version": f"sha256:{rng.bytes(8).hex()}",
        "trunk": "resnet18",
        "tasks": ["tumor", "disease", "drug"],
        "trained": "2026-01-01",
        "training_data": {"tumor": "LIDC-IDRI nodules (synthetic example)",
                          "disease": "NIH ChestX-ray14 (synthetic example)",
                          "drug": "MIMIC-III admissions (synthetic example)"},
        "validation": {"tumor": {"auroc": 0.81, "brier": 0.17}, "disease": {"auroc_mean": 0.76},
                       "drug": {"jaccard": 0.45, "f1": 0.6, "ddi_rate": 0.07}},
    }


def _tumor(rng: np.random.Generator, slices: int, size: int) -> tuple[dict, dict, dict]:
    nodules, stacks, heatmaps = [], {}, {}
    for index, (diameter, source) in enumerate([(14.2, "candidate list"), (None, None)], start=1):
        probability = float(rng.uniform(0.55, 0.8) if index == 1 else rng.uniform(0.1, 0.3))
        nodules.append({
            "index": index, "center_mm": [round(float(c), 1) for c in rng.uniform(-150, 150, 3)],
            "diameter_mm": diameter, "diameter_source": source,
            "measured_diameter_mm": 13.6 if index == 1 else None, "probability": round(probability, 3),
            "interval": [round(probability - float(rng.uniform(0.05, 0.15)), 3),
                         round(probability + float(rng.uniform(0.05, 0.15)), 3)],
            "slices": slices, "category": INSUFFICIENT,
            "category_reason": "Lung-RADS and Fleischner need the nodule's type, growth and the patient's risk, "
                               "not a malignancy probability",
        })
        stacks[index], heatmaps[index] = _nodule_images(rng, slices, size, radius=size * (0.18 if diameter else 0.1))
    return {"method": "test-time augmentation: 8 views", "nodules": nodules}, stacks, heatmaps


def _nodule_images(rng: np.random.Generator, slices: int, size: int, radius: float) -> tuple[list, list]:
    """Axial slices ``[size, size]`` through a bright blob in darker lung, and heat maps around it."""
    y, x = np.mgrid[0:size, 0:size]
    cy, cx = rng.uniform(0.35, 0.65, 2) * size
    lung = 40 + 25 * _smooth_noise(rng, size)
    images, heat = [], []
    for k in range(slices):
        background = lung + 120 * np.exp(-((x - (0.15 + 0.01 * k) * size) / 3.0) ** 2)  # a vessel, moving
        dz = (k - (slices - 1) / 2) / max((slices - 1) / 2, 1) * radius * 1.4
        r = math.sqrt(max(radius**2 - dz**2, 0.0))
        distance = np.hypot(y - cy, x - cx)
        blob = 170 * np.clip(r + 1 - distance, 0, 1) if r > 0 else 0 * distance
        images.append(png_bytes(np.clip(background + blob, 0, 255).astype(np.uint8)))
        hot = np.exp(-(distance / (1.5 * radius)) ** 2 - (dz / radius) ** 2)
        heat.append(heat_png(hot))
    return images, heat


def _smooth_noise(rng: np.random.Generator, size: int, cells: int = 8) -> np.ndarray:
    """Noise in ``[0, 1]`` ``[size, size]``, smooth over ``size / cells`` px (small as a PNG)."""
    coarse = rng.random((cells + 1, cells + 1))
    grid = np.linspace(0, cells, size)
    rows = np.array([np.interp(grid, np.arange(cells + 1), line) for line in coarse])
    return np.array([np.interp(grid, np.arange(cells + 1), column) for column in rows.T]).T


def _disease(rng: np.random.Generator) -> dict[str, Any]:
    findings = []
    for name in CHESTXRAY14_FINDINGS:
        curve = _curve(separation=float(rng.uniform(0.8, 2.0)), offset=float(rng.uniform(-1.5, 0.5)))
        best = max(curve, key=lambda point: point[1] + point[2])  # Youden's J
        threshold = best[0]
        if name in FLAGGED:
            probability = threshold + float(rng.uniform(0.05, 0.25))
        elif name == "Nodule":
            probability = threshold - 0.02  # close to its threshold: marked for review
        else:
            probability = threshold * float(rng.uniform(0.2, 0.85))
        probability = round(min(probability, 0.9), 3)
        findings.append({
            "name": name, "probability": probability,
            "uncalibrated": round(float(np.clip(probability + rng.normal(0, 0.04), 0, 1)), 3),
            "threshold": threshold, "sensitivity": best[1], "specificity": best[2],
            "positive": probability >= threshold, "review": abs(probability - threshold) < 0.03,
            "curve": curve, "heatmap": name in FLAGGED,
        })
    findings.sort(key=lambda f: -f["probability"])
    return {"calibration": "temperature", "threshold_rule": "Youden's J on validation",
            "attention_note": ATTENTION_NOTE, "findings": findings}


def _curve(separation: float, offset: float, points: int = 20) -> list[list[float]]:
    """Validation operating points ``[threshold, sensitivity, specificity]`` of a binormal model, ascending.

    Negatives score ``N(0, 1)``, positives ``N(separation, 1)``; threshold ``t`` cuts at
    ``logit(t) - offset + separation / 2`` (Youden's J is best near ``logit(t) = offset``).
    """
    curve = []
    for t in np.linspace(0.05, 0.95, points):
        score = math.log(t / (1 - t)) - offset + separation / 2
        sensitivity = 0.5 * math.erfc((score - separation) / math.sqrt(2))
        specificity = 0.5 * math.erfc(-score / math.sqrt(2))
        curve.append([round(float(t), 4), round(sensitivity, 4), round(specificity, 4)])
    return curve


def _radiograph(rng: np.random.Generator, size: int) -> tuple[bytes, dict[str, bytes]]:
    """A drawn chest radiograph ``[size, size]`` (two dark lungs, spine, heart) and the flagged findings' maps."""
    y, x = np.mgrid[0:size, 0:size] / size
    image = 170 + 30 * _smooth_noise(rng, size, cells=16)
    for cx in (0.3, 0.7):
        image -= 110 * (((x - cx) / 0.17) ** 2 + ((y - 0.5) / 0.32) ** 2 < 1)
    image += 60 * np.exp(-((x - 0.5) / 0.04) ** 2) + 50 * np.exp(-(((x - 0.55) / 0.12) ** 2 + ((y - 0.65) / 0.1) ** 2))
    radiograph = png_bytes(np.clip(image, 0, 255).astype(np.uint8))
    gradcam = {name: heat_png(np.exp(-(((y - cy) / 0.1) ** 2 + ((x - cx) / 0.1) ** 2)))
               for name, (cy, cx) in FLAGGED.items()}
    return radiograph, gradcam


def _drug(rng: np.random.Generator) -> dict[str, Any]:
    probabilities = np.sort(rng.uniform(0.5, 0.97, len(RECOMMENDED)))[::-1]
    return {
        "admissions": 3,
        "threshold": 0.5,
        "recommended": [{"atc3": code, "name": name, "probability": round(float(p), 3), "status": status}
                        for (code, name, status), p in zip(RECOMMENDED, probabilities)],
        "stopped": [{"atc3": code, "name": name, "probability": round(float(rng.uniform(0.05, 0.45)), 3)}
                    for code, name in STOPPED],
        "interactions": [{"a": a, "b": b, "severity": severity} for a, b, severity in INTERACTIONS],
        "interaction_table": "user table example_ddi",
    }
