"""Medication recommendation (``drug`` task) on MIMIC-III: our model against baselines and published numbers.

Two modes:

1. **Raw MIMIC-III tables** (default: the shipped MIMIC-III demo, 82 patients / 107 admissions). For each of
   ``--seeds`` patient-level splits (2/3 train, rest halved into test and validation, as SafeDrug), train
   ``MultiTaskModule`` with only the ``drug`` task and score the test admissions beside three baselines fitted
   on the same training patients: the ``k`` most frequent drugs (``k`` chosen for the best training Jaccard),
   the previous admission's drugs (first admissions fall back to the top-``k`` set), and one-vs-rest logistic
   regression on the multi-hot codes of the admissions so far. Reports mean +- std over seeds. Our head options
   (``--wide``, ``--copy``, ``--wide-dropout``, ``--weight-decay``) each take one or more values: with several,
   every combination is trained on the training patients and the one with the best VALIDATION Jaccard is
   scored on the test patients (the test split is never used to choose).
2. **SafeDrug / GAMENet processed records** (``--records records.json`` from ``ldoctor.datasets.mimic.safedrug``,
   optional ``--ddi-pairs``): SafeDrug's split (file order), one training run, then 10 bootstrap draws (with
   replacement) of 80% of the test patients with metrics averaged per patient then over patients, as in
   SafeDrug's ``test`` routine; printed beside SafeDrug, MoleRec and COGNet's published MIMIC-III numbers.

Metrics follow SafeDrug (threshold 0.5): Jaccard, PRAUC, F1, DDI rate, mean number of drugs.

Example:
    python benchmarks/drugrec.py --out drugrec.json
    python benchmarks/drugrec.py --records data/safedrug/records.json --ddi-pairs data/safedrug/ddi_pairs.csv
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import platform
import sys
import time
import warnings
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import torch

from datamodules.mimic import MIMICDrugDataModule
from ldoctor.datasets.mimic import DEMO_DIR
from ldoctor.ddi import load_ddi_matrix
from ldoctor.evaluation.bootstrap import patient_bootstrap_draws
from ldoctor.evaluation.drugrec import METRICS, admission_scores, baselines, mean_std, summarise
from ldoctor.evaluation.prediction import predict
from ldoctor.losses import DrugLoss, EqualWeighting
from ldoctor.metrics.drug import DrugJaccard, DrugMetrics, predicted_sets
from ldoctor.models.heads import DrugHead
from ldoctor.module import MultiTaskModule

#: Published MIMIC-III results (SafeDrug protocol: 10 bootstrap draws of 80% of the test set).
#: SafeDrug: Yang et al., "SafeDrug: Dual Molecular Graph Encoders for Recommending Effective and Safe Drug
#: Combinations", IJCAI 2021, Table 2 (numbers as given in the project's issue 5). MoleRec: Yang et al., WWW 2023,
#: doi:10.1145/3543507.3583872; COGNet: Wu et al., "Conditional Generation Net for Medication Recommendation",
#: WWW 2022, arXiv:2202.06588. The MoleRec and COGNet values below could NOT be checked against the papers'
#: tables with the search tools at hand (only the abstracts were found): they are marked unverified and must
#: be checked before they are quoted.
PUBLISHED = {
    "SafeDrug (Yang et al., IJCAI 2021)": {
        "jaccard": 0.5213,
        "prauc": 0.7647,
        "f1": 0.6768,
        "ddi_rate": 0.0589,
        "avg_drugs": None,
        "verified": True,
    },
    "COGNet (Wu et al., WWW 2022) [unverified]": {
        "jaccard": 0.5336,
        "prauc": 0.7739,
        "f1": 0.6869,
        "ddi_rate": 0.0852,
        "avg_drugs": None,
        "verified": False,
    },
    "MoleRec (Yang et al., WWW 2023) [unverified]": {
        "jaccard": 0.5293,
        "prauc": 0.7746,
        "f1": 0.6849,
        "ddi_rate": 0.0726,
        "avg_drugs": None,
        "verified": False,
    },
}


# ------------------------------------------------------------------------------------------- our model
def train_model(dm: MIMICDrugDataModule, args: argparse.Namespace, seed: int, head: dict) -> MultiTaskModule:
    """Fit ``MultiTaskModule`` with only the ``drug`` task (the image trunk stays unused).

    Args:
        head: one candidate head setting ``{"wide", "copy", "copy_combine", "wide_dropout", "weight_decay"}``.
    """
    L.seed_everything(seed, workers=True, verbose=False)
    loss = partial(
        DrugLoss,
        pos_weight=args.pos_weight,
        margin_weight=args.margin_weight,
        ddi_weight=args.ddi_weight,
        ddi_pairs=args.ddi_pairs if args.ddi_weight > 0 else None,
    )
    drug_head = partial(DrugHead, embed_dim=args.embed_dim, hidden_dim=args.hidden_dim, dropout=args.dropout,
                        wide=head["wide"], copy=head["copy"], wide_dropout=head["wide_dropout"],
                        copy_combine=head["copy_combine"], prior_bias=args.prior_bias)
    model = MultiTaskModule(
        dm.tasks,
        heads={"drug": drug_head},
        trunk="resnet18",
        weighting=EqualWeighting,
        task_losses={"drug": loss},
        metrics={"drug": partial(DrugMetrics, ddi_pairs=args.ddi_pairs)},
        optimizer=partial(torch.optim.AdamW, lr=args.lr, weight_decay=head["weight_decay"]),
    )
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=args.epochs, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, deterministic=True)
    trainer.fit(model, datamodule=dm)
    return model


def head_candidates(args: argparse.Namespace) -> list[dict]:
    """Every combination of the ``--wide``, ``--copy``, ``--copy-combine``, ``--wide-dropout`` and
    ``--weight-decay`` values."""
    return [
        {"wide": w, "copy": c, "copy_combine": m, "wide_dropout": p, "weight_decay": wd}
        for w, c, m, p, wd in itertools.product(
            args.wide, args.copy, args.copy_combine, args.wide_dropout, args.weight_decay
        )
    ]


def predict_split(model: MultiTaskModule, dm: MIMICDrugDataModule, split: str) -> tuple[torch.Tensor, ...]:
    """Probabilities ``[N, D]``, labels ``[N, D]`` and ids of ``split`` (``val``/``test``), in
    ``split_samples(split)`` order."""
    loader = dm.val_dataloader() if split == "val" else dm.test_dataloader()
    out = predict(model.net, "drug", loader, kind="multilabel")
    return torch.from_numpy(out.probs).float(), torch.from_numpy(out.labels).float(), out.ids


def select_on_validation(
    dm: MIMICDrugDataModule, args: argparse.Namespace, seed: int
) -> tuple[MultiTaskModule, dict, list[dict]]:
    """Train every head candidate on the training patients; keep the best validation Jaccard (first on ties).

    The test split is not looked at. With one candidate (or no validation patients) that one is kept.

    Returns:
        the chosen model, its candidate, and ``[{**candidate, "val_jaccard": ...}]`` for every candidate.
    """
    candidates = head_candidates(args)
    if len(candidates) == 1 or dm.val_dataset is None or len(dm.val_dataset) == 0:
        return train_model(dm, args, seed, candidates[0]), candidates[0], []
    best, trials = None, []
    for head in candidates:
        model = train_model(dm, args, seed, head)
        probs, target, _ = predict_split(model, dm, "val")
        jaccard = float(DrugJaccard(args.decision).scores(probs, target).mean())
        trials.append({**head, "val_jaccard": jaccard})
        logging.info("seed %d candidate %s: val Jaccard %.4f", seed, head, jaccard)
        if best is None or jaccard > best[0]:
            best = (jaccard, model, head)
    return best[1], best[2], trials


def ours(
    dm: MIMICDrugDataModule, args: argparse.Namespace, seed: int, ddi: torch.Tensor | None
) -> tuple[dict[str, np.ndarray], list[str], dict, list[dict]]:
    """Test scores of the head chosen on validation, test ids, that head and every candidate's val Jaccard."""
    model, head, trials = select_on_validation(dm, args, seed)
    probs, target, ids = predict_split(model, dm, args.score_split)
    return admission_scores(predicted_sets(probs, args.decision), probs, target, ddi), ids, head, trials


# ------------------------------------------------------------------------------------------- modes
def datamodule(args: argparse.Namespace, split_seed: int | None) -> MIMICDrugDataModule:
    dm = MIMICDrugDataModule(
        mimic_dir=args.mimic_dir,
        ndc_map=args.ndc_map,
        records=args.records,
        top_k_drugs=args.top_k_drugs,
        min_admissions=args.min_admissions,
        split_seed=split_seed,
        batch_size=args.batch_size,
    )
    dm.setup("fit")
    return dm


def run_splits(args: argparse.Namespace) -> dict:
    """Mode 1: repeated patient-level splits, ours vs baselines (mean +- std over seeds)."""
    runs: dict[str, list[dict[str, float]]] = {}
    chosen, trials = [], []
    by_type: dict[str, list[np.ndarray]] = {}
    readmissions: list[np.ndarray] = []
    cohort = None
    for seed in args.seeds:
        dm = datamodule(args, seed)
        cohort = cohort or dm.stats.as_dict()
        ddi = load_ddi_matrix(args.ddi_pairs, dm.drug_vocabulary) if args.ddi_pairs else None
        scores, ids, head, seed_trials = ours(dm, args, seed, ddi)
        chosen.append(head)
        trials.append(seed_trials)
        readmission = np.array([len(s["history"]) > 1 for s in dm.split_samples(args.score_split)])
        assert ids == [s["id"] for s in dm.split_samples(args.score_split)]
        runs.setdefault("ours", []).append(summarise(scores))
        by_type.setdefault("ours", []).append(scores["jaccard"])
        split_baselines = baselines(dm.split_samples("train"), dm.split_samples(args.score_split), dm.drug_vocabulary,
                                    dm.code_vocabulary, ddi, args.decision)
        for name, values in split_baselines.items():
            runs.setdefault(name, []).append(summarise(values))
            by_type.setdefault(name, []).append(values["jaccard"])
        readmissions.append(readmission)
        logging.info("seed %d: ours %s", seed, runs["ours"][-1])
    table = {name: mean_std(r) for name, r in runs.items()}
    best = max((n for n in table if n != "ours"), key=lambda n: table[n]["jaccard_mean"])
    readmission = np.concatenate(readmissions)
    admission_types = {
        name: {
            "first_admissions": float(np.concatenate(v)[~readmission].mean()) if (~readmission).any() else None,
            "readmissions": float(np.concatenate(v)[readmission].mean()) if readmission.any() else None,
        }
        for name, v in by_type.items()
    }
    return {
        "mode": "splits",
        "scored_split": args.score_split,
        "seeds": list(args.seeds),
        "jaccard_by_admission_type": {"first_admissions": int((~readmission).sum()),
                                      "readmissions": int(readmission.sum()), **admission_types},
        "cohort": cohort,
        "table": table,
        "jaccard_mean": table["ours"]["jaccard_mean"],
        "jaccard_std": table["ours"]["jaccard_std"],
        "best_baseline": best,
        "best_baseline_jaccard_mean": table[best]["jaccard_mean"],
        "per_seed": runs,
        "chosen_head": chosen,
        "validation_trials": trials,
    }


def run_bootstrap(args: argparse.Namespace) -> dict:
    """Mode 2: SafeDrug protocol on processed records (file-order split, 10 x 80% bootstrap of the test set)."""
    dm = datamodule(args, None)
    ddi = load_ddi_matrix(args.ddi_pairs, dm.drug_vocabulary) if args.ddi_pairs else None
    scores, ids, head, trials = ours(dm, args, args.seeds[0], ddi)
    patients = [i.split("/")[0] for i in ids]
    draws = [summarise(scores, rows, patients)
             for rows in patient_bootstrap_draws(patients, args.bootstrap, 0.8, args.seeds[0])]
    return {
        "mode": "bootstrap",
        "bootstrap": args.bootstrap,
        "test_patients": len(set(patients)),
        "test_admissions": len(ids),
        "chosen_head": head,
        "validation_trials": trials,
        "table": {"ours": mean_std(draws)},
        "published": PUBLISHED,
        "jaccard_mean": mean_std(draws)["jaccard_mean"],
    }


def print_table(result: dict) -> None:
    header = f"{'method':<48}" + "".join(f"{m:>18}" for m in METRICS)
    print(header)
    for name, row in result["table"].items():
        print(f"{name:<48}" + "".join(f"{row[m + '_mean']:>10.4f} +-{row[m + '_std']:.4f}" for m in METRICS))
    for name, row in result.get("published", {}).items():
        cells = (f"{row[m]:>18.4f}" if row[m] is not None else f"{'-':>18}" for m in METRICS)
        print(f"{name:<48}" + "".join(cells))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mimic-dir", default=None, help=f"raw MIMIC-III tables (default: shipped demo {DEMO_DIR})")
    p.add_argument("--ndc-map", default=None, help="NDC -> ATC-3 CSV (default: shipped map)")
    p.add_argument("--records", default=None, help="records.json from ldoctor.datasets.mimic.safedrug (mode 2)")
    p.add_argument("--ddi-pairs", default=None, help="ATC-3 interaction pairs CSV or ddi_A .npz")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--bootstrap", type=int, default=10, help="bootstrap draws in mode 2")
    p.add_argument("--top-k-drugs", type=int, default=None)
    p.add_argument("--min-admissions", type=int, default=1)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--weight-decay", type=float, nargs="+", default=[1e-2], help="AdamW weight decay (candidates)")
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--hidden-dim", type=int, default=64)
    p.add_argument("--pos-weight", type=float, default=1.0)
    p.add_argument("--margin-weight", type=float, default=0.0)
    p.add_argument("--ddi-weight", type=float, default=0.0)
    p.add_argument("--prior-bias", action="store_true", help="initialise the head bias at the drug log-odds")
    p.add_argument("--wide", nargs="+", default=["none"], choices=["none", "current", "all"],
                   help="wide path of the head (candidates; chosen per seed on validation Jaccard)")
    p.add_argument("--copy", nargs="+", default=["none"], choices=["none", "last", "all"],
                   help="copy path of the head (candidates)")
    p.add_argument("--copy-combine", nargs="+", default=["logit"], choices=["logit", "mixture"],
                   help="copy gate added to the logits, or a probability mixture as COGNet (candidates)")
    p.add_argument("--wide-dropout", type=float, nargs="+", default=[0.0], help="wide-input dropout (candidates)")
    p.add_argument(
        "--decision",
        type=lambda v: v if v == "expected_jaccard" else float(v),
        default=0.5,
        help="our predicted set: drugs with probability >= this (SafeDrug: 0.5), or 'expected_jaccard' "
        "(ldoctor.metrics.expected_jaccard_sets); the logistic regression is then also scored with it",
    )
    p.add_argument(
        "--score-split",
        default="test",
        choices=["test", "val"],
        help="split every method is scored on: test (the benchmark) or val (for choosing options; test unread; "
        "with several head candidates the one chosen on val is then scored on the same val, optimistically)",
    )
    p.add_argument("--out", default=None, help="write the result as JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.records is None and args.mimic_dir is None:
        args.mimic_dir = str(DEMO_DIR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.set_num_threads(2)
    start = time.perf_counter()
    result = run_bootstrap(args) if args.records is not None else run_splits(args)
    result.update(
        {
            "command": " ".join(["python", "benchmarks/drugrec.py", *(argv or sys.argv[1:])]),
            "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads, no GPU",
            "seconds": round(time.perf_counter() - start, 1),
        }
    )
    print_table(result)
    if "best_baseline" in result:
        print(
            f"ours Jaccard {result['jaccard_mean']:.4f} vs best baseline ({result['best_baseline']}) "
            f"{result['best_baseline_jaccard_mean']:.4f}"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
