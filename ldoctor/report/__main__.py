"""``python -m ldoctor.report CASE_DIR --ckpt model.ckpt --out OUT_DIR``: a case report in one command.

Writes ``OUT_DIR/report.json`` and ``OUT_DIR/report.html`` (several case folders: one sub-folder per case, named by
its pseudonym) and prints the HTML path. An input that could not be used is named in full on stderr (the report
itself names files by pseudonym only). The same as ``train.py predict`` with ``CaseDataModule`` and
``ReportWriter`` (``configs/report.yaml``), for people who do not write configs. Runs on the CPU unless
``--accelerator`` says otherwise; the checkpoint is read with ``weights_only=True`` (never code).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lightning as L


def main(argv: list[str] | None = None) -> list[Path]:
    """Parse the command line, write the reports, return the HTML paths."""
    parser = argparse.ArgumentParser(prog="python -m ldoctor.report", description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="+", help="case folder(s): ct/ + candidates.csv, radiograph.png|.dcm, "
                                                 "history.json or mimic/ (any subset)")
    parser.add_argument("--ckpt", required=True, help="the trained model's .ckpt (from train.py fit)")
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--interactions", help="drug-interaction CSV: atc3_a, atc3_b[, severity]")
    parser.add_argument("--atc-names", help="ATC-3 names CSV: atc3, name")
    parser.add_argument("--accelerator", default="cpu")
    args = parser.parse_args(argv)

    from datamodules.cases import CaseDataModule  # noqa: PLC0415
    from ldoctor.module import MultiTaskModule  # noqa: PLC0415
    from ldoctor.report.writer import ReportWriter  # noqa: PLC0415

    data = CaseDataModule(args.cases, args.ckpt)
    model = MultiTaskModule.load_from_checkpoint(args.ckpt, map_location="cpu")
    writer = ReportWriter(args.out, per_case_folders=len(args.cases) > 1, interactions=args.interactions,
                          atc_names=args.atc_names)
    trainer = L.Trainer(accelerator=args.accelerator, devices=1, logger=False, callbacks=[writer],
                        enable_progress_bar=False, enable_model_summary=False, inference_mode=False,
                        default_root_dir=args.out)
    trainer.predict(model, datamodule=data, return_predictions=False)
    for case in data.cases:  # in full, on the user's terminal only (the report names files by pseudonym)
        for what, message in case.problems:
            sys.stderr.write(f"{case.folder}: {what} left out of the report: {message}\n")
    for path in writer.written:
        sys.stdout.write(f"{path}\n")
    return writer.written


if __name__ == "__main__":
    main()
