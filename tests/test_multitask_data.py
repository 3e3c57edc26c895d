"""Task mixing in MultiTaskDataModule: a 10-sample set and a 1,000-sample set share an epoch."""

from __future__ import annotations

from collections import Counter

import lightning as L
import pytest

from datamodules.multitask import MultiTaskDataModule
from datamodules.synthetic import SyntheticDiseaseDataModule, SyntheticTumorDataModule
from ldoctor.module import MultiTaskModule
from tests.helpers import tiny_trainer_kwargs


def mixed(**kwargs) -> MultiTaskDataModule:
    dm = MultiTaskDataModule(
        {
            "tumor": SyntheticTumorDataModule(num_train=10, image_size=8, batch_size=4),
            "disease": SyntheticDiseaseDataModule(num_train=1000, image_size=8, batch_size=4),
        },
        **kwargs,
    )
    dm.setup("fit")
    return dm


def count_epoch(dm: MultiTaskDataModule) -> tuple[int, Counter, Counter]:
    steps, samples, distinct = 0, Counter(), Counter()
    seen: dict[str, set] = {"tumor": set(), "disease": set()}
    for batch, _, _ in dm.train_dataloader():
        steps += 1
        for task, task_batch in batch.items():
            samples[task] += len(task_batch["id"])
            seen[task].update(task_batch["id"])
    for task, ids in seen.items():
        distinct[task] = len(ids)
    return steps, samples, distinct


def test_temperature_sampling_proportions_hold():
    # p ~ n ** (1 / 2): sqrt(10) = 3.162, sqrt(1000) = 31.623 -> 0.0909 and 0.9091 of 22 samples = 2 and 20
    dm = mixed(steps_per_epoch=50, batch_size=22, temperature=2.0)
    assert dm.mixing_proportions() == pytest.approx({"tumor": 1 / 11, "disease": 10 / 11})
    assert dm.mixing_batch_sizes() == {"tumor": 2, "disease": 20}
    steps, samples, distinct = count_epoch(dm)
    assert steps == 50 and samples == {"tumor": 100, "disease": 1000}
    assert distinct["tumor"] == 10  # the small set cycles (with replacement) ...
    assert 550 < distinct["disease"] < 700  # ... the large one is sampled: 1000 draws from 1000 hit ~632 distinct


def test_explicit_weights_and_proportional_default():
    dm = mixed(steps_per_epoch=10, batch_size=20, task_weights={"tumor": 1.0, "disease": 3.0})
    assert dm.mixing_batch_sizes() == {"tumor": 5, "disease": 15}
    assert count_epoch(dm)[1] == {"tumor": 50, "disease": 150}
    proportional = mixed(steps_per_epoch=10, batch_size=101)  # temperature 1: by size, 10 : 1000
    assert proportional.mixing_batch_sizes() == {"tumor": 1, "disease": 100}


def test_default_mode_cycles_the_small_set():
    steps, samples, _ = count_epoch(mixed())
    # max_size_cycle: 1000 / 4 = 250 steps; the 10 tumour samples come as batches 4, 4, 2 and restart:
    # 83 full cycles (830) + one batch of 4
    assert steps == 250 and samples == {"tumor": 834, "disease": 1000}


def test_bad_mixing_arguments():
    with pytest.raises(ValueError, match="task_weights"):
        mixed(steps_per_epoch=5, task_weights={"liver": 1.0})
    with pytest.raises(ValueError, match="temperature"):
        mixed(steps_per_epoch=5, temperature=0.0)


def test_mixed_epoch_trains_for_the_fixed_number_of_steps(tmp_path):
    dm = mixed(steps_per_epoch=3, batch_size=8, temperature=1e6)
    model = MultiTaskModule(dm.tasks, trunk="resnet18")
    trainer = L.Trainer(**tiny_trainer_kwargs(tmp_path, max_epochs=2, limit_val_batches=0))
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 6


def test_a_task_draws_the_same_batches_alone_or_mixed():
    """Single-task and 1v3 comparisons rely on it: the disease batches do not depend on the other tasks mixed."""
    def disease_ids(datamodules: dict) -> list[list[str]]:
        dm = MultiTaskDataModule(datamodules, steps_per_epoch=6, task_weights={n: 4.0 for n in datamodules})
        dm.setup("fit")
        return [list(batch["disease"]["id"]) for batch, _, _ in dm.train_dataloader()]

    def disease() -> SyntheticDiseaseDataModule:
        return SyntheticDiseaseDataModule(num_train=1000, image_size=8, batch_size=4)

    alone = disease_ids({"disease": disease()})
    mixed_first = disease_ids({"tumor": SyntheticTumorDataModule(num_train=10, image_size=8, batch_size=4),
                               "disease": disease()})
    assert len(alone) == 6 and all(len(b) == 4 for b in alone)
    assert mixed_first == alone
    assert len({i for b in alone for i in b}) > 12  # drawn at random, not the first rows
