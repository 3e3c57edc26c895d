"""ChestX-ray14: per-finding and macro AUROC of the disease model beside a pixel baseline on the same images.

Roots are NIH-format folders (``images/*.png`` or ``images_*/images/``, ``Data_Entry_2017*.csv[.gz]``), e.g. the
shipped 837 real images at 64 px (``ldoctor/demo_data/nih-cxr14-64``). Three protocols, all split by patient:

- ``--test-root DIR``: every image of ``--root`` trains or validates (``--val-fraction`` of its patients,
  used only to choose the checkpoint, on validation macro AUROC), then every image of ``DIR`` is scored once.
  A patient in both folders is refused.
- default, ``--folds K`` (5): patient-grouped K-fold cross-validation over ``--root``; every image is tested
  once, by a model (and a baseline) that never saw its patient.
- ``--folds 0``: one split of ``--root``: the official ``test_list.txt`` when present, else a seeded split.

**Scored findings**: those with at least ``--min-positives`` (5) positive test images, listed in
``scored_findings``; the others are not scored (an AUROC on fewer positives says little). In cross-validation
the rule counts the test images of all folds together (every image of the root, each scored by the model of the
fold that held it out), and a finding's AUROC counts (positive, negative) pairs within a fold only
(:func:`ldoctor.evaluation.multilabel.within_fold_auroc`: the folds' AUROCs weighted by their pairs), since each fold's models score on their
own scale. That is ``test_macro_auroc``. Beside it: the mean over folds (``fold_mean_macro_auroc``, each fold's
macro over the findings with enough positives in that fold's test split, listed per fold; with 5 folds of the
shipped 837 images only a few findings qualify in every fold) and the AUROC over all pairs, across folds too
(``pooled_across_folds_macro_auroc``, which penalises scale differences between the folds' models).

**Pixel baseline**, fitted in the same run on the same training images and scored on the same test images: per
finding, an L2 logistic regression on the raw ``--baseline-size`` (64) px grey pixels, standardised. One ``C``
for all findings is chosen from ``--baseline-c`` by validation macro AUROC (the model's own validation patients,
a patient-grouped split of the training patients; never the test), then refitted on train + validation.
``difference`` = ours - baseline in macro AUROC over the scored findings, with a 95 % patient-bootstrap
interval (``difference_ci``, ``ldoctor.evaluation.bootstrap.paired_bootstrap``) and DeLong p-values per finding
(which treat images as independent; the bootstrap does not).

**Model**: ``MultiTaskModule`` with the disease task only (``--trunk``, default resnet18, ``--image-size`` 64),
AdamW with a cosine schedule; the checkpoint of best validation macro AUROC is scored. Transfer: ``--init-trunk
CKPT`` copies the trunk of a trained multi-task checkpoint (e.g. the 1v3 model) and fine-tunes it;
``--pretrain pneumoniamnist`` first trains the trunk on the shipped PneumoniaMNIST (``--pretrain-epochs``) and
then fine-tunes it on the 14 findings. With transfer the trunk learns at ``--trunk-lr-factor`` (default 0.1)
times the head's rate.

    python benchmarks/chestxray14.py --root ldoctor/demo_data/nih-cxr14-64 --out r.json
    python benchmarks/chestxray14.py --root ldoctor/demo_data/nih-cxr14-64 --test-root /data/other-patients --out r.json
    python benchmarks/chestxray14.py --root /data/nih-cxr14 --folds 0 --trunk resnet50 --image-size 224 --out r.json

Published numbers (Wang et al. 2017, CheXNet) are context only: they were measured on the full data set
(112,120 images at 1024 px, their own splits, the 2017 labels), not on these images.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch

from datamodules.chestxray14 import ChestXray14DataModule
from datamodules.medmnist import PNEUMONIAMNIST_DEMO, MedMNISTDataModule
from ldoctor.datasets.nih import CHESTXRAY14_FINDINGS
from ldoctor.evaluation.baselines import pixel_baseline
from ldoctor.evaluation.bootstrap import paired_bootstrap
from ldoctor.evaluation.crossval import fold_mean
from ldoctor.evaluation.multilabel import (
    delong_within_folds,
    macro_auroc,
    pairs_in_every_column,
    scored_findings,
    with_folds,
    within_fold_auroc,
)
from ldoctor.evaluation.prediction import predict
from ldoctor.evaluation.report import write_result
from ldoctor.evaluation.training import fit_best
from ldoctor.losses import EqualWeighting, MaskedBCEWithLogits
from ldoctor.models.heads import ClassificationHead
from ldoctor.module import MultiTaskModule

log = logging.getLogger("benchmarks.chestxray14")

#: Test AUROC per finding, as listed in Rajpurkar et al., "CheXNet: Radiologist-Level Pneumonia Detection on
#: Chest X-Rays with Deep Learning", arXiv:1711.05225 (v3, 2017), Table 2, columns "Wang et al. (2017)"
#: (ResNet-50, Wang et al., "ChestX-ray8", CVPR 2017) and "CheXNet (ours)" (DenseNet-121).
PUBLISHED = {
    "Atelectasis": (0.716, 0.8094),
    "Cardiomegaly": (0.807, 0.9248),
    "Effusion": (0.784, 0.8638),
    "Infiltration": (0.609, 0.7345),
    "Mass": (0.706, 0.8676),
    "Nodule": (0.671, 0.7802),
    "Pneumonia": (0.633, 0.7680),
    "Pneumothorax": (0.806, 0.8887),
    "Consolidation": (0.708, 0.7901),
    "Edema": (0.835, 0.8878),
    "Emphysema": (0.815, 0.9371),
    "Fibrosis": (0.769, 0.8047),
    "Pleural_Thickening": (0.708, 0.8062),
    "Hernia": (0.767, 0.9164),
}
PUBLISHED_CAVEAT = ("measured on the full ChestX-ray14 data set (112,120 images at 1024 px, 30,805 patients) with "
                    "their own splits and the 2017 labels: context, not a like-for-like comparison")
MONITOR = "val/disease/auroc"  # validation macro AUROC: the only checkpoint criterion


# ------------------------------------------------------------------------------------------------ transfer
@dataclass
class Transfer:
    """Where the trunk starts: its registered name, a trunk state-dict file (or ``None``: random) and what it is."""

    trunk: str
    weights: str | None = None
    lr_factor: float = 1.0
    source: dict = field(default_factory=lambda: {"kind": "none (from scratch)"})


def trunk_from_checkpoint(checkpoint: Path, trunk: str | None, out: Path) -> tuple[str, str]:
    """Write the trunk of a ``MultiTaskModule`` checkpoint as a trunk state dict (``trunk.*`` keys) for
    ``MultiTaskModule(trunk_weights=...)``, which loads it strictly.

    Returns:
        the trunk's registered name (the checkpoint's, else ``trunk``) and the written file.

    Raises:
        ValueError: not a MultiTaskModule checkpoint, or ``trunk`` differs from the checkpoint's trunk.
    """
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    weights = {k[len("net."):]: v for k, v in state.get("state_dict", {}).items() if k.startswith("net.trunk.")}
    if not weights:
        raise ValueError(f"{checkpoint}: no net.trunk.* weights; expected a MultiTaskModule checkpoint (.ckpt)")
    saved = state.get("hyper_parameters", {}).get("trunk")
    saved = saved if isinstance(saved, str) else None
    if trunk is not None and saved is not None and trunk != saved:
        raise ValueError(f"{checkpoint}: its trunk is {saved!r}, --trunk says {trunk!r}; leave --trunk out")
    if trunk is None and saved is None:
        raise ValueError(f"{checkpoint}: the trunk is not a registered name; give --trunk")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(weights, out)
    return trunk or saved, str(out)


def pretrain_pneumoniamnist(args: argparse.Namespace, work: Path) -> tuple[Path, dict]:
    """Train the trunk (+ a binary pneumonia head) on PneumoniaMNIST; the best-validation checkpoint and a summary."""
    dm = MedMNISTDataModule(npz=args.pretrain_npz, task_name="pneumonia", class_names=["pneumonia"],
                            image_size=args.image_size, batch_size=args.batch_size, num_workers=args.num_workers)
    L.seed_everything(args.seed, workers=True)
    module = MultiTaskModule(
        tasks=dm.tasks, heads={"pneumonia": partial(ClassificationHead, dropout=0.1)}, trunk=args.trunk or "resnet18",
        optimizer=partial(torch.optim.AdamW, lr=args.lr, weight_decay=args.weight_decay),
        lr_scheduler=partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=args.pretrain_epochs),
        weighting=EqualWeighting,
    )
    fitted = fit_best(module, dm, work / "pretrain", args.pretrain_epochs, "val/pneumonia/auroc",
                      accelerator=args.accelerator)
    return fitted.checkpoint, {"kind": "pretrain pneumoniamnist", "npz": str(args.pretrain_npz),
                               "epochs": args.pretrain_epochs, "train_images": len(dm.train_dataset),
                               "val_auroc": fitted.best_score, "seconds": fitted.seconds}


def transfer(args: argparse.Namespace, work: Path) -> Transfer:
    """The trunk's starting point: random, ``--init-trunk`` or ``--pretrain pneumoniamnist``."""
    factor = args.trunk_lr_factor
    if args.init_trunk is None and args.pretrain == "none":
        return Transfer(args.trunk or "resnet18", None, 1.0 if factor is None else factor)
    if args.init_trunk is not None:
        checkpoint, source = Path(args.init_trunk), {"kind": "init-trunk", "checkpoint": args.init_trunk}
    else:
        checkpoint, source = pretrain_pneumoniamnist(args, work)
    trunk, weights = trunk_from_checkpoint(checkpoint, args.trunk, work / "transfer" / "trunk.pt")
    return Transfer(trunk, weights, 0.1 if factor is None else factor, source)


# ------------------------------------------------------------------------------------------------ one split
def disease_module(dm: ChestXray14DataModule, args: argparse.Namespace, start: Transfer) -> MultiTaskModule:
    """The disease task alone: trunk (from ``start``) + classification head, AdamW with a cosine schedule."""
    losses = {"disease": partial(MaskedBCEWithLogits, pos_weight="auto")} if args.pos_weight else None
    return MultiTaskModule(
        tasks=dm.tasks, heads={"disease": partial(ClassificationHead, dropout=args.dropout)}, trunk=start.trunk,
        trunk_weights=start.weights, weighting=EqualWeighting, task_losses=losses,
        optimizer=partial(torch.optim.AdamW, lr=args.lr, weight_decay=args.weight_decay),
        lr_scheduler=partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=max(args.epochs, 1)),
        trunk_lr_factor=start.lr_factor,
    )


def _device(accelerator: str) -> torch.device:
    wants_gpu = accelerator in ("auto", "gpu", "cuda")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


def model_probabilities(dm: ChestXray14DataModule, args: argparse.Namespace, start: Transfer,
                        out_dir: Path) -> tuple[np.ndarray, dict]:
    """Train (or load ``--ckpt``), keep the best-validation checkpoint, predict the test split: ``[N, 14]``."""
    if args.ckpt:
        module, fit = MultiTaskModule.load_from_checkpoint(args.ckpt, map_location="cpu"), {"checkpoint": args.ckpt}
    else:
        L.seed_everything(args.seed, workers=True)
        fitted = fit_best(disease_module(dm, args, start), dm, out_dir, args.epochs, MONITOR, "max", args.accelerator)
        module, fit = fitted.module, {"best_val_macro_auroc": fitted.best_score, "fit_seconds": fitted.seconds}
    net = module.net.to(_device(args.accelerator))
    test = predict(net, "disease", dm.test_dataloader(), kind="multilabel")
    if test.ids != [r["id"] for r in dm.records["test"]]:
        raise RuntimeError("test predictions are not in record order")
    return test.probs, fit


def evaluate_split(dm: ChestXray14DataModule, args: argparse.Namespace, start: Transfer, out_dir: Path) -> dict:
    """One split: our probabilities and the pixel baseline's on the test images, with labels and patients."""
    probs, fit = model_probabilities(dm, args, start, out_dir)
    pixels = {s: dm.pixels(s, args.baseline_size).reshape(len(dm.records[s]), -1).astype(np.float64)
              for s in ("train", "val", "test")}
    start_time = time.perf_counter()
    baseline, choice = pixel_baseline(pixels["train"], dm.labels("train"), pixels["val"], dm.labels("val"),
                                      pixels["test"], args.baseline_c)
    choice["seconds"] = round(time.perf_counter() - start_time, 1)
    return {"y": dm.labels("test").astype(float), "ours": probs, "baseline": baseline,
            "patients": dm.patient_ids("test"), "ids": [r["id"] for r in dm.records["test"]], "fit": fit,
            "baseline_fit": choice, "images": {s: len(r) for s, r in dm.records.items()},
            "patient_counts": {s: len(p) for s, p in dm.patients.items()}}


# ------------------------------------------------------------------------------------------------ reporting
def compare(y: np.ndarray, ours: np.ndarray, baseline: np.ndarray, patients: list, folds: np.ndarray,
            columns: list[int], args: argparse.Namespace) -> dict:
    """Ours and the baseline over the scored ``columns`` of ``y [N, 14]``: per-finding and macro AUROC (pairs within
    folds), the patient bootstrap of the macro difference and a DeLong p per finding."""
    names = [CHESTXRAY14_FINDINGS[c] for c in columns]
    if not columns:
        return {"scored_findings": [], "test_macro_auroc": None, "baseline_test_macro_auroc": None,
                "per_finding_auroc": {}, "baseline_per_finding_auroc": {}, "difference": None,
                "difference_ci": None, "delong_p": {}}
    y_fold, a, b = with_folds(y[:, columns], folds), ours[:, columns], baseline[:, columns]
    boot = paired_bootstrap(y_fold, a, b, patients, metric=macro_auroc, valid=pairs_in_every_column,
                            draws=args.bootstrap_draws, seed=args.seed)
    ours_auroc, baseline_auroc = within_fold_auroc(y_fold, a), within_fold_auroc(y_fold, b)
    return {
        "scored_findings": names,
        "test_macro_auroc": float(ours_auroc.mean()), "baseline_test_macro_auroc": float(baseline_auroc.mean()),
        "per_finding_auroc": dict(zip(names, ours_auroc.tolist())),
        "baseline_per_finding_auroc": dict(zip(names, baseline_auroc.tolist())),
        "difference": boot["difference"], "difference_ci": boot["ci95"],
        "difference_bootstrap": {"share_above_0": boot["share_above_0"], "draws_counted": boot["draws"],
                                 "draws": args.bootstrap_draws, "resampled": "patients"},
        "delong_p": {n: delong_within_folds(y[:, c], ours[:, c], baseline[:, c], folds) for n, c in zip(names, columns)},
    }


def positives(y: np.ndarray) -> dict[str, int]:
    return {n: int(np.nansum(y[:, c])) for c, n in enumerate(CHESTXRAY14_FINDINGS)}


def write_predictions(path: str, parts: list[dict]) -> None:
    """One CSV row per test image: id, patient, fold, the 14 labels, our and the baseline's 14 probabilities."""
    frames = []
    for fold, part in enumerate(parts):
        frame = pd.DataFrame({"id": part["ids"], "patient_id": part["patients"], "fold": fold})
        for prefix, values in (("label", part["y"]), ("ours", part["ours"]), ("baseline", part["baseline"])):
            frame = frame.join(pd.DataFrame(values, columns=[f"{prefix}_{n}" for n in CHESTXRAY14_FINDINGS]))
        frames.append(frame)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pd.concat(frames, ignore_index=True).to_csv(path, index=False)


def single_split(dm: ChestXray14DataModule, args: argparse.Namespace, start: Transfer, work: Path) -> dict:
    """``--test-root`` or ``--folds 0``: train once, score the test split once."""
    part = evaluate_split(dm, args, start, work / "split")
    if args.predictions:
        write_predictions(args.predictions, [part])
    columns = scored_findings(part["y"], args.min_positives)
    return {"protocol": dm.protocol, "images": part["images"], "patients": part["patient_counts"],
            "test_positives": positives(part["y"]),
            **compare(part["y"], part["ours"], part["baseline"], part["patients"], np.zeros(len(part["y"])), columns,
                      args),
            "fit": part["fit"], "baseline_fit": part["baseline_fit"]}


def fold_row(fold: int, part: dict, args: argparse.Namespace) -> dict:
    """One fold's line: counts, its own scored findings (the rule applied to its test split) and macro AUROCs."""
    columns = scored_findings(part["y"], args.min_positives)
    y_fold = with_folds(part["y"][:, columns], np.zeros(len(part["y"])))
    return {"fold": fold, "images": part["images"], "patients": part["patient_counts"],
            "scored_findings": [CHESTXRAY14_FINDINGS[c] for c in columns],
            "macro_auroc": macro_auroc(y_fold, part["ours"][:, columns]) if columns else None,
            "baseline_macro_auroc": macro_auroc(y_fold, part["baseline"][:, columns]) if columns else None,
            **part["fit"], "baseline_c": part["baseline_fit"]["c"], "baseline_seconds": part["baseline_fit"]["seconds"]}


def cross_validation(dm: ChestXray14DataModule, args: argparse.Namespace, start: Transfer, work: Path) -> dict:
    """Patient-grouped K folds: every image tested once; the scored findings and headline from all folds' test
    images together, with AUROC pairs taken within folds."""
    parts, rows = [], []
    for fold in range(args.folds):
        dm.select_fold(fold)
        parts.append(evaluate_split(dm, args, start, work / f"fold{fold}"))
        rows.append(fold_row(fold, parts[-1], args))
        log.info("fold %d: macro AUROC %s, baseline %s", fold, rows[-1]["macro_auroc"], rows[-1]["baseline_macro_auroc"])
    if args.predictions:
        write_predictions(args.predictions, parts)
    y, ours, baseline = (np.concatenate([p[key] for p in parts]) for key in ("y", "ours", "baseline"))
    folds = np.concatenate([np.full(len(p["y"]), k) for k, p in enumerate(parts)])
    patients = [patient for p in parts for patient in p["patients"]]
    columns = scored_findings(y, args.min_positives)
    one_fold = with_folds(y[:, columns], np.zeros(len(y)))
    differences = [None if r["macro_auroc"] is None else r["macro_auroc"] - r["baseline_macro_auroc"] for r in rows]
    return {"protocol": f"{args.folds}-fold patient-grouped cross-validation", "folds": args.folds,
            "images": {"total": len(y)}, "patients": {"total": len(set(patients))}, "test_positives": positives(y),
            **compare(y, ours, baseline, patients, folds, columns, args),
            "fold_mean_macro_auroc": fold_mean([r["macro_auroc"] for r in rows]),
            "baseline_fold_mean_macro_auroc": fold_mean([r["baseline_macro_auroc"] for r in rows]),
            "fold_mean_difference": fold_mean(differences),
            "pooled_across_folds_macro_auroc": {  # every pair, also across folds: mixes the folds' score scales
                "ours": macro_auroc(one_fold, ours[:, columns]) if columns else None,
                "baseline": macro_auroc(one_fold, baseline[:, columns]) if columns else None},
            "per_fold": rows}


def published(scored: list[str]) -> dict:
    """Context rows: Wang et al. 2017 and CheXNet per finding, macro over the scored findings and over all 14."""
    def macro(i: int, names: list[str]) -> float | None:
        return float(np.mean([PUBLISHED[n][i] for n in names])) if names else None

    every = list(CHESTXRAY14_FINDINGS)
    return {"caveat": PUBLISHED_CAVEAT,
            "per_finding": {n: {"wang2017": PUBLISHED[n][0], "chexnet": PUBLISHED[n][1]} for n in every},
            "macro_over_scored_findings": {"wang2017": macro(0, scored), "chexnet": macro(1, scored)},
            "macro_all_14": {"wang2017": macro(0, every), "chexnet": macro(1, every)}}


def format_table(result: dict) -> str:
    """Markdown: scored findings, ours beside the pixel baseline and the published (full-data) numbers."""
    def show(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    rows = ["| finding | positives | ours | pixel baseline | DeLong p | Wang 2017* | CheXNet* |", "|---|---|---|---|---|---|---|"]
    for name in result["scored_findings"]:
        wang, chexnet = PUBLISHED[name]
        rows.append(f"| {name} | {result['test_positives'][name]} | {show(result['per_finding_auroc'][name])} | "
                    f"{show(result['baseline_per_finding_auroc'][name])} | {show(result['delong_p'][name])} | "
                    f"{wang:.3f} | {chexnet:.3f} |")
    context = result["published"]["macro_over_scored_findings"]
    rows.append(f"| **macro** | | {show(result['test_macro_auroc'])} | {show(result['baseline_test_macro_auroc'])} | "
                f"| {show(context['wang2017'])} | {show(context['chexnet'])} |")
    ci = result["difference_ci"]
    if ci is not None:
        rows.append(f"\nours - baseline: {result['difference']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}] (95 % patient "
                    f"bootstrap); * {PUBLISHED_CAVEAT}")
    return "\n".join(rows)


# ------------------------------------------------------------------------------------------------ command line
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, help="NIH-format folder: trains (and, without --test-root, is tested)")
    p.add_argument("--test-root", default=None, help="NIH-format folder of other patients, scored once")
    p.add_argument("--out", default=None, help="write the result as JSON here")
    p.add_argument("--folds", type=int, default=5, help="without --test-root: patient-grouped folds (0: one split)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of training patients that validate")
    p.add_argument("--min-positives", type=int, default=5, help="score findings with at least this many positives")
    p.add_argument("--predictions", default=None, help="also write every test image's labels and scores (CSV)")
    model = p.add_argument_group("model")
    model.add_argument("--trunk", default=None, help="registered trunk (default resnet18, or the checkpoint's)")
    model.add_argument("--image-size", type=int, default=64)
    model.add_argument("--epochs", type=int, default=5)
    model.add_argument("--batch-size", type=int, default=32)
    model.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (cosine-annealed)")
    model.add_argument("--weight-decay", type=float, default=1e-4)
    model.add_argument("--dropout", type=float, default=0.2, help="dropout before the disease head")
    model.add_argument("--pos-weight", action="store_true", help="weight positives by #neg/#pos of training")
    model.add_argument("--ckpt", default=None, help="score this trained checkpoint instead (not with folds)")
    start = model.add_mutually_exclusive_group()
    start.add_argument("--init-trunk", default=None, help="start from the trunk of this MultiTaskModule .ckpt")
    start.add_argument("--pretrain", default="none", choices=["none", "pneumoniamnist"])
    model.add_argument("--pretrain-epochs", type=int, default=3)
    model.add_argument("--pretrain-npz", default=PNEUMONIAMNIST_DEMO, help="MedMNIST .npz for --pretrain")
    model.add_argument("--trunk-lr-factor", type=float, default=None, help="trunk LR / head LR (default 1; 0.1 "
                       "with --init-trunk or --pretrain)")
    base = p.add_argument_group("pixel baseline and statistics")
    base.add_argument("--baseline-size", type=int, default=64, help="side of the baseline's pixel grid")
    base.add_argument("--baseline-c", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2, 1e-1])
    base.add_argument("--bootstrap-draws", type=int, default=2000)
    run = p.add_argument_group("data and machine")
    run.add_argument("--view-positions", nargs="*", default=None, help="e.g. PA")
    run.add_argument("--skip-bad", action="store_true", help="skip and count bad rows and images")
    run.add_argument("--cache-dir", default=None, help="disk cache of the decoded images (default: in memory)")
    run.add_argument("--work-dir", default=None, help="checkpoints and logs (default: a temporary folder)")
    run.add_argument("--num-workers", type=int, default=0)
    run.add_argument("--accelerator", default="auto")
    run.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    run.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.folds == 1 or args.folds < 0:
        p.error(f"--folds must be 0 or >= 2, got {args.folds}")
    if args.ckpt and args.folds and not args.test_root:
        p.error("--ckpt scores one trained model: use it with --test-root or --folds 0")
    return args


def datamodule(args: argparse.Namespace) -> ChestXray14DataModule:
    folds = args.folds if args.folds and not args.test_root else None
    return ChestXray14DataModule(
        root=args.root, test_root=args.test_root, image_size=args.image_size, val_fraction=args.val_fraction,
        seed=args.seed, folds=folds, view_positions=args.view_positions, skip_bad=args.skip_bad,
        cache="disk" if args.cache_dir else "memory", cache_dir=args.cache_dir, batch_size=args.batch_size,
        num_workers=args.num_workers,
    )


def run(args: argparse.Namespace, work: Path) -> dict:
    """Arguments -> data, transfer, training and baseline -> the result."""
    start_time = time.perf_counter()
    dm = datamodule(args)
    dm.setup("fit")
    start = transfer(args, work)
    if args.test_root or not args.folds:
        result = single_split(dm, args, start, work)
    else:
        result = cross_validation(dm, args, start, work)
    return {
        "root": str(args.root), "test_root": args.test_root, **result,
        "model": {"trunk": start.trunk, "image_size": args.image_size, "epochs": args.epochs, "lr": args.lr,
                  "weight_decay": args.weight_decay, "trunk_lr_factor": start.lr_factor, "pos_weight": args.pos_weight,
                  "checkpoint_choice": f"best {MONITOR} on the validation patients only (torchmetrics' macro over "
                                       "the 14 findings, a finding without positives in validation counting 0: a "
                                       "constant offset per fold, the same epoch wins)"},
        "transfer": start.source["kind"], "transfer_detail": {**asdict(start)["source"], "trunk": start.trunk},
        "baseline": {"what": "per-finding L2 logistic regression on standardised raw pixels, one C chosen by "
                             "validation macro AUROC, refitted on train + validation",
                     "image_size": args.baseline_size, "c_grid": args.baseline_c},
        "min_positives": args.min_positives, "published": published(result["scored_findings"]),
        "seconds": round(time.perf_counter() - start_time, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    header = {"command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                         f"{'cuda' if torch.cuda.is_available() else 'cpu'}"}
    if args.work_dir:
        result = run(args, Path(args.work_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="ldoctor-cxr14-") as tmp:
            result = run(args, Path(tmp))
    result = {**header, **result}
    write_result(result, args.out, format_table(result))
    return result


if __name__ == "__main__":
    main()
