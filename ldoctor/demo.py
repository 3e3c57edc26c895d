"""``make demo``: train the embedded default experiment and print a per-task validation table.

    python -m ldoctor.demo                      # configs/demo.yaml
    python -m ldoctor.demo --trainer.max_epochs=1  # any LightningCLI override
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ldoctor.cli import LDoctorCLI

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
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


def main(argv: list[str] | None = None) -> LDoctorCLI:
    argv = sys.argv[1:] if argv is None else argv
    start = time.perf_counter()
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
