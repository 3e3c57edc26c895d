"""benchmarks/pneumoniamnist.py as users run it: the headline is the test score of the epoch chosen on validation,
computed once; without a test split in the file, the official val split is that test and never chooses."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.fixtures.images import learnable_npz
from tests.helpers import run_benchmark


def run(tmp_path, npz: str) -> tuple[dict, str]:
    out = tmp_path / "r.json"
    done = run_benchmark("pneumoniamnist.py", ["--npz", npz, "--image-size", "28", "--epochs", "2", "--batch-size",
                                               "32", "--lr", "3e-3", "--out", str(out)], cwd=tmp_path)
    return json.loads(out.read_text()), done.stdout


@pytest.mark.benchmark
@pytest.mark.parametrize("with_test", [False, True], ids=["no-test-split", "test-split"])
def test_headline_is_the_test_score_of_the_validation_chosen_epoch(tmp_path, with_test):
    sizes = {"train": 120, "val": 40, **({"test": 40} if with_test else {})}
    result, printed = run(tmp_path, learnable_npz(tmp_path / "p.npz", sizes))
    if with_test:
        assert (result["train_samples"], result["val_samples"], result["test_samples"]) == (120, 40, 40)
        assert result["test_split"] == "official test" and result["val_split"] == "official val"
    else:  # 10 % of train chooses the epoch; the file's val split is the test, untouched until then
        assert (result["train_samples"], result["val_samples"], result["test_samples"]) == (108, 12, 40)
        assert result["test_split"].startswith("official val")
    # the epoch printed with the best validation AUROC is the one scored (first of ties, as ModelCheckpoint)
    per_epoch = [float(line.split("val AUROC ")[1].split(",")[0]) for line in printed.splitlines()
                 if line.startswith("epoch ")]
    assert len(per_epoch) == 2 and result["best_epoch"] == int(np.argmax(per_epoch))
    assert result["selection_val_auroc"] == pytest.approx(max(per_epoch), abs=1e-4)
    assert result["test_auroc"] > 0.9  # learnable signal, scored on images that never chose anything
    assert "scored once" in printed
