from __future__ import annotations

import csv
from functools import partial

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from datamodules.multitask import MultiTaskDataModule
from datamodules.synthetic import SyntheticDiseaseDataModule, SyntheticDrugDataModule, SyntheticTumorDataModule
from ldoctor.datasets.lidc import tumor_task
from ldoctor.datasets.mimic import drug_task
from ldoctor.datasets.nih import disease_task
from ldoctor.losses import EqualWeighting, StaticWeighting
from ldoctor.models.heads import ClassificationHead, DrugHead
from ldoctor.module import MultiTaskModule
from tests.helpers import tiny_trainer_kwargs

DRUG = drug_task(["A", "B", "C"], ["D:1", "D:2", "P:3", "P:4"])


def small_module(tasks=None, **kwargs) -> MultiTaskModule:
    return MultiTaskModule(tasks or [tumor_task(), disease_task(), DRUG], trunk="resnet18", **kwargs)


def synthetic_data(batch_size: int = 4) -> MultiTaskDataModule:
    kw = {"num_train": 8, "num_val": 8, "num_test": 8, "batch_size": batch_size}
    return MultiTaskDataModule(
        {
            "tumor": SyntheticTumorDataModule(image_size=32, **kw),
            "disease": SyntheticDiseaseDataModule(image_size=32, **kw),
            "drug": SyntheticDrugDataModule(**kw),
        }
    )


def test_parameter_groups_decay_only_weights():
    module = small_module(optimizer=partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05), trunk_lr_factor=0.1)
    optimizer = module.configure_optimizers()
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert set(groups) == {"trunk", "trunk_no_decay", "heads", "heads_no_decay", "weighting"}
    assert groups["weighting"]["params"] == [module.weighting.log_vars]
    for name, group in groups.items():
        decays = not name.endswith("_no_decay") and name != "weighting"
        assert group["weight_decay"] == (0.05 if decays else 0.0), name
        assert all((p.ndim >= 2) == decays for p in group["params"]), name
    assert groups["trunk"]["lr"] == pytest.approx(1e-4) and groups["heads"]["lr"] == pytest.approx(1e-3)
    bn = module.backbone.stem[1]
    assert any(p is bn.weight for p in groups["trunk_no_decay"]["params"])
    assert any(p is module.net.heads["tumor"].linear.bias for p in groups["heads_no_decay"]["params"])
    # every trainable parameter is in exactly one group
    grouped = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in module.parameters() if p.requires_grad)


def test_frozen_parameters_stay_out_of_the_optimizer():
    module = small_module()
    for p in module.backbone.parameters():
        p.requires_grad_(False)
    names = {g["name"] for g in module.configure_optimizers().param_groups}
    assert "trunk" not in names and "trunk_no_decay" not in names and "heads" in names


def test_multiview_input_is_the_mean_of_view_features():
    module = small_module([tumor_task()]).eval()
    views = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        pooled = module.net.image_features(views)
        one_by_one = torch.stack([module.backbone(views[:, v]) for v in range(3)], dim=1).mean(dim=1)
    torch.testing.assert_close(pooled, one_by_one, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\[B, V, 3, H, W\]"):
        module.net.image_features(torch.randn(2, 32, 32))


def test_drug_image_fusion_changes_only_rows_with_an_image():
    module = small_module([DRUG]).eval()
    codes = torch.tensor([[[1, 2], [3, 0]], [[4, 0], [0, 0]]])
    batch = {"codes": codes, "image": torch.randn(2, 3, 32, 32), "has_image": torch.tensor([True, False])}
    with torch.no_grad():
        no_image = module.net.forward_task("drug", {"codes": codes})
        fused = module.net.forward_task("drug", batch)
    assert not torch.allclose(fused[0], no_image[0])
    torch.testing.assert_close(fused[1], no_image[1])


def test_fit_logs_the_promised_keys(tmp_path):
    data = synthetic_data()
    module = small_module(data.tasks, weighting=partial(StaticWeighting, weights={"drug": 0.5}))
    trainer = L.Trainer(**tiny_trainer_kwargs(tmp_path, logger=CSVLogger(tmp_path), max_steps=2, log_every_n_steps=1))
    trainer.fit(module, datamodule=data)
    with open(trainer.logger.experiment.metrics_file_path) as f:
        keys = set(next(csv.reader(f)))
    for task in ("tumor", "disease", "drug"):
        assert {f"train/{task}/loss", f"val/{task}/loss", f"val/{task}/auroc", f"weights/{task}"} <= keys
        assert {f"val/{task}/accuracy", f"val/{task}/f1"} <= keys
    assert {"train/loss", "train/loss_unweighted", "val/auroc_mean", "val/tumor/sensitivity"} <= keys
    assert {"val/disease/auroc_Atelectasis", "val/disease/auroc_Hernia", "val/drug/auroc_DRUG01"} <= keys
    assert trainer.callback_metrics["weights/drug"].item() == 0.5


def test_single_task_datamodule_trains_and_predicts(tmp_path):
    dm = SyntheticDiseaseDataModule(num_train=8, num_val=8, num_test=8, image_size=32, batch_size=4)
    module = small_module(dm.tasks)
    trainer = L.Trainer(**tiny_trainer_kwargs(tmp_path, max_steps=2))
    trainer.fit(module, datamodule=dm)
    predictions = trainer.predict(module, datamodule=dm)
    assert predictions[0]["task"] == "disease"
    probs = predictions[0]["probabilities"]
    assert probs.shape == (4, 14) and bool(((probs > 0) & (probs < 1)).all())
    assert predictions[0]["id"] == [f"radiograph-{i}" for i in range(4)]


def test_checkpoint_carries_the_task_specs(tmp_path):
    data = synthetic_data()
    module = small_module(data.tasks)
    trainer = L.Trainer(**tiny_trainer_kwargs(tmp_path, max_steps=1, limit_val_batches=0))
    trainer.fit(module, datamodule=data)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    restored = MultiTaskModule.load_from_checkpoint(path)
    assert restored.task_specs["drug"] == data.tasks[2]
    assert restored.task_specs["drug"].code_vocabulary[:2] == ["D:001", "D:002"]
    assert restored.task_specs["disease"].class_names == disease_task().class_names
    for (name, a), (_, b) in zip(module.state_dict().items(), restored.state_dict().items()):
        assert torch.equal(a, b), name


def test_checkpoint_rebuilds_the_configured_heads_on_its_own(tmp_path):
    heads = {"drug": partial(DrugHead, hidden_dim=8, dropout=0.5, wide="current"),
             "tumor": partial(ClassificationHead, dropout=0.3)}
    module = small_module([tumor_task(), DRUG], heads=heads, weighting=EqualWeighting)
    assert module.hparams["heads"]["drug"] == {
        "class_path": "ldoctor.models.heads.drug.DrugHead",
        "init_args": {"hidden_dim": 8, "dropout": 0.5, "wide": "current"}}
    trainer = L.Trainer(**tiny_trainer_kwargs(tmp_path, max_steps=0, limit_val_batches=0))
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "heads.ckpt")
    restored = MultiTaskModule.load_from_checkpoint(tmp_path / "heads.ckpt")  # no arguments
    drug = restored.net.heads["drug"]
    assert (drug.readout.wide_mode, drug.readout.dropout.p, drug.no_image.numel()) == ("current", 0.5, 8)
    assert restored.net.heads["tumor"].dropout.p == 0.3 and isinstance(restored.weighting, EqualWeighting)
    batch = {"codes": torch.tensor([[[1, 2], [3, 0]]])}
    with torch.no_grad():
        torch.testing.assert_close(restored.eval().net.forward_task("drug", batch),
                                   module.eval().net.forward_task("drug", batch))
    # a factory that is not config (a lambda) is not stored; the checkpoint then needs it passed again
    lambda_head = small_module([tumor_task()], heads={"tumor": lambda task, width: ClassificationHead(task, width)})
    assert "heads" not in lambda_head.hparams


def test_priors_start_fresh_heads_only(tmp_path):
    data = SyntheticDiseaseDataModule(num_train=16, num_val=8, image_size=32, batch_size=8)
    heads = {"disease": partial(ClassificationHead, prior_bias=True)}
    module = small_module(data.tasks, heads=heads, optimizer=partial(torch.optim.SGD, lr=0.0))
    L.Trainer(**tiny_trainer_kwargs(tmp_path, max_steps=1, limit_val_batches=0)).fit(module, datamodule=data)
    rates = data.train_labels().mean(0).clamp(0.01, 0.99)
    prior = torch.log(rates / (1 - rates))
    torch.testing.assert_close(module.net.heads["disease"].linear.bias.detach(), prior)  # lr 0: still the prior
    with torch.no_grad():
        module.net.heads["disease"].linear.bias.fill_(0.25)  # "trained"
    trainer = L.Trainer(**tiny_trainer_kwargs(tmp_path, max_steps=0, limit_val_batches=0))
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "trained.ckpt")
    restored = MultiTaskModule.load_from_checkpoint(tmp_path / "trained.ckpt", optimizer=partial(torch.optim.SGD, lr=0.0))
    L.Trainer(**tiny_trainer_kwargs(tmp_path, max_steps=1, limit_val_batches=0)).fit(restored, datamodule=data)
    assert (restored.net.heads["disease"].linear.bias == 0.25).all()  # a loaded head keeps what it learned
