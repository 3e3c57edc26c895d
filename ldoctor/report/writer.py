"""``ReportWriter``: a ``BasePredictionWriter`` that turns predictions on case folders into reports.

Used with :class:`~datamodules.cases.CaseDataModule`. Each batch is one case's input for one task; the
writer takes the model's point predictions from ``predict_step`` and adds what a reader needs with the same model
(test-time augmentation band and Grad-CAM for nodules; calibration, operating points and Grad-CAM for findings;
continued / new / stopped medication classes and interactions), then writes ``report.json`` and ``report.html`` per
case when prediction ends (``<output_dir>/<case pseudonym>/``, or ``output_dir`` itself with one case and
``per_case_folders=False``).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from ldoctor.report.schema import DISCLAIMER, SCHEMA_VERSION

log = logging.getLogger(__name__)


class ReportWriter(BasePredictionWriter):
    """Write one report per case.

    Args:
        output_dir: where the reports go (created).
        per_case_folders: one sub-folder per case, named by its pseudonym; ``False`` writes a single case's report
            into ``output_dir`` itself.
        interactions: a drug-interaction CSV (``atc3_a, atc3_b[, severity]``) for the drug section.
        atc_names: an ATC-3 name CSV (``atc3, name``).
        seed: seeds the test-time augmentation (the same case and model give the same report).
    """

    def __init__(self, output_dir: str, per_case_folders: bool = True, interactions: str | None = None,
                 atc_names: str | None = None, seed: int = 0) -> None:
        super().__init__(write_interval="batch")
        self.output_dir, self.per_case_folders, self.seed = Path(output_dir), per_case_folders, seed
        self.interactions_path, self.atc_names_path = interactions, atc_names
        self.written: list[Path] = []
        self._sections: dict[int, dict[str, Any]] = {}
        self._media: dict[int, dict[str, Any]] = {}

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from ldoctor.report.drug import read_atc_names, read_interactions  # noqa: PLC0415

        self._interactions = read_interactions(self.interactions_path) if self.interactions_path else None
        self._names = read_atc_names(self.atc_names_path) if self.atc_names_path else None
        self._sections.clear()
        self._media.clear()

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any,
                           batch_indices: Any, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        dm = trainer.datamodule
        spec = dm.tasks[dataloader_idx]
        kind = dm.info.settings.get(spec.name, {}).get("input")
        case = dm.cases[batch["case"]]
        net = pl_module.net
        probabilities = prediction["probabilities"].detach().float().cpu()
        if kind == "ct_nodule":
            from ldoctor.report.tumor import tumor_section  # noqa: PLC0415
            from ldoctor.transforms import ct  # noqa: PLC0415

            settings = dm.info.settings[spec.name]
            views = ct.nodule_postprocess(None, settings["views"], settings["view_channels"])
            tta = ct.nodule_postprocess(ct.CTAugmentation(), settings["views"], settings["view_channels"])
            section, media = tumor_section(net, spec.name, case.nodules, list(batch["cube"]), views, tta, settings,
                                           probabilities[:, 0].tolist(), self.seed)
            self._store(batch["case"], "tumor", section, media)
        elif kind == "radiograph":
            from ldoctor.report.disease import disease_section  # noqa: PLC0415

            section, media = disease_section(net, spec.name, list(spec.class_names), batch["image"][0],
                                             batch["display"].numpy(), dm.info.points.get(spec.name))
            self._store(batch["case"], "disease", section, media)
        elif kind == "history":
            from ldoctor.report.drug import drug_section  # noqa: PLC0415

            source = Path(self.interactions_path).name if self.interactions_path else None
            section = drug_section(probabilities[0].tolist(), list(spec.class_names), case.history,
                                   self._interactions, source, self._names)
            self._store(batch["case"], "drug", section, None)

    def _store(self, case: int, section: str, content: dict, media: Any) -> None:
        if section in self._sections.setdefault(case, {}):
            raise ValueError(f"two tasks of the model fill the report's {section} section; expected one per section")
        self._sections[case][section] = content
        self._media.setdefault(case, {})[section] = media

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from ldoctor.report.render import write_report  # noqa: PLC0415

        dm = trainer.datamodule
        if not self.per_case_folders and len(dm.cases) != 1:
            raise ValueError(f"per_case_folders=False writes one case's report; got {len(dm.cases)} cases")
        for index, case in enumerate(dm.cases):
            sections, media = self._sections.get(index, {}), self._media.get(index, {})
            report = {
                "schema": SCHEMA_VERSION,
                "case": {"pseudonym": dm.case_name(index), "inputs": case.inputs},
                "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
                "disclaimer": DISCLAIMER,
                "model": dm.info.card(),
                "problems": [{"input": what, "message": _redacted(message)} for what, message in case.problems],
                "tumor": sections.get("tumor"), "disease": sections.get("disease"), "drug": sections.get("drug"),
            }
            folder = self.output_dir / dm.case_name(index) if self.per_case_folders else self.output_dir
            _, html = write_report(report, to_report_media(media), folder)
            self.written.append(html)
            log.info("report written: %s", _redacted(str(html)) if self.per_case_folders else html)


def _redacted(text: str) -> str:
    from ldoctor.privacy import redact  # noqa: PLC0415

    return redact(text)


def to_report_media(media: dict[str, Any]) -> Any:
    """The sections' images as the renderer's :class:`~ldoctor.report.render.ReportMedia`."""
    from ldoctor.report.render import ReportMedia  # noqa: PLC0415

    tumor, disease = media.get("tumor") or {}, media.get("disease")
    return ReportMedia(
        nodule_slices={i: m.slices for i, m in tumor.items()},
        nodule_heat={i: m.heat for i, m in tumor.items()},
        radiograph=disease.radiograph if disease is not None else None,
        finding_heat=dict(disease.heat) if disease is not None else {},
    )
