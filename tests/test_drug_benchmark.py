"""benchmarks/drugrec.py end to end, both modes, on synthetic data in the real formats (run as users run it), and
the nested protocol's promise: no locked-test patient reaches training, validation or any tuning step."""

from __future__ import annotations

import hashlib
import importlib.util
import json

import pytest

from ldoctor.datasets.mimic.dataset import DrugDataset
from ldoctor.datasets.mimic.safedrug import import_safedrug
from ldoctor.evaluation.splits import locked_test_patients
from tests.fixtures.mimic import write_synthetic_mimic, write_synthetic_safedrug
from tests.helpers import ROOT, run_benchmark

pytestmark = pytest.mark.filterwarnings("ignore:.*prescription rows with an NDC.*")


def drugrec(args: list[str], tmp_path) -> tuple[dict, str]:
    out = tmp_path / "drugrec.json"
    run = run_benchmark("drugrec.py", [*args, "--out", str(out)], cwd=tmp_path)
    return json.loads(out.read_text()), run.stdout


QUICK = ["--inner-folds", "2", "--epochs", "1", "--dropout", "0.5", "--wide", "none", "current", "--copy", "last",
         "--bootstrap-draws", "200"]


def synthetic(tmp_path, **kwargs):
    truth = write_synthetic_mimic(tmp_path / "mimic", **{"n_patients": 45, "max_admissions": 2, "seed": 4, **kwargs})
    return truth, ["--mimic-dir", str(truth.folder), "--ndc-map", str(truth.ndc_map)]


@pytest.mark.benchmark
def test_nested_protocol_end_to_end_on_synthetic_mimic(tmp_path):
    truth, data = synthetic(tmp_path)
    result, printed = drugrec([*data, *QUICK], tmp_path)
    assert result["protocol"] == "nested" and result["cohort"]["admissions"] == truth.admissions
    everyone = sorted({line.split(",")[1] for line in (truth.folder / "ADMISSIONS.csv").read_text().splitlines()[1:]})
    locked = locked_test_patients(everyone)
    assert result["locked_test"]["patients"] == len(locked) > 0
    assert result["locked_test"]["ids_sha256"] == hashlib.sha256("\n".join(sorted(locked)).encode()).hexdigest()
    table = result["table"]
    assert set(table) == {"ours", "ours, threshold 0.5", "ours, expected_jaccard", "most_frequent_k",
                          "previous_admission", "logistic_regression", "regression_previous_drugs", "hybrid",
                          "logistic_regression_same_decision", "regression_previous_drugs_same_decision",
                          "hybrid_same_decision"}
    # the chosen (candidate, decision) is the best out-of-fold patient-mean Jaccard among all trials
    trials = result["tuning"]["trials"]
    assert len(trials) == 2 * 2  # wide none/current x decisions 0.5/expected_jaccard
    best = max(trials, key=lambda t: t["jaccard_patient_mean"])
    assert (result["chosen_head"]["wide"], result["chosen_head"]["decision"]) == (best["wide"], best["decision"])
    assert table["ours"]["jaccard"] == table[f"ours, {best['decision']}"]["jaccard"] == result["jaccard_patient_mean"]
    assert result["best_baseline"] == max(result["tuning"]["baselines_cv"],
                                          key=lambda n: result["tuning"]["baselines_cv"][n]["jaccard_patient_mean"])
    for name, d in result["differences"].items():  # ours - baseline, patient-mean Jaccard on the locked test
        assert d["difference"] == pytest.approx(table["ours"]["jaccard"] - table[name]["jaccard"])
        assert d["ci95"][0] <= d["difference"] <= d["ci95"][1]
    # the diagnosis -> drug structure is learnable: codes beat the drug frequencies; no table, no DDI rate
    assert table["logistic_regression"]["jaccard"] > table["most_frequent_k"]["jaccard"] + 0.2
    assert all(row["ddi_rate"] is None for row in table.values())
    assert "locked test" in printed and "ours - best baseline in tuning" in printed


def _load_drugrec():
    spec = importlib.util.spec_from_file_location("drugrec_under_test", ROOT / "benchmarks" / "drugrec.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_locked_test_patient_reaches_training_validation_or_tuning(tmp_path, monkeypatch):
    """Every sample read through a dataset, and every sample a baseline is fitted or tuned on, is recorded with the
    step that read it; only the final scoring may read locked-test patients, and it reads exactly them."""
    truth, data = synthetic(tmp_path, n_patients=40, seed=7)
    drugrec = _load_drugrec()
    step, read, fitted = ["setup"], {}, {}
    original_getitem = DrugDataset.__getitem__

    def getitem(self, index):
        item = original_getitem(self, index)
        read.setdefault(step[-1], set()).add(item["id"].split("/")[0])
        return item

    def during(name, function):
        def wrapped(*args, **kwargs):
            step.append("tuning" if "tuning" in step else name)  # whatever runs inside tuning is tuning
            try:
                return function(*args, **kwargs)
            finally:
                step.pop()
        return wrapped

    original_baselines, original_predict = drugrec.baselines, drugrec.predict_split

    def baselines(train, test, *args, **kwargs):
        tuning = "tuning" in step
        fitted.setdefault("tuning" if tuning else "final", set()).update(s["id"].split("/")[0] for s in train)
        if tuning:
            fitted["tuning"].update(s["id"].split("/")[0] for s in test)
        return original_baselines(train, test, *args, **kwargs)

    def predict_split(model, dm, split):
        return during(f"score {split}", original_predict)(model, dm, split)

    monkeypatch.setattr(DrugDataset, "__getitem__", getitem)
    monkeypatch.setattr(drugrec, "tune", during("tuning", drugrec.tune))
    monkeypatch.setattr(drugrec, "train_model", during("fit", drugrec.train_model))
    monkeypatch.setattr(drugrec, "baselines", baselines)
    monkeypatch.setattr(drugrec, "predict_split", predict_split)
    result = drugrec.main([*data, *QUICK, "--decision", "0.5"])

    everyone = {line.split(",")[1] for line in (truth.folder / "ADMISSIONS.csv").read_text().splitlines()[1:]}
    locked = locked_test_patients(everyone)
    assert result["locked_test"]["patients"] == len(locked) > 0
    assert read["tuning"] and not read["tuning"] & locked  # inner-fold training and validation
    assert read["fit"] and not read["fit"] & locked  # the final fit on every other patient
    assert read["score test"] == locked  # the final scoring reads the locked test, all of it, nothing else
    assert fitted["tuning"] and not fitted["tuning"] & locked  # baselines fitted and scored inside the folds
    assert fitted["final"] == everyone - locked  # the final baselines fit on every non-locked patient
    assert set(read) == {"tuning", "fit", "score test"}


@pytest.mark.benchmark
def test_bootstrap_mode_on_synthetic_safedrug_records(tmp_path):
    folder = write_synthetic_safedrug(tmp_path / "sd", n_patients=45, seed=1)
    records = import_safedrug(folder / "records_final.pkl", folder / "voc_final.pkl", tmp_path / "out",
                              folder / "ddi_A_final.pkl", allow_pickle=True)
    result, printed = drugrec(["--records", str(records), "--ddi-pairs", str(tmp_path / "out" / "ddi_pairs.csv"),
                               "--epochs", "2", "--bootstrap", "4", "--wide", "none", "--copy", "none",
                               "--dropout", "0.5", "--decision", "0.5"], tmp_path)
    assert result["mode"] == "bootstrap" and result["bootstrap"] == 4
    assert result["test_patients"] == 7  # int(45 * 2/3) = 30 train, then int(15 / 2) = 7 test
    row = result["table"]["ours"]
    assert 0 <= row["ddi_rate_mean"] <= 1 and row["jaccard_std"] >= 0  # the user's interaction table
    assert result["published"]["SafeDrug (Yang et al., IJCAI 2021)"]["jaccard"] == 0.5213
    assert "SafeDrug" in printed and "MoleRec" in printed and "COGNet" in printed


@pytest.mark.benchmark
def test_bootstrap_mode_without_an_interaction_table_reports_no_ddi_rate(tmp_path):
    folder = write_synthetic_safedrug(tmp_path / "sd", n_patients=45, seed=1)
    records = import_safedrug(folder / "records_final.pkl", folder / "voc_final.pkl", tmp_path / "out",
                              folder / "ddi_A_final.pkl", allow_pickle=True)
    result, printed = drugrec(["--records", str(records), "--epochs", "1", "--bootstrap", "3", "--wide", "none",
                               "--copy", "none", "--dropout", "0.5", "--decision", "0.5"], tmp_path)
    assert result["table"]["ours"]["ddi_rate_mean"] is None and result["ddi_table"] is None
    assert "no interaction table" in printed
