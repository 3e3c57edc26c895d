"""Medication recommendation (``drug`` task) on MIMIC-III: our model against baselines and published numbers.

Two modes:

1. **Raw MIMIC-III tables, nested protocol** (default: the shipped MIMIC-III demo, 82 patients / 107 admissions).
   A **locked test set** of patients, fixed by a hash of ``SUBJECT_ID`` (about 1/6, as SafeDrug's test share:
   :func:`ldoctor.evaluation.splits.locked_test_patients`), is set aside before anything else and read once, at
   the end. Every choice is made by patient-grouped cross-validation **inside the other patients**
   (``--inner-folds``): each head candidate (every combination of ``--wide``, ``--copy``, ``--copy-combine``,
   ``--wide-dropout``, ``--weight-decay``, ``--dropout`` and ``--epochs``) and each decision rule
   (``--decision``) is scored on the out-of-fold validation admissions, and the best patient-mean Jaccard wins.
   The chosen candidate is then trained on all non-locked patients and scored on the locked test once, beside
   the baselines of :func:`ldoctor.evaluation.drugrec.baselines` fitted on the same patients (most frequent ``k``,
   previous admission, logistic regression, the regression with the previous admission's drugs, and the hybrid
   "copy the previous admission if there is one, else regress"). Reported: Jaccard averaged per patient then
   over patients (SafeDrug's ``test`` routine; primary) and over admissions; our model at both decision rules;
   a 95 % patient-bootstrap interval of ours minus each baseline on the locked test.
2. **SafeDrug / GAMENet processed records** (``--records records.json`` from ``ldoctor.datasets.mimic.safedrug``):
   SafeDrug's split (file order; candidates chosen on its validation split), one training run, then 10
   bootstrap draws (with replacement) of 80% of the test patients with metrics averaged per patient then over
   patients, as in SafeDrug's ``test`` routine; printed beside SafeDrug, MoleRec and COGNet's published
   MIMIC-III numbers.

Metrics follow SafeDrug: Jaccard, PRAUC, F1, mean number of drugs, and the DDI rate **only with a user-supplied
interaction table** (``--ddi-pairs``: a CSV with columns ``atc3_a,atc3_b``, one interacting pair of ATC level-3
classes per row, order and case free, or SafeDrug's ``ddi_A`` converted to ``.npz`` by
``ldoctor.datasets.mimic.safedrug``); without one the DDI rate is unknown and printed as ``-``.

Example:
    python benchmarks/drugrec.py --out drugrec.json
    python benchmarks/drugrec.py --records data/safedrug/records.json --ddi-pairs data/safedrug/ddi_pairs.csv
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import platform
import sys
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from datamodules.mimic import MIMICDrugDataModule
from ldoctor.datasets.mimic import DEMO_DIR
from ldoctor.ddi import load_ddi_matrix
from ldoctor.evaluation.bootstrap import paired_bootstrap, patient_bootstrap_draws
from ldoctor.evaluation.drugrec import METRICS, admission_scores, baselines, mean_std, patient_means, summarise
from ldoctor.evaluation.prediction import predict
from ldoctor.evaluation.splits import locked_test_patients
from ldoctor.losses import DrugLoss, EqualWeighting
from ldoctor.metrics.drug import EXPECTED_JACCARD, DrugMetrics, predicted_sets
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
#: Keys of one head candidate (the options tuned inside the training patients).
CANDIDATE_KEYS = ("wide", "copy", "copy_combine", "wide_dropout", "weight_decay", "dropout", "epochs")


def train_model(dm: MIMICDrugDataModule, args: argparse.Namespace, seed: int, head: dict) -> MultiTaskModule:
    """Fit ``MultiTaskModule`` with only the ``drug`` task (the image trunk stays unused) on ``dm``'s training
    patients, for ``head["epochs"]`` epochs with no validation: nothing is chosen here.

    Args:
        head: one candidate (:data:`CANDIDATE_KEYS`).
    """
    L.seed_everything(seed, workers=True, verbose=False)
    loss = partial(
        DrugLoss,
        pos_weight=args.pos_weight,
        margin_weight=args.margin_weight,
        ddi_weight=args.ddi_weight,
        ddi_pairs=args.ddi_pairs if args.ddi_weight > 0 else None,
    )
    drug_head = partial(DrugHead, embed_dim=args.embed_dim, hidden_dim=args.hidden_dim, dropout=head["dropout"],
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
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=head["epochs"], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, deterministic=True)
    trainer.fit(model, datamodule=dm)
    return model


def head_candidates(args: argparse.Namespace) -> list[dict]:
    """Every combination of the candidate options' values (:data:`CANDIDATE_KEYS`), in argument order."""
    values = [getattr(args, key) for key in CANDIDATE_KEYS]
    return [dict(zip(CANDIDATE_KEYS, combination)) for combination in itertools.product(*values)]


def predict_split(model: MultiTaskModule, dm: MIMICDrugDataModule, split: str) -> tuple[torch.Tensor, ...]:
    """Probabilities ``[N, D]``, labels ``[N, D]`` and ids of ``split`` (``val``/``test``), in
    ``split_samples(split)`` order."""
    loader = dm.val_dataloader() if split == "val" else dm.test_dataloader()
    out = predict(model.net, "drug", loader, kind="multilabel")
    return torch.from_numpy(out.probs).float(), torch.from_numpy(out.labels).float(), out.ids


def decision_name(decision: float | str) -> str:
    return EXPECTED_JACCARD if decision == EXPECTED_JACCARD else f"threshold {decision:g}"


def parse_decision(value: str) -> float | str:
    return value if value == EXPECTED_JACCARD else float(value)


def subject(sample_id: str) -> str:
    """The patient (``SUBJECT_ID``) of a ``"<subject_id>/<hadm_id>"`` sample id."""
    return sample_id.split("/")[0]


# ------------------------------------------------------------------------------------------- nested protocol
def datamodule(args: argparse.Namespace, **split: Any) -> MIMICDrugDataModule:
    """The cohort of ``args`` with the given split options (``locked_test``, ``folds``, ``val_share``, ...)."""
    dm = MIMICDrugDataModule(
        mimic_dir=args.mimic_dir,
        ndc_map=args.ndc_map,
        records=args.records,
        top_k_drugs=args.top_k_drugs,
        min_admissions=args.min_admissions,
        batch_size=args.batch_size,
        **split,
    )
    dm.setup("fit")
    return dm


def check_locked_out(dm: MIMICDrugDataModule, locked: set[str], where: str) -> None:
    """Refuse to go on when a locked-test patient sits in ``dm``'s training or validation split."""
    seen = {str(r["subject_id"]) for name in ("train", "val") for r in dm.splits[name]}
    leaked = seen & locked
    if leaked:
        raise RuntimeError(f"{where}: {len(leaked)} locked-test patients reached training or validation "
                           f"(e.g. {sorted(leaked)[:3]}); the nested protocol is broken")


def locked_set(args: argparse.Namespace) -> tuple[set[str], list[str]]:
    """The locked-test patients of the cohort and every patient, read from the locked-test DataModule."""
    dm = MIMICDrugDataModule(mimic_dir=args.mimic_dir, ndc_map=args.ndc_map, top_k_drugs=args.top_k_drugs,
                             min_admissions=args.min_admissions, locked_test=True)
    dm.prepare()
    everyone = sorted({str(r["subject_id"]) for rs in dm.splits.values() for r in rs})
    locked = locked_test_patients(everyone)
    assert locked == {str(r["subject_id"]) for r in dm.splits["test"]}
    return locked, everyone


def pooled_summary(scores: list[dict[str, np.ndarray]], ids: list[list[str]]) -> dict[str, float]:
    """Jaccard over the pooled out-of-fold admissions: per patient then over patients, and per admission."""
    jaccard = np.concatenate([s["jaccard"] for s in scores])
    patients = [subject(i) for part in ids for i in part]
    return {"jaccard_patient_mean": float(np.mean(patient_means(jaccard, patients)[1])),
            "jaccard_admission_mean": float(np.mean(jaccard)), "admissions": len(jaccard),
            "patients": len(set(patients))}


def tune(args: argparse.Namespace, locked: set[str]) -> dict:
    """Inner cross-validation over the non-locked patients: every head candidate and decision rule, and every
    baseline, scored on the out-of-fold validation admissions. The locked test is never built into a split."""
    candidates = head_candidates(args)
    ours: dict[tuple[int, str], dict[str, list]] = {}
    base: dict[str, dict[str, list]] = {}
    for fold in range(args.inner_folds):
        dm = datamodule(args, locked_test=True, folds=args.inner_folds, fold=fold, split_seed=args.seed)
        check_locked_out(dm, locked, f"inner fold {fold}")
        train, val = dm.split_samples("train"), dm.split_samples("val")
        for c, head in enumerate(candidates):
            model = train_model(dm, args, args.seed, head)
            probs, target, ids = predict_split(model, dm, "val")
            assert ids == [s["id"] for s in val]
            for decision in args.decision:
                entry = ours.setdefault((c, decision_name(decision)), {"scores": [], "ids": []})
                entry["scores"].append(admission_scores(predicted_sets(probs, decision), probs, target, None))
                entry["ids"].append(ids)
            logging.info("inner fold %d candidate %s done", fold, head)
        for name, values in baselines(train, val, dm.drug_vocabulary, dm.code_vocabulary, None,
                                      EXPECTED_JACCARD if EXPECTED_JACCARD in args.decision else 0.5).items():
            entry = base.setdefault(name, {"scores": [], "ids": []})
            entry["scores"].append(values)
            entry["ids"].append([s["id"] for s in val])
    trials = [{**candidates[c], "decision": decision, **pooled_summary(e["scores"], e["ids"])}
              for (c, decision), e in ours.items()]
    best = max(trials, key=lambda t: t["jaccard_patient_mean"])  # first of ties, in candidate then decision order
    baseline_cv = {name: pooled_summary(e["scores"], e["ids"]) for name, e in base.items()}
    best_baseline = max(baseline_cv, key=lambda n: baseline_cv[n]["jaccard_patient_mean"])
    return {"inner_folds": args.inner_folds, "seed": args.seed, "candidates": len(candidates),
            "decisions": [decision_name(d) for d in args.decision], "trials": trials,
            "chosen": {**{k: best[k] for k in CANDIDATE_KEYS}, "decision": best["decision"]},
            "chosen_cv_jaccard_patient_mean": best["jaccard_patient_mean"],
            "baselines_cv": baseline_cv, "best_baseline": best_baseline}


def table_row(values: dict[str, np.ndarray], patients: list[str]) -> dict[str, float | None]:
    """Every metric averaged per patient then over patients (``<metric>``) and over admissions
    (``<metric>_admission_mean``)."""
    by_patient, by_admission = summarise(values, patients=patients), summarise(values)
    return {**by_patient, **{f"{k}_admission_mean": v for k, v in by_admission.items() if k != "ddi_rate"}}


def locked_test_hash(locked: set[str]) -> str:
    """sha256 of the sorted locked-test patient ids, one per line: names the locked set without listing it."""
    return hashlib.sha256("\n".join(sorted(locked)).encode()).hexdigest()


def nested(args: argparse.Namespace) -> dict:
    """Mode 1: tune inside the non-locked patients, fit the chosen head on all of them, score the locked test once."""
    locked, everyone = locked_set(args)
    tuning = tune(args, locked)
    chosen = tuning["chosen"]
    dm = datamodule(args, locked_test=True, val_share=0.0, split_seed=args.seed)
    check_locked_out(dm, locked, "final fit")
    ddi = load_ddi_matrix(args.ddi_pairs, dm.drug_vocabulary) if args.ddi_pairs else None
    model = train_model(dm, args, args.seed, {k: chosen[k] for k in CANDIDATE_KEYS})
    probs, target, ids = predict_split(model, dm, "test")
    test = dm.split_samples("test")
    assert ids == [s["id"] for s in test] and {subject(i) for i in ids} == locked
    patients = [subject(i) for i in ids]
    chosen_rule = {decision_name(d): d for d in args.decision}[chosen["decision"]]
    rows = {"ours": admission_scores(predicted_sets(probs, chosen_rule), probs, target, ddi)}
    for decision in (0.5, EXPECTED_JACCARD):
        rows[f"ours, {decision_name(decision)}"] = admission_scores(predicted_sets(probs, decision), probs, target, ddi)
    rows.update(baselines(dm.split_samples("train"), test, dm.drug_vocabulary, dm.code_vocabulary, ddi,
                          EXPECTED_JACCARD))
    table = {name: table_row(values, patients) for name, values in rows.items()}
    names = [n for n in rows if not n.startswith("ours")]
    per_patient = {name: patient_means(values["jaccard"], patients)[1] for name, values in rows.items()}
    order = patient_means(rows["ours"]["jaccard"], patients)[0]

    def minus(name: str) -> dict:
        return paired_bootstrap(np.zeros(len(order)), per_patient["ours"], per_patient[name], order,
                                metric=lambda _, s: float(np.mean(s)), valid=None, draws=args.bootstrap_draws,
                                seed=args.seed)

    differences = {name: minus(name) for name in names}
    best_on_test = max(names, key=lambda n: table[n]["jaccard"])
    readmission = np.array([len(s["history"]) > 1 for s in test])
    by_type = {name: {"first_admissions": float(v["jaccard"][~readmission].mean()) if (~readmission).any() else None,
                      "readmissions": float(v["jaccard"][readmission].mean()) if readmission.any() else None}
               for name, v in rows.items()}
    cv_best = tuning["best_baseline"]
    return {
        "mode": "nested",
        "protocol": "nested",
        "cohort": dm.stats.as_dict(),
        "locked_test": {"patients": len(locked), "admissions": len(ids), "of_patients": len(everyone),
                        "share": 1 / 6, "ids_sha256": locked_test_hash(locked),
                        "rule": "ldoctor.evaluation.splits.locked_test_patients (sha256 of salt + SUBJECT_ID)"},
        "training_patients": len({str(r["subject_id"]) for r in dm.splits["train"]}),
        "tuning": tuning,
        "chosen_head": chosen,
        "table": table,
        "jaccard_patient_mean": table["ours"]["jaccard"],
        "jaccard_admission_mean": table["ours"]["jaccard_admission_mean"],
        "best_baseline": cv_best,
        "best_baseline_jaccard_patient_mean": table[cv_best]["jaccard"] if cv_best in table else None,
        "ours_minus_best_baseline": differences.get(cv_best),
        "best_baseline_on_test": best_on_test,
        "ours_minus_best_baseline_on_test": differences[best_on_test],
        "differences": differences,
        "jaccard_by_admission_type": {"first_admissions": int((~readmission).sum()),
                                      "readmissions": int(readmission.sum()), **by_type},
    }


# ------------------------------------------------------------------------------------------- SafeDrug records
def select_on_validation(
    dm: MIMICDrugDataModule, args: argparse.Namespace, seed: int
) -> tuple[MultiTaskModule, dict, list[dict]]:
    """SafeDrug records: train every candidate on SafeDrug's training split, keep the best validation Jaccard
    (per patient then over patients; first on ties) at the first ``--decision``. The test split is not read."""
    candidates = head_candidates(args)
    decision = args.decision[0]
    if len(candidates) == 1 or dm.val_dataset is None or len(dm.val_dataset) == 0:
        return train_model(dm, args, seed, candidates[0]), candidates[0], []
    best, trials = None, []
    for head in candidates:
        model = train_model(dm, args, seed, head)
        probs, target, ids = predict_split(model, dm, "val")
        values = admission_scores(predicted_sets(probs, decision), probs, target, None)
        jaccard = summarise(values, patients=[subject(i) for i in ids])["jaccard"]
        trials.append({**head, "val_jaccard": jaccard})
        if best is None or jaccard > best[0]:
            best = (jaccard, model, head)
    return best[1], best[2], trials


def run_bootstrap(args: argparse.Namespace) -> dict:
    """Mode 2: SafeDrug protocol on processed records (file-order split, 10 x 80% bootstrap of the test set)."""
    dm = datamodule(args, split_seed=None)
    ddi = load_ddi_matrix(args.ddi_pairs, dm.drug_vocabulary) if args.ddi_pairs else None
    model, head, trials = select_on_validation(dm, args, args.seed)
    probs, target, ids = predict_split(model, dm, "test")
    scores = admission_scores(predicted_sets(probs, args.decision[0]), probs, target, ddi)
    patients = [subject(i) for i in ids]
    draws = [summarise(scores, rows, patients)
             for rows in patient_bootstrap_draws(patients, args.bootstrap, 0.8, args.seed)]
    return {
        "mode": "bootstrap",
        "protocol": "safedrug",
        "bootstrap": args.bootstrap,
        "test_patients": len(set(patients)),
        "test_admissions": len(ids),
        "chosen_head": head,
        "validation_trials": trials,
        "table": {"ours": mean_std(draws)},
        "published": PUBLISHED,
        "jaccard_mean": mean_std(draws)["jaccard_mean"],
        "ddi_table": args.ddi_pairs,
    }


# ------------------------------------------------------------------------------------------- output
def _cell(value: float | None, width: int = 10) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.4f}"


def print_table(result: dict) -> None:
    if result["mode"] == "nested":
        print(f"locked test: {result['locked_test']['patients']} patients, {result['locked_test']['admissions']} "
              f"admissions (ids sha256 {result['locked_test']['ids_sha256'][:12]}); chosen inside the other "
              f"{result['training_patients']} patients: {result['chosen_head']}")
        print(f"{'method':<46}{'Jaccard/pt':>11}{'Jaccard/adm':>12}{'PRAUC':>10}{'F1':>10}{'DDI':>10}{'# drugs':>10}")
        for name, row in result["table"].items():
            print(f"{name:<46}{_cell(row['jaccard'], 11)}{_cell(row['jaccard_admission_mean'], 12)}"
                  f"{_cell(row['prauc'])}{_cell(row['f1'])}{_cell(row['ddi_rate'])}{_cell(row['avg_drugs'])}")
        for label, key in (("best baseline in tuning", "ours_minus_best_baseline"),
                           ("best baseline on the test", "ours_minus_best_baseline_on_test")):
            d = result[key]
            if d is not None:
                print(f"ours - {label}: {d['difference']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] "
                      f"(Jaccard per patient, 95 % patient bootstrap)")
        return
    print(f"{'method':<48}" + "".join(f"{m:>18}" for m in METRICS))
    for name, row in result["table"].items():
        print(f"{name:<48}" + "".join(f"{_cell(row[m + '_mean'])} +-{_cell(row[m + '_std'], 6)}" for m in METRICS))
    for name, row in result.get("published", {}).items():
        print(f"{name:<48}" + "".join(_cell(row[m], 18) for m in METRICS))
    if result["table"]["ours"]["ddi_rate_mean"] is None:
        print("DDI: no interaction table given (--ddi-pairs), so no DDI rate for ours")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mimic-dir", default=None, help=f"raw MIMIC-III tables (default: shipped demo {DEMO_DIR})")
    p.add_argument("--ndc-map", default=None, help="NDC -> ATC-3 CSV (default: shipped map)")
    p.add_argument("--records", default=None, help="records.json from ldoctor.datasets.mimic.safedrug (mode 2)")
    p.add_argument("--ddi-pairs", default=None,
                   help="your interaction table: CSV with columns atc3_a,atc3_b (one interacting ATC-3 pair per row) "
                        "or SafeDrug's ddi_A as .npz; without it no DDI rate is reported")
    p.add_argument("--seed", type=int, default=0, help="inner-fold shuffle and training seed")
    p.add_argument("--inner-folds", type=int, default=5, help="patient-grouped folds inside the non-locked patients")
    p.add_argument("--bootstrap", type=int, default=10, help="bootstrap draws in mode 2 (SafeDrug: 10)")
    p.add_argument("--bootstrap-draws", type=int, default=2000, help="draws of the locked-test difference intervals")
    p.add_argument("--top-k-drugs", type=int, default=None)
    p.add_argument("--min-admissions", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--hidden-dim", type=int, default=64)
    p.add_argument("--pos-weight", type=float, default=1.0)
    p.add_argument("--margin-weight", type=float, default=0.0)
    p.add_argument("--ddi-weight", type=float, default=0.0)
    p.add_argument("--prior-bias", action=argparse.BooleanOptionalAction, default=True,
                   help="initialise the head bias at the training drug log-odds")
    tuned = p.add_argument_group("candidates (every combination is tried inside the training patients)")
    tuned.add_argument("--epochs", type=int, nargs="+", default=[10, 20])
    tuned.add_argument("--dropout", type=float, nargs="+", default=[0.5, 0.9], help="dropout of the deep read-out")
    tuned.add_argument("--weight-decay", type=float, nargs="+", default=[1e-2], help="AdamW weight decay")
    tuned.add_argument("--wide", nargs="+", default=["none", "current"], choices=["none", "current", "all"],
                       help="wide path of the head")
    tuned.add_argument("--copy", nargs="+", default=["none", "last"], choices=["none", "last", "all"],
                       help="copy path of the head")
    tuned.add_argument("--copy-combine", nargs="+", default=["mixture"], choices=["logit", "mixture"],
                       help="copy gate added to the logits, or a probability mixture as COGNet")
    tuned.add_argument("--wide-dropout", type=float, nargs="+", default=[0.0], help="wide-input dropout")
    tuned.add_argument(
        "--decision", type=parse_decision, nargs="+", default=[0.5, EXPECTED_JACCARD],
        help="predicted set: drugs with probability >= a threshold (SafeDrug: 0.5), or 'expected_jaccard' "
        "(ldoctor.metrics.drug.expected_jaccard_sets); each is tried in tuning, both are reported on the test",
    )
    p.add_argument("--out", default=None, help="write the result as JSON here")
    args = p.parse_args(argv)
    if args.inner_folds < 2:
        p.error(f"--inner-folds must be >= 2, got {args.inner_folds}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.records is None and args.mimic_dir is None:
        args.mimic_dir = str(DEMO_DIR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.set_num_threads(2)
    start = time.perf_counter()
    result = run_bootstrap(args) if args.records is not None else nested(args)
    result.update(
        {
            "command": " ".join(["python", "benchmarks/drugrec.py", *(argv if argv is not None else sys.argv[1:])]),
            "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads, no GPU",
            "seconds": round(time.perf_counter() - start, 1),
        }
    )
    print_table(result)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
