"""``report.json``: the versioned schema of a case report (what a hospital system consumes).

Version :data:`SCHEMA_VERSION` (``"ldoctor.report/1"``). Every key below is always present; a task the case has no
input for is ``null``. Probabilities are in ``[0, 1]``; sizes in mm. Nothing identifies the patient: the case is
named by a salted pseudonym (:mod:`ldoctor.privacy`), no DICOM UID, MIMIC id, file path or real date is written.
Images (CT slices, heat maps, the radiograph) are only in ``report.html``; the JSON names them by index.

.. code-block:: text

    schema            "ldoctor.report/1"
    case              {"pseudonym": "case-3fa2c9e1d0", "inputs": ["ct", "radiograph", "history"]}
    generated         "2026-12-02" (the report's own date, UTC; no patient date)
    disclaimer        "Research use only. Not a medical device: ..."
    model             {"version": "sha256:<16 hex>" (of the checkpoint file), "trunk": "resnet50",
                       "tasks": [names], "trained": "2026-11-30" | null, "training_data": {task: text},
                       "validation": {task: {metric: value}}}
    problems          [{"input": "ct" | "radiograph" | "history" | "nodules", "message": text}]
                      (inputs that could not be used; the rest of the report stands)
    tumor             null | {
                        "method": "16 test-time augmentations (...)",   (how the band was obtained)
                        "nodules": [{
                          "index": 1, "center_mm": [x, y, z] (world, scanner frame), "diameter_mm": d | null,
                          "diameter_source": "candidate list" | null,   (where diameter_mm comes from)
                          "measured_diameter_mm": d | null,   (sphere-equivalent, measured on the CT here)
                          "probability": p,               (the model's, on the un-augmented views)
                          "interval": [low, high],        (2.5 / 97.5 % of the augmented views' probabilities,
                                                           widened to include p)
                          "slices": n,                    (axial slices shown in the HTML stack)
                          "heatmap": bool,                (its Grad-CAM overlay shows positive evidence)
                          "category": "insufficient inputs",  (no Lung-RADS / Fleischner from a probability)
                          "category_reason": text}]}
    disease           null | {
                        "calibration": "temperature" | "isotonic" | "none",
                        "threshold_rule": text (e.g. "youden": Youden's J on validation),
                        "review_margin": m,
                        "attention_note": "attention, not localisation",
                        "gradcam_stage": "layer4",        (the trunk stage Grad-CAM read)
                        "findings": [{                    (sorted by probability, highest first)
                          "name": "Effusion",
                          "probability": p,               (calibrated)
                          "uncalibrated": p0,
                          "threshold": t | null,          (chosen on validation, calibrated scale; null when
                                                           validation had one class, see "reason")
                          "sensitivity": s, "specificity": q,   (validation, at t)
                          "reason": text | null,
                          "positive": p >= t,
                          "review": bool,                 (p within review_margin of t: low confidence)
                          "curve": [[t, sensitivity, specificity], ...],  (validation operating points,
                                                                      thresholds ascending, for the slider)
                          "heatmap": bool}]}              (a Grad-CAM map is in the HTML for this finding)
    drug              null | {
                        "admissions": n,                  (in the history, the current one included)
                        "threshold": t,
                        "recommended": [{"atc3": "N02B", "name": "Other analgesics and antipyretics" | null,
                                         "probability": p, "status": "continued" | "new"}],
                        "stopped": [{"atc3", "name", "probability"}],   (previous admission's, not recommended)
                        "interactions": [{"a": atc3, "b": atc3, "severity": text | null}],
                        "interaction_table": "user table <name>" | "none supplied"}
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = "ldoctor.report/1"
DISCLAIMER = (
    "Research use only. Not a medical device: not cleared or approved for diagnosis or treatment; every finding "
    "must be confirmed by a qualified clinician."
)
INSUFFICIENT = "insufficient inputs"
ATTENTION_NOTE = "attention, not localisation"
TOP_KEYS = ("schema", "case", "generated", "disclaimer", "model", "problems", "tumor", "disease", "drug")


def check_report(report: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the first key that breaks the schema (a cheap structural check)."""
    missing = [k for k in TOP_KEYS if k not in report]
    if missing:
        raise ValueError(f"report lacks {missing}; schema {SCHEMA_VERSION} has {list(TOP_KEYS)}")
    if report["schema"] != SCHEMA_VERSION:
        raise ValueError(f"report schema {report['schema']!r}; expected {SCHEMA_VERSION!r}")
    for finding in (report["disease"] or {}).get("findings", []):
        for key in ("name", "probability", "threshold", "sensitivity", "specificity", "positive", "review", "curve",
                    "heatmap"):
            if key not in finding:
                raise ValueError(f"disease finding {finding.get('name')!r} lacks {key!r}")
    for nodule in (report["tumor"] or {}).get("nodules", []):
        for key in ("index", "probability", "interval", "diameter_mm", "measured_diameter_mm", "slices", "category",
                    "category_reason"):
            if key not in nodule:
                raise ValueError(f"tumor nodule {nodule.get('index')!r} lacks {key!r}")
