"""The 1v3 claim measured: one trunk shared by three tasks against one model per task, same steps, same data.

    python benchmarks/one_vs_three.py --out r.json
    python benchmarks/one_vs_three.py --tumor-slices DIR --tumor-test-slices DIR --out r.json

Tasks (real data):
  tumor    LIDC-IDRI nodule malignancy on real CT crops (``lidc-slices`` layout; default: the shipped subset,
           patient split 70/15/15 by seed; with ``--tumor-test-slices`` the test is that folder);
  disease  ChestX-ray14, 14 findings on the 837 shipped NIH images (64 px, patient split by seed), and, as a
           second disease variant, PneumoniaMNIST (tests on the file's validation split, validates on 10 % of its
           training images);
  drug     MIMIC-III demo medication (ATC-3) recommendation, tested on its locked test patients.

Protocol: every model trains ``--epochs`` x ``--steps-per-epoch`` optimiser steps; a step holds ``--tumor-batch``
nodules, ``--disease-batch`` images and ``--drug-batch`` admissions drawn with replacement from the training
splits (``MultiTaskDataModule.steps_per_epoch`` with the per-task batches), in the 1v3 model all three in one
step, in a single-task model only its own. So each task sees the same samples per step and the same number of
steps, in the same order (the same sampler seeds). The weights of the last step are scored (nothing is chosen on
validation or test). AdamW, cosine schedule over the epochs, the same seed for every model.

Per task on its test patients: the single-task model, the 1v3 model and the difference 1v3 - single with a 95 %
paired patient-bootstrap interval (DeLong's test beside it for the binary AUROCs). Metrics: tumor AUROC (readers'
mean malignancy > 3 vs < 3); disease macro AUROC over the findings with at least 5 positive test images (listed);
PneumoniaMNIST AUROC; drug mean per-admission Jaccard at the 0.5 threshold (SafeDrug's protocol).

Weighting strategies on the same tasks, steps and seed (1v3 with ChestX-ray14): ``equal``, ``static`` (fixed
``w_t`` = 1 / the mean binary entropy of task t's training labels, the loss of the prevalence predictor, scaled to
sum to the task count; chosen from training labels before any training), ``uncertainty`` (Kendall et al., CVPR
2018; the mission's default, reported as ``multi``), ``dwa``, ``gradnorm``, ``pcgrad``.

The patient-bootstrap intervals cover the test patients, not training randomness: the 1v3 model's other tasks
consume the random stream (dropout masks, initialisation), so even a task whose head never calls the trunk trains
differently in it. ``--spread-tasks`` retrains single-task models with other seeds to show that spread beside the
difference.

The MIMIC-III demo has no images, so the drug head never calls the trunk: any drug difference comes from the
shared optimisation (the weighting's scale on the drug loss), not from shared features.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from datamodules.chestxray14 import ChestXray14DataModule
from datamodules.lidc import LIDCDataModule
from datamodules.medmnist import MedMNISTDataModule
from datamodules.mimic import MIMICDrugDataModule
from datamodules.multitask import MultiTaskDataModule
from ldoctor.datamodule import TaskDataModule
from ldoctor.datasets.lidc import SliceStacks
from ldoctor.datasets.nih import NIH_DEMO
from ldoctor.evaluation.bootstrap import paired_bootstrap
from ldoctor.evaluation.delong import delong_paired
from ldoctor.evaluation.multilabel import macro_auroc, pairs_in_every_column, scored_findings, with_folds
from ldoctor.evaluation.prediction import predict
from ldoctor.evaluation.report import write_result
from ldoctor.losses import DWA, DrugLoss, EqualWeighting, GradNorm, PCGrad, StaticWeighting, UncertaintyWeighting
from ldoctor.metrics import DrugMetrics
from ldoctor.metrics.drug import DrugJaccard
from ldoctor.models.heads import DrugHead
from ldoctor.module import MultiTaskModule
from ldoctor.transforms.ct import CTAugmentation

log = logging.getLogger("benchmarks.one_vs_three")

LIDC_DEMO = str(Path(__file__).resolve().parents[1] / "ldoctor" / "demo_data" / "lidc-real" / "lidc-slices")
WEIGHTINGS = {"equal": EqualWeighting, "static": StaticWeighting, "uncertainty": UncertaintyWeighting, "dwa": DWA,
              "gradnorm": GradNorm, "pcgrad": PCGrad}
#: The mission's weighting: its 1v3 model is the one reported as ``multi``.
DEFAULT_WEIGHTING = "uncertainty"
MIN_POSITIVES = 5


# ----------------------------------------------------------------------------------------------------- the data
def task_datamodules(args: argparse.Namespace) -> dict[str, TaskDataModule]:
    """One DataModule per task variant: ``tumor``, ``disease`` (ChestX-ray14), ``pneumonia`` (PneumoniaMNIST as
    the disease task), ``drug``. Built once and shared by every model (their caches fill once)."""
    test = SliceStacks(args.tumor_test_slices) if args.tumor_test_slices else None
    tumor = LIDCDataModule(SliceStacks(args.tumor_slices), test_source=test, seed=args.seed, val_fraction=0.15,
                           test_fraction=0.0 if test else 0.15, patch_size_mm=args.patch_mm, patch_spacing_mm=1.0,
                           view_channels="projections", augmentation=CTAugmentation(scale=0.0),
                           batch_size=args.tumor_batch, cache="memory")
    disease = ChestXray14DataModule(root=args.nih_root, image_size=args.image_size, val_fraction=0.15,
                                    test_fraction=0.2, seed=args.seed, batch_size=args.disease_batch,
                                    cache="memory")
    pneumonia = MedMNISTDataModule(class_names=["pneumonia"], image_size=args.image_size, val_from_train=0.1,
                                   seed=args.seed, batch_size=args.disease_batch)
    drug = MIMICDrugDataModule(locked_test=True, split_seed=args.seed, batch_size=args.drug_batch)
    modules = {"tumor": tumor, "disease": disease, "pneumonia": pneumonia, "drug": drug}
    for dm in modules.values():
        dm.setup("fit")
        dm.setup("test")
    return modules


def combined(members: dict[str, TaskDataModule], args: argparse.Namespace) -> MultiTaskDataModule:
    """The tasks' DataModules mixed with a fixed number of steps and each task's own batch per step."""
    batches = {name: dm.batch_size for name, dm in members.items()}
    return MultiTaskDataModule({dm.task.name: dm for dm in members.values()}, steps_per_epoch=args.steps_per_epoch,
                               batch_size=sum(batches.values()),
                               task_weights={dm.task.name: float(dm.batch_size) for dm in members.values()},
                               seed=args.seed)


def prevalence_entropy(dm: TaskDataModule) -> float:
    """Mean binary entropy (nats) of the training labels' prevalence per output: the BCE of the prior predictor."""
    labels = dm.train_labels().double().numpy().reshape(len(dm.train_labels()), -1)
    p = np.clip(np.nanmean(labels, axis=0), 1e-6, 1 - 1e-6)
    return float(np.mean(-(p * np.log(p) + (1 - p) * np.log(1 - p))))


def static_weights(members: dict[str, TaskDataModule]) -> dict[str, float]:
    """``w_t`` proportional to ``1 / prevalence_entropy``, summing to the number of tasks."""
    raw = {dm.task.name: 1.0 / prevalence_entropy(dm) for dm in members.values()}
    scale = len(raw) / sum(raw.values())
    return {t: w * scale for t, w in raw.items()}


# --------------------------------------------------------------------------------------------- the training
def make_module(data: MultiTaskDataModule, weighting: str, args: argparse.Namespace) -> MultiTaskModule:
    names = [t.name for t in data.tasks]
    weighting_class: Callable = WEIGHTINGS[weighting]
    if weighting == "static":
        weighting_class = partial(StaticWeighting, weights=static_weights(data.datamodules))
    drug = "drug" in names
    return MultiTaskModule(
        tasks=data.tasks, trunk=args.trunk,
        heads={"drug": partial(DrugHead, wide="all", copy="last", prior_bias=True)} if drug else None,
        task_losses={"drug": DrugLoss} if drug else None, metrics={"drug": DrugMetrics} if drug else None,
        optimizer=partial(torch.optim.AdamW, lr=args.lr, weight_decay=1e-4),
        lr_scheduler=partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=args.epochs),
        weighting=weighting_class,
    )


def train(members: dict[str, TaskDataModule], weighting: str, args: argparse.Namespace, name: str) -> dict:
    """Train one model on ``members`` (one task: a single-task model) and predict every member's test split."""
    data = combined(members, args)
    L.seed_everything(args.seed, workers=True)
    module = make_module(data, weighting, args)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=args.epochs, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, deterministic=False)
    start = time.time()
    trainer.fit(module, datamodule=data)
    seconds = time.time() - start
    if args.save_checkpoints:
        # e.g. the 1v3 trunk trained without ChestX-ray14 (tumor + PneumoniaMNIST + drug) for
        # benchmarks/chestxray14.py --init-trunk: transfer from the other tasks
        trainer.save_checkpoint(Path(args.save_checkpoints) / f"{name.replace(' ', '_')}_{weighting}.ckpt")
    predictions = {}
    for key, dm in members.items():
        spec = dm.task
        kind = "binary" if spec.num_outputs == 1 and spec.kind != "multiclass" else spec.kind
        predictions[key] = predict(module.net, spec.name, dm.test_dataloader(), kind=kind)
    if args.save_predictions:
        folder = Path(args.save_predictions)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / f"{name.replace(' ', '_')}_{weighting}.npz",
                 **{f"{key}_{part}": np.asarray(getattr(p, part)) for key, p in predictions.items()
                    for part in ("ids", "labels", "probs")})
    log.info("%s (%s): %.0f s, %d steps", name, weighting, seconds, trainer.global_step)
    return {"predictions": predictions, "seconds": seconds, "steps": trainer.global_step,
            "final_weights": {t: float(w) for t, w in module.weighting.weights().items()}}


# ------------------------------------------------------------------------------------------------ the scores
def mean_jaccard(y: np.ndarray, probs: np.ndarray) -> float:
    predicted = torch.as_tensor(probs > 0.5, dtype=torch.float32)
    return float(DrugJaccard().scores(predicted, torch.as_tensor(y, dtype=torch.float32)).double().mean())


def disease_columns(columns: list[int]) -> Callable[[np.ndarray], np.ndarray]:
    """``y [N, 14]`` -> the scored findings' labels with one fold column (the multilabel metrics' input)."""
    return lambda y: with_folds(y[:, columns], np.zeros(len(y)))


def scorer(key: str, dm: TaskDataModule, y: np.ndarray) -> dict:
    """The task's metric, its bootstrap validity rule, the patients of the test rows and what is scored."""
    if key == "drug":
        return {"metric": "mean_jaccard", "fn": mean_jaccard, "valid": None}
    if key == "disease":
        names = dm.task.class_names
        columns = scored_findings(y, MIN_POSITIVES)
        one_fold = disease_columns(columns)
        return {"metric": "macro_auroc", "fn": lambda y, p: macro_auroc(one_fold(y), p[:, columns]),
                "valid": lambda y: pairs_in_every_column(one_fold(y)),
                "scored": [names[c] for c in columns], "positives": {names[c]: int(y[:, c].sum()) for c in columns}}
    return {"metric": "auroc", "fn": roc_auc_score, "valid": lambda v: 0 < v.sum() < len(v)}


def test_patients(key: str, dm: TaskDataModule, ids: list[str]) -> list[str]:
    """The patient of every test row (PneumoniaMNIST has no patient ids: each image is its own)."""
    if key == "tumor":
        by_id = {r["id"]: r["patient_id"] for r in dm.splits["test"]}
        return [by_id[i] for i in ids]
    if key == "disease":
        return [str(p) for p in dm.patient_ids("test")]
    if key == "drug":
        return [i.split("/")[0] for i in ids]
    return list(ids)


def compare(key: str, dm: TaskDataModule, single: dict, multi: dict, seed: int, draws: int = 2000) -> dict:
    """Single-task and 1v3 scores of one task on its test rows, and the paired difference 1v3 - single."""
    a, b = multi["predictions"][key], single["predictions"][key]
    assert a.ids == b.ids, f"{key}: the two models must score the same test rows"
    y = a.labels
    score = scorer(key, dm, y)
    patients = test_patients(key, dm, a.ids)
    boot = paired_bootstrap(y, a.probs, b.probs, patients, metric=score["fn"], valid=score["valid"], seed=seed,
                            draws=draws)
    out = {"metric": score["metric"], "single": float(score["fn"](y, b.probs)), "multi": float(score["fn"](y, a.probs)),
           "difference": boot["difference"], "ci95": boot["ci95"], "ci_low": boot["ci95"][0],
           "ci_high": boot["ci95"][1], "share_multi_better": boot["share_above_0"], "draws": boot["draws"],
           "test_rows": len(y), "test_patients": len(set(patients))}
    if score["metric"] == "auroc":
        d = delong_paired(y, a.probs, b.probs)
        out["delong"] = {"difference": d.difference, "p_value": d.p_value, "ci95": list(d.ci95)}
    for extra in ("scored", "positives"):
        if extra in score:
            out[extra] = score[extra]
    return out


def seed_spread(key: str, dm: TaskDataModule, args: argparse.Namespace, seeds: int) -> dict:
    """The single-task score of ``key`` retrained with ``seeds`` other training seeds (the data splits stay those
    of ``--seed``): how far training randomness alone (initialisation, dropout, sample order) moves the score."""
    values = []
    for offset in range(1, seeds + 1):
        run = train({key: dm}, "equal", argparse.Namespace(**{**vars(args), "seed": args.seed + offset}),
                    f"single {key} seed {args.seed + offset}")
        prediction = run["predictions"][key]
        values.append(float(scorer(key, dm, prediction.labels)["fn"](prediction.labels, prediction.probs)))
    return {"seeds": [args.seed + o for o in range(1, seeds + 1)], "values": values, "min": min(values),
            "max": max(values), "std": float(np.std(values, ddof=1)) if seeds > 1 else 0.0}


class StepTimer(L.Callback):
    """Wall seconds of every training step (batch start to batch end)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_batch_start(self, *args) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def step_seconds(modules: dict[str, TaskDataModule], trunk: str, args: argparse.Namespace, steps: int = 4) -> float:
    """Mean seconds of a 1v3 training step with ``trunk`` (the first step, a warm-up, left out)."""
    data = combined({k: modules[k] for k in ("tumor", "disease", "drug")}, args)
    module = make_module(data, DEFAULT_WEIGHTING, argparse.Namespace(**{**vars(args), "trunk": trunk}))
    timer = StepTimer()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps + 1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(module, datamodule=data)
    return float(np.mean(timer.seconds[1:]))


# ------------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tumor-slices", default=LIDC_DEMO, help="lidc-slices folder (default: the shipped subset)")
    p.add_argument("--tumor-test-slices", help="a lidc-slices folder of other patients to test the tumor task on")
    p.add_argument("--nih-root", default=str(NIH_DEMO), help="NIH-format folder (default: the shipped 837 images)")
    p.add_argument("--trunk", default="resnet18")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--patch-mm", type=float, default=32.0)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--steps-per-epoch", type=int, default=30)
    p.add_argument("--tumor-batch", type=int, default=16)
    p.add_argument("--disease-batch", type=int, default=32)
    p.add_argument("--drug-batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weightings", default=",".join(WEIGHTINGS),
                   help=f"comma-separated, from {list(WEIGHTINGS)}; {DEFAULT_WEIGHTING} is always run")
    p.add_argument("--no-pneumonia", action="store_true", help="skip the PneumoniaMNIST variant of disease")
    p.add_argument("--time-trunks", default="resnet18,resnet50",
                   help="trunks whose 1v3 step time is measured for the record ('' = none)")
    p.add_argument("--save-checkpoints", help="write every model's last weights here (<model>_<weighting>.ckpt)")
    p.add_argument("--spread-tasks", default="drug",
                   help="comma-separated tasks whose single-task model is retrained with --spread-seeds other "
                        "training seeds, to set the 1v3 difference beside training noise ('' = none)")
    p.add_argument("--spread-seeds", type=int, default=5)
    p.add_argument("--save-predictions", help="write every model's test probabilities here (<model>_<weighting>.npz)")
    p.add_argument("--bootstrap-draws", type=int, default=2000, help="patient-bootstrap draws per interval")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out")
    args = p.parse_args(argv)
    names = [w for w in args.weightings.split(",") if w]
    unknown = sorted(set(names) - set(WEIGHTINGS))
    if unknown:
        p.error(f"unknown weightings {unknown}; choose from {list(WEIGHTINGS)}")
    args.weighting_list = sorted(set(names) | {DEFAULT_WEIGHTING}, key=list(WEIGHTINGS).index)
    tasks = {"tumor", "disease", "drug"} | (set() if args.no_pneumonia else {"pneumonia"})
    if set(filter(None, args.spread_tasks.split(","))) - tasks:
        p.error(f"--spread-tasks must name tasks of this run, from {sorted(tasks)}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    start = time.time()
    modules = task_datamodules(args)
    timing = {t: step_seconds(modules, t, args) for t in args.time_trunks.split(",") if t}
    variants = ["tumor", "disease", "drug"] + ([] if args.no_pneumonia else ["pneumonia"])
    single = {k: train({k: modules[k]}, "equal", args, f"single {k}") for k in variants}
    spread = {k: seed_spread(k, modules[k], args, args.spread_seeds) for k in args.spread_tasks.split(",") if k}
    three = ("tumor", "disease", "drug")
    runs = {w: train({k: modules[k] for k in three}, w, args, "1v3") for w in args.weighting_list}
    weighting_table = {
        w: {"tasks": {k: compare(k, modules[k], single[k], run, args.seed, args.bootstrap_draws) for k in three},
            "final_weights": run["final_weights"], "seconds": run["seconds"]}
        for w, run in runs.items()}
    default = weighting_table[DEFAULT_WEIGHTING]["tasks"]
    result = {
        "command": " ".join(["benchmarks/one_vs_three.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": f"{platform.machine()}, {args.threads} thread(s), {'cuda' if torch.cuda.is_available() else 'cpu'}",
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "steps_per_task": args.epochs * args.steps_per_epoch,
        "data": {k: {"train": len(modules[k].train_dataset), "test": len(single[k]["predictions"][k].ids)}
                 for k in variants},
        "single": {k: {"metric": c["metric"], "value": c["single"]} for k, c in default.items()},
        "multi": {k: {"metric": c["metric"], "value": c["multi"], "weighting": DEFAULT_WEIGHTING}
                  for k, c in default.items()},
        "difference": {k: {"difference": c["difference"], "ci_low": c["ci_low"], "ci_high": c["ci_high"],
                           "share_multi_better": c["share_multi_better"], **({"delong": c["delong"]}
                                                                             if "delong" in c else {})}
                       for k, c in default.items()},
        "per_task": default,
        "weightings": weighting_table,
        "single_seconds": {k: s["seconds"] for k, s in single.items()},
        "single_seed_spread": spread,
        "trunk_step_seconds": timing,
    }
    if not args.no_pneumonia:
        members = {"tumor": modules["tumor"], "pneumonia": modules["pneumonia"], "drug": modules["drug"]}
        pneumonia_run = train(members, DEFAULT_WEIGHTING, args, "1v3 pneumonia")
        result["pneumonia_variant"] = {
            k: compare(k, modules[k], single[k], pneumonia_run, args.seed, args.bootstrap_draws) for k in members}
        row = result["pneumonia_variant"]["pneumonia"]
        result["single"]["disease_pneumoniamnist"] = {"metric": row["metric"], "value": row["single"]}
        result["multi"]["disease_pneumoniamnist"] = {"metric": row["metric"], "value": row["multi"],
                                                     "weighting": DEFAULT_WEIGHTING}
        result["difference"]["disease_pneumoniamnist"] = {
            "difference": row["difference"], "ci_low": row["ci_low"], "ci_high": row["ci_high"],
            "share_multi_better": row["share_multi_better"], "delong": row.get("delong")}
        result["pneumonia_variant_seconds"] = pneumonia_run["seconds"]
    if "resnet50" in timing and args.trunk in timing and args.trunk != "resnet50":
        # this run's training time scaled by the measured step-time ratio of the two trunks
        trained = (sum(result["single_seconds"].values()) + sum(r["seconds"] for r in runs.values())
                   + result.get("pneumonia_variant_seconds", 0.0))
        result["resnet50_estimate_hours"] = round(trained * timing["resnet50"] / timing[args.trunk] / 3600, 2)
    result["seconds"] = round(time.time() - start, 1)
    lines = [f"{'task':<24}{'metric':>14}{'single':>9}{'1v3':>9}{'1v3 - single [95% CI]':>34}"]
    for k, d in result["difference"].items():
        lines.append(f"{k:<24}{result['single'][k]['metric']:>14}{result['single'][k]['value']:>9.4f}"
                     f"{result['multi'][k]['value']:>9.4f}{d['difference']:>+12.4f} "
                     f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]")
    for k, sp in spread.items():
        lines.append(f"single {k} retrained with seeds {sp['seeds']}: {sp['min']:.4f} - {sp['max']:.4f} "
                     f"(std {sp['std']:.4f})")
    lines.append("weightings (1v3 - single per task):")
    for w, row in weighting_table.items():
        lines.append(f"  {w:<12}" + "".join(f"{k} {c['multi']:.4f} ({c['difference']:+.4f})  "
                                           for k, c in row["tasks"].items()))
    write_result(result, args.out, "\n".join(lines))
    return result


if __name__ == "__main__":
    main()
