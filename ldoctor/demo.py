"""``make demo``: train the embedded default experiment and print a per-task validation table.

    python -m ldoctor.demo                         # configs/demo.yaml
    python -m ldoctor.demo --trainer.max_epochs=1  # any LightningCLI override

Everything it reads is real public data shipped in ``ldoctor/demo_data`` (nothing is downloaded): LIDC-IDRI CT
crops of 303 scored nodules (``lidc-real``), 837 ChestX-ray14 radiographs (``nih-cxr14-64``) and the MIMIC-III
demo (``mimic3-demo``). The data roots are set to the shipped folders unless the command line overrides them.
It ends by writing the case report (``report.html`` + ``report.json``) of a composite validation case from the last
checkpoint and printing its path.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np

from ldoctor.cli import LDoctorCLI

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
DEMO_DATA = Path(__file__).resolve().parent / "demo_data"
#: The shipped folder each data root points at, by its LightningCLI argument.
DEMO_ROOTS = {
    "--data.init_args.datamodules.tumor.init_args.source.init_args.root": DEMO_DATA / "lidc-real" / "lidc-slices",
    "--data.init_args.datamodules.disease.init_args.root": DEMO_DATA / "nih-cxr14-64",
}
log = logging.getLogger("ldoctor.demo")
TABLE_METRICS = ("auroc", "accuracy", "f1", "sensitivity", "specificity", "jaccard", "prauc", "ddi_rate", "avg_drugs")


def validation_table(metrics: dict, tasks: list[str]) -> str:
    """Rows = tasks, columns = the metrics any task reported (``val/{task}/{metric}``)."""
    columns = [m for m in TABLE_METRICS if any(f"val/{t}/{m}" in metrics for t in tasks)]
    lines = [f"{'task':<10}" + "".join(f"{c:>13}" for c in columns)]
    for task in tasks:
        cells = []
        for column in columns:
            value = metrics.get(f"val/{task}/{column}")
            cells.append(f"{float(value):>13.3f}" if value is not None else f"{'-':>13}")
        lines.append(f"{task:<10}" + "".join(cells))
    return "\n".join(lines)


def run_paths(cli: LDoctorCLI) -> list[str]:
    """Where the checkpoint, the CSV log and the W&B run of a finished run are."""
    lines = []
    callback = cli.trainer.checkpoint_callback
    if callback is not None:
        path = callback.best_model_path or callback.last_model_path
        lines.append(f"checkpoint: {path}")
    for logger in cli.trainer.loggers:
        name = type(logger).__name__
        if name == "CSVLogger":
            lines.append(f"CSV log:    {Path(logger.log_dir) / 'metrics.csv'}")
        elif name == "WandbLogger":
            lines.append(f"W&B run:    {logger.experiment.dir} (offline; upload with `wandb sync`)")
    return lines


def data_lines(cli: LDoctorCLI) -> list[str]:
    """Where each task's data came from (the folder a task DataModule reads)."""
    lines = []
    for task in cli.model.task_names:
        member = cli.datamodule.member(task)
        source = getattr(member, "source", None)
        root = getattr(source, "root", None) or getattr(member, "root", None) or getattr(member, "mimic_dir", None)
        lines.append(f"{'data ' + task + ':':<14}{type(member).__name__} reading {root}")
    return lines


def unscored_lines(cli: LDoctorCLI) -> list[str]:
    """For each multilabel task, which labels its macro AUROC left out: those without both a positive and a
    negative validation sample, where AUROC is undefined (:class:`ldoctor.metrics.classification.DefinedMacroAUROC`)."""
    lines = []
    for task in cli.model.task_names:
        spec, member = cli.model.task_specs[task], cli.datamodule.member(task)
        if spec.kind != "multilabel" or not hasattr(member, "labels"):
            continue
        y = np.asarray(member.labels("val"), dtype=float)
        undefined = [name for c, name in enumerate(spec.class_names)
                     if not ((y[:, c] == 1).any() and (y[:, c] == 0).any())]
        scored = len(spec.class_names) - len(undefined)
        left_out = f"; left out (one class only in validation): {', '.join(undefined)}" if undefined else ""
        lines.append(f"{task} auroc: macro over {scored} of {len(spec.class_names)} labels{left_out}")
    return lines


def main(argv: list[str] | None = None) -> LDoctorCLI:
    argv = sys.argv[1:] if argv is None else argv
    start = time.perf_counter()
    roots = [f"{arg}={root}" for arg, root in DEMO_ROOTS.items() if not any(a.startswith(arg) for a in argv)]
    argv = [*roots, *argv]
    cli = LDoctorCLI(args=["fit", "--config", str(DEMO_CONFIG), *argv])
    minutes = (time.perf_counter() - start) / 60
    metrics = {k: v for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}
    report = [
        "",
        f"ldoctor demo finished in {minutes:.1f} min ({cli.trainer.current_epoch} epochs, "
        f"{cli.trainer.global_step} steps). Validation, last epoch:",
        validation_table(metrics, cli.model.task_names),
        *unscored_lines(cli),
        "",
        *data_lines(cli),
        *run_paths(cli),
    ]
    sys.stdout.write("\n".join(report) + "\n")
    if cli.trainer.current_epoch > 0:
        sys.stdout.write(f"case report: {write_report(cli)}\n")
    return cli


def write_report(cli: LDoctorCLI) -> Path:
    """The report of the composite validation case (:mod:`ldoctor.report.demo_case`) from the last checkpoint, in
    ``<default_root_dir>/report/`` (the case folder beside it, in ``case/``)."""
    from ldoctor.report.__main__ import main as report  # noqa: PLC0415
    from ldoctor.report.demo_case import write_demo_case  # noqa: PLC0415

    root = Path(cli.trainer.default_root_dir)
    case = write_demo_case(cli.datamodule, root / "case")
    (last,) = [c for c in cli.trainer.checkpoint_callbacks if c.filename == "last"]  # written every epoch
    checkpoint = Path(last.dirpath) / "last.ckpt"
    (html,) = report([str(case), "--ckpt", str(checkpoint), "--out", str(root / "report")])
    return html


if __name__ == "__main__":
    main()
