"""Three heads and one trunk learn together: every task's validation AUROC passes 0.9 on synthetic signal."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch

from datamodules.multitask import MultiTaskDataModule
from datamodules.synthetic import SyntheticDiseaseDataModule, SyntheticDrugDataModule, SyntheticTumorDataModule
from ldoctor.models.heads import ClassificationHead, DrugHead
from ldoctor.module import MultiTaskModule
from tests.helpers import tiny_trainer_kwargs


@pytest.mark.slow
def test_three_tasks_learn_on_one_trunk(tmp_path):
    L.seed_everything(0)
    common = {"num_train": 320, "num_val": 96, "batch_size": 16}
    data = MultiTaskDataModule(
        {
            "tumor": SyntheticTumorDataModule(image_size=24, unknown_fraction=0.1, **common),
            "disease": SyntheticDiseaseDataModule(image_size=24, **common),
            "drug": SyntheticDrugDataModule(**common),
        }
    )
    heads = {"tumor": partial(ClassificationHead, dropout=0.1), "disease": partial(ClassificationHead, dropout=0.1),
             "drug": partial(DrugHead, dropout=0.1)}
    module = MultiTaskModule(
        data.tasks, heads=heads, trunk="resnet18", optimizer=partial(torch.optim.AdamW, lr=2e-3, weight_decay=1e-4)
    )
    trainer = L.Trainer(**tiny_trainer_kwargs(tmp_path, max_epochs=8, num_sanity_val_steps=0))
    trainer.fit(module, datamodule=data)
    metrics = trainer.callback_metrics
    assert trainer.global_step == 8 * 20
    for task in ("tumor", "disease", "drug"):
        assert metrics[f"val/{task}/auroc"] > 0.9, (task, float(metrics[f"val/{task}/auroc"]))
    # the uncertainty weights moved away from their start (exp(-0) = 1)
    assert any(abs(float(metrics[f"weights/{t}"]) - 1.0) > 0.01 for t in ("tumor", "disease", "drug"))
