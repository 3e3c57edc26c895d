"""Expected calibration error before and after the checkpoint's calibration, on validation and on test patients.

The calibration (temperature scaling per output, fitted by ``OperatingPoints`` on the validation patients of the
run) is read from the checkpoint; validation ECE before/after comes from the same state (after = in-sample, on the
data it was fitted on). The test patients (the config's test split, never used for fitting or choosing anything) are
predicted here and scored once, before and after applying that calibration. ECE: 15 equal-width bins per output
column, averaged over the columns with both classes among the scored patients (Guo et al., ICML 2017).

    python benchmarks/calibration.py --config configs/demo.yaml --ckpt outputs/demo/checkpoints/last.ckpt \\
        --out outputs/bench_calibration/demo.json [LightningCLI overrides, e.g. the data roots]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ldoctor.callbacks.operating_points import read_operating_points
from ldoctor.cli import LDoctorCLI
from ldoctor.demo import DEMO_ROOTS
from ldoctor.evaluation.bootstrap import paired_bootstrap
from ldoctor.evaluation.calibration import Calibration, expected_calibration_error
from ldoctor.evaluation.report import write_result
from ldoctor.module import MultiTaskModule


def mean_defined(values: np.ndarray) -> float | None:
    kept = [float(v) for v in np.asarray(values, dtype=float) if np.isfinite(v)]
    return float(np.mean(kept)) if kept else None


def test_logits(module: MultiTaskModule, task: str, loader) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[N, K]`` logits, labels (NaN = unknown) and the ``[N]`` patient of each sample of ``task`` over ``loader``.

    The patient comes from the sample id: MIMIC ``"<subject_id>/<hadm_id>"``, NIH ``"<patient>_<follow-up>.png"``.
    """
    logits, labels, patients = [], [], []
    with torch.no_grad():
        for batch in loader:
            logits.append(module.net.forward_task(task, batch).float())
            labels.append(batch["label"].float())
            patients += [str(i).split("/")[0] if "/" in str(i) else str(i).split("_")[0] for i in batch["id"]]
    return torch.cat(logits).numpy(), torch.cat(labels).numpy(), np.asarray(patients)


def ece_reduction(labels: np.ndarray, after: np.ndarray, before: np.ndarray, patients: np.ndarray) -> dict:
    """ECE before - ECE after (positive: calibration helped), with a 95 % paired patient-bootstrap interval."""
    def negative_ece(y: np.ndarray, p: np.ndarray) -> float:  # higher is better, as paired_bootstrap wants
        ece = mean_defined(expected_calibration_error(p, y))
        return -ece if ece is not None else float("nan")

    return paired_bootstrap(labels, after, before, patients, metric=negative_ece, valid=None, draws=2000, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--out", default=None)
    args, overrides = parser.parse_known_args()
    roots = [f"{a}={r}" for a, r in DEMO_ROOTS.items()] if args.config.endswith("demo.yaml") else []
    cli = LDoctorCLI(args=["--config", args.config, *roots, *overrides], run=False)
    module = MultiTaskModule.load_from_checkpoint(args.ckpt, map_location="cpu").eval()
    state = read_operating_points(torch.load(args.ckpt, map_location="cpu", weights_only=True))
    if state is None:
        raise SystemExit(f"{args.ckpt}: no OperatingPoints state; train with ldoctor.callbacks.OperatingPoints")
    dm = cli.datamodule
    result: dict = {"checkpoint_epoch": state["epoch"], "method": None, "tasks": {}}
    for task, fitted in state["tasks"].items():
        calibration = Calibration.from_dict(fitted["calibration"])
        result["method"] = calibration.method
        entry = {"val_patients_n": fitted["n"], "val_ece_before": mean_defined(fitted["ece_before"]),
                 "val_ece_after_in_sample": mean_defined(fitted["ece_after"])}
        member = dm.member(task)
        member.setup("test")
        if member.test_dataset is not None:
            logits, labels, patients = test_logits(module, task, member.test_dataloader())
            before = torch.sigmoid(torch.as_tensor(logits)).numpy()
            after = calibration.apply(torch.as_tensor(logits)).numpy()
            entry.update(test_n=len(labels), test_patients=len(set(patients)),
                         test_ece_before=mean_defined(expected_calibration_error(before, labels)),
                         test_ece_after=mean_defined(expected_calibration_error(after, labels)),
                         test_ece_reduction=ece_reduction(labels, after, before, patients))
        result["tasks"][task] = entry
    lines = [f"{'task':<10}{'val before':>12}{'val after*':>12}{'test before':>13}{'test after':>12}{'test n':>8}"]
    for task, e in result["tasks"].items():
        cells = [e.get(k) for k in ("val_ece_before", "val_ece_after_in_sample", "test_ece_before", "test_ece_after")]
        lines.append(f"{task:<10}" + "".join(f"{c:>12.4f} " if c is not None else f"{'-':>12} " for c in cells)
                     + f"{e.get('test_n', '-'):>7}")
    for task, e in result["tasks"].items():
        if "test_ece_reduction" in e:
            r = e["test_ece_reduction"]
            lines.append(f"{task}: test ECE reduction {r['difference']:+.4f} [{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}] "
                         f"(paired patient bootstrap, {e['test_patients']} patients)")
    lines.append("* in-sample: fitted and scored on the same validation patients")
    write_result(result, args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
