"""Staged fine-tuning, in the manner of Lightning's own fine-tuning tests: freeze state and LRs per epoch,
BatchNorm of frozen stages in eval mode, and identical state after a resume."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from datamodules.synthetic import SyntheticTumorDataModule
from ldoctor.callbacks import StagedFinetuning, UnfreezeStep
from ldoctor.module import MultiTaskModule
from tests.helpers import tiny_trainer_kwargs

LR = 1e-2
SCHEDULE = {1: UnfreezeStep(["layer4"], 0.1), 2: UnfreezeStep(["layer3", "layer2"], 0.05)}


class Recorder(L.Callback):
    """Per epoch: requires_grad of each trunk stage, BatchNorm mode of each stage, LR of each group."""

    def __init__(self) -> None:
        self.epochs: dict[int, dict] = {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        stages = {n: getattr(pl_module.backbone, n) for n in pl_module.backbone.stages}
        self.epochs[trainer.current_epoch] = {
            "requires_grad": {n: all(p.requires_grad for p in m.parameters()) for n, m in stages.items()},
            "bn_training": {
                n: any(b.training for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)) for n, m in stages.items()
            },
            "lr": {g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups},
        }


def data() -> SyntheticTumorDataModule:
    return SyntheticTumorDataModule(num_train=8, num_val=4, image_size=16, batch_size=4)


def module() -> MultiTaskModule:
    return MultiTaskModule(data().tasks, trunk="resnet18", optimizer=partial(torch.optim.AdamW, lr=LR))


def test_freeze_state_and_learning_rates_per_epoch(tmp_path):
    recorder = Recorder()
    model = module()
    bn_before = model.backbone.layer1[0].bn1.running_mean.clone()
    callbacks = [StagedFinetuning(SCHEDULE), recorder]
    trainer = L.Trainer(**tiny_trainer_kwargs(tmp_path, max_epochs=4, limit_val_batches=0, callbacks=callbacks))
    trainer.fit(model, datamodule=data())
    stages = ["stem", "layer1", "layer2", "layer3", "layer4"]
    trainable = {0: set(), 1: {"layer4"}, 2: {"layer2", "layer3", "layer4"}, 3: {"layer2", "layer3", "layer4"}}
    for epoch, expected in trainable.items():
        record = recorder.epochs[epoch]
        assert {s for s in stages if record["requires_grad"][s]} == expected, epoch
        # frozen stages keep BatchNorm in eval mode, unfrozen ones train
        assert {s for s in stages if record["bn_training"][s]} == expected, epoch
    assert recorder.epochs[0]["lr"] == {"heads": LR, "heads_no_decay": LR, "weighting": LR}
    assert recorder.epochs[1]["lr"]["trunk.layer4"] == pytest.approx(LR * 0.1)
    assert recorder.epochs[3]["lr"]["trunk.layer3"] == pytest.approx(LR * 0.05)
    assert recorder.epochs[3]["lr"]["trunk.layer2_no_decay"] == pytest.approx(LR * 0.05)
    assert list(recorder.epochs[3]["lr"])[3:] == [
        "trunk.layer4", "trunk.layer4_no_decay", "trunk.layer3", "trunk.layer3_no_decay",
        "trunk.layer2", "trunk.layer2_no_decay",
    ]
    # layer1 stayed frozen for four epochs: its BatchNorm statistics never moved
    assert torch.equal(model.backbone.layer1[0].bn1.running_mean, bn_before)
    assert not all(torch.equal(a, b) for a, b in zip(model.backbone.layer4.parameters(), module().backbone.layer4.parameters()))


def final_state(trainer: L.Trainer, model: MultiTaskModule) -> dict:
    return {
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "groups": [(g["name"], g["lr"], len(g["params"])) for g in trainer.optimizers[0].param_groups],
        "step": trainer.global_step,
    }


def test_resume_restores_freeze_state_and_learning_rates(tmp_path):
    L.seed_everything(0)
    full_model = module()
    full = L.Trainer(**tiny_trainer_kwargs(tmp_path / "full", max_epochs=4, limit_val_batches=0,
                                           callbacks=[StagedFinetuning(SCHEDULE)]))
    full.fit(full_model, datamodule=data())

    L.seed_everything(0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    first = L.Trainer(**tiny_trainer_kwargs(tmp_path / "a", max_epochs=2, limit_val_batches=0,
                                            enable_checkpointing=True, callbacks=[StagedFinetuning(SCHEDULE), checkpoint]))
    first.fit(module(), datamodule=data())
    resumed_model = module()  # a fresh process would start like this: the whole trunk trainable
    resumed = L.Trainer(**tiny_trainer_kwargs(tmp_path / "b", max_epochs=4, limit_val_batches=0,
                                              callbacks=[StagedFinetuning(SCHEDULE)]))
    resumed.fit(resumed_model, datamodule=data(), ckpt_path=str(tmp_path / "ckpt" / "epoch=1-step=4.ckpt"))

    assert final_state(resumed, resumed_model) == final_state(full, full_model)
    assert not resumed_model.backbone.layer1[0].conv1.weight.requires_grad  # not re-frozen wrongly, not thawed
    assert not any(b.training for b in resumed_model.backbone.stem.modules() if isinstance(b, torch.nn.BatchNorm2d))


def test_schedule_naming_unknown_or_unfrozen_stage_fails():
    trainer = L.Trainer(**tiny_trainer_kwargs("/nonexistent-unused", max_epochs=1))
    with pytest.raises(ValueError, match=r"unknown trunk stages \['layer9'\]"):
        StagedFinetuning(freeze=["layer9"]).setup(trainer, module(), "fit")
    with pytest.raises(ValueError, match=r"unfreezes \['layer4'\], which are not frozen"):
        StagedFinetuning({1: UnfreezeStep(["layer4"])}, freeze=["stem"]).setup(trainer, module(), "fit")
