"""The ``disease`` section: a radiograph's findings, calibrated, against validation operating points, with Grad-CAM.

Per finding: the probability after the checkpoint's calibration (temperature or isotonic, fitted on validation by
:class:`~ldoctor.callbacks.OperatingPoints`), the operating threshold chosen on validation with its validation
sensitivity and specificity, ``positive`` (probability >= threshold) and ``review`` (probability within
:data:`REVIEW_MARGIN` of the threshold: low confidence). Each positive or review finding gets a Grad-CAM map
(``monai.visualize.GradCAM`` on the trunk's last stage at full input sizes, a deeper-resolved stage on small ones
(:mod:`ldoctor.report.cam`), the score being that finding's sigmoid, scaled to ``[0, 1]`` by
:func:`~ldoctor.report.images.unit_normalise`): attention, not localisation. A finding whose map holds no positive
evidence gets none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ldoctor.report.cam import cam_stage, grad_cam
from ldoctor.report.images import grey_png, heat_png
from ldoctor.report.schema import ATTENTION_NOTE

#: A finding whose calibrated probability is this close to its threshold is flagged for review.
REVIEW_MARGIN = 0.05
#: Side of the radiograph and its heat maps in the page, pixels.
DISPLAY_SIZE = 256


@dataclass
class DiseaseMedia:
    """The section's images: the radiograph as the model saw it (grey PNG) and a heat-map PNG per flagged finding."""

    radiograph: bytes
    heat: dict[str, bytes] = field(default_factory=dict)


def rule_text(rule: str | None) -> str:
    """How the thresholds were chosen, in words (:func:`ldoctor.evaluation.calibration.choose_threshold`'s rules)."""
    if rule == "youden":
        return "Youden's J (sensitivity + specificity - 1) maximised on validation"
    if rule and rule.startswith("sensitivity:"):
        return f"the highest threshold with validation sensitivity >= {rule.split(':', 1)[1]}"
    return "chosen on validation"


class _FindingProbabilities(nn.Module):
    """``[B, 3, H, W]`` -> the task's per-finding sigmoid ``[B, K]`` (the score Grad-CAM differentiates)."""

    def __init__(self, net: nn.Module, task: str) -> None:
        super().__init__()
        self.net, self.task = net, task

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net.forward_task(self.task, {"image": image}))


def disease_section(net: nn.Module, task: str, class_names: list[str], image: torch.Tensor, display: np.ndarray,
                    points: dict[str, Any] | None) -> tuple[dict[str, Any], DiseaseMedia]:
    """Score one radiograph.

    Args:
        net: the multi-task net (eval mode).
        task: the finding task's name.
        class_names: its findings, in output order.
        image: the model input ``float32 [3, S, S]`` (ImageNet-normalised).
        display: the same image as grey ``[S, S]`` in ``[0, 1]`` (before normalisation), for the page.
        points: the task's operating points from the checkpoint (:func:`ldoctor.callbacks.read_operating_points`),
            or ``None`` (then probabilities are uncalibrated and no threshold is claimed).

    Returns:
        the ``disease`` entry of ``report.json`` and the images.
    """
    from ldoctor.evaluation.calibration import Calibration  # noqa: PLC0415

    with torch.no_grad():
        logits = net.forward_task(task, {"image": image[None]}).float()
    raw = torch.sigmoid(logits)[0].tolist()
    calibration = Calibration.from_dict(points["calibration"]) if points else None
    probs = calibration.apply(logits)[0].tolist() if calibration is not None else raw
    columns = {c["name"]: c for c in points["columns"]} if points else {}
    findings = []
    for k, name in enumerate(class_names):
        point = columns.get(name, {})
        threshold = point.get("threshold")
        positive = threshold is not None and probs[k] >= threshold
        review = threshold is not None and abs(probs[k] - threshold) < REVIEW_MARGIN
        findings.append({
            "name": name, "probability": probs[k], "uncalibrated": raw[k], "threshold": threshold,
            "sensitivity": point.get("sensitivity"), "specificity": point.get("specificity"),
            "positive": bool(positive), "review": bool(review), "curve": point.get("curve", []),
            "reason": point.get("reason") if threshold is None else None, "heatmap": False,
        })
    flagged = [k for k, f in enumerate(findings) if f["positive"] or f["review"]]
    stage = cam_stage(net.trunk, image[None])
    media = DiseaseMedia(grey_png(display, DISPLAY_SIZE))
    for k in flagged:
        heat = grad_cam(_FindingProbabilities(net, task), image[None], stage, k)[0]
        if heat.max() > 0:  # all zero: no positive evidence at this stage, nothing to draw
            findings[k]["heatmap"] = True
            media.heat[class_names[k]] = heat_png(heat, DISPLAY_SIZE)
    findings.sort(key=lambda f: -f["probability"])
    section = {
        "calibration": calibration.method if calibration is not None else "none",
        "threshold_rule": rule_text(points.get("rule")) if points else
        "none stored in the checkpoint (no operating point claimed)",
        "review_margin": REVIEW_MARGIN,
        "attention_note": ATTENTION_NOTE,
        "gradcam_stage": stage,
        "findings": findings,
    }
    return section, media
