"""Per-task fine-tuning from a multi-task checkpoint leaves every other head bit-identical."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch

from datamodules.multitask import MultiTaskDataModule
from datamodules.synthetic import SyntheticDiseaseDataModule, SyntheticDrugDataModule, SyntheticTumorDataModule
from ldoctor.callbacks import StagedFinetuning, UnfreezeStep
from ldoctor.models.heads import ClassificationHead, DrugHead
from ldoctor.module import MultiTaskModule
from tests.helpers import tiny_trainer_kwargs

KW = {"num_train": 16, "num_val": 16, "batch_size": 8}


def three_tasks() -> MultiTaskDataModule:
    return MultiTaskDataModule(
        {
            "tumor": SyntheticTumorDataModule(image_size=16, **KW),
            "disease": SyntheticDiseaseDataModule(image_size=16, **KW),
            "drug": SyntheticDrugDataModule(**KW),
        }
    )


def other_task_parameters(model: MultiTaskModule) -> dict[str, torch.Tensor]:
    return {
        n: p.detach().clone()
        for n, p in model.named_parameters()
        if any(f".{task}." in n or n.endswith(f".{task}") for task in ("disease", "drug"))
    }


@pytest.fixture(scope="module")
def multitask_checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multitask")
    model = MultiTaskModule(three_tasks().tasks, trunk="resnet18")
    trainer = L.Trainer(**tiny_trainer_kwargs(tmp, max_epochs=1, limit_val_batches=0))
    trainer.fit(model, datamodule=three_tasks())
    path = tmp / "multitask.ckpt"
    trainer.save_checkpoint(path)
    return path


def validate_all(model: MultiTaskModule, tmp_path) -> dict[str, float]:
    trainer = L.Trainer(**tiny_trainer_kwargs(tmp_path))
    trainer.validate(model, datamodule=three_tasks(), verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


@pytest.mark.parametrize("schedule", [{}, {1: UnfreezeStep(["layer4"], 0.1)}], ids=["trunk-frozen", "layer4-at-epoch-1"])
def test_finetuning_one_task_leaves_other_heads_identical(multitask_checkpoint, tmp_path, schedule):
    tumor_only = SyntheticTumorDataModule(image_size=16, **KW)
    model = MultiTaskModule(
        # the heads ask for priors, which are never applied to heads trained already (from the checkpoint)
        tumor_only.tasks, trunk="resnet18", init_checkpoint=str(multitask_checkpoint),
        heads={"tumor": partial(ClassificationHead, prior_bias=True), "drug": partial(DrugHead, prior_bias=True)},
        optimizer=partial(torch.optim.AdamW, lr=1e-2, weight_decay=0.1),
    )
    assert model.task_names == ["tumor", "disease", "drug"]  # the checkpoint's full task list
    before = validate_all(model, tmp_path / "before")
    others = other_task_parameters(model)
    tumor_head = model.net.heads["tumor"].linear.weight.detach().clone()
    trunk_before = model.backbone.layer4[0].conv1.weight.detach().clone()

    trainer = L.Trainer(**tiny_trainer_kwargs(tmp_path, max_epochs=2, callbacks=[StagedFinetuning(schedule)]))
    trainer.fit(model, datamodule=tumor_only)

    assert others and all(torch.equal(p, others[n]) for n, p in other_task_parameters(model).items())
    assert not torch.equal(model.net.heads["tumor"].linear.weight, tumor_head)
    after = validate_all(model, tmp_path / "after")
    for task in ("disease", "drug"):
        keys = [k for k in before if k.startswith(f"val/{task}/")]
        if schedule:  # layer4 trained: other heads are identical, their inputs are not
            assert not torch.equal(model.backbone.layer4[0].conv1.weight, trunk_before)
        else:
            assert keys and all(after[k] == before[k] for k in keys), task
    # the fine-tuned checkpoint stands alone: full task list, no reference to the starting file
    trainer.save_checkpoint(tmp_path / "tumor-finetuned.ckpt")
    multitask_checkpoint.rename(multitask_checkpoint.with_suffix(".moved"))
    try:
        restored = MultiTaskModule.load_from_checkpoint(tmp_path / "tumor-finetuned.ckpt")
    finally:
        multitask_checkpoint.with_suffix(".moved").rename(multitask_checkpoint)
    assert restored.task_names == ["tumor", "disease", "drug"]
    assert torch.equal(restored.net.heads["tumor"].linear.weight, model.net.heads["tumor"].linear.weight)


def test_init_checkpoint_rejects_a_different_task(multitask_checkpoint):
    other = SyntheticDrugDataModule(num_drugs=5, **KW)
    with pytest.raises(ValueError, match="task 'drug' differs"):
        MultiTaskModule(other.tasks, trunk="resnet18", init_checkpoint=str(multitask_checkpoint))
