"""What resuming and checkpoint selection do with awkward inputs: a checkpoint folder holding the partial files of
killed saves, a monitored metric that stops improving, a validation split whose labels hold one class only."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel

from datamodules.multitask import MultiTaskDataModule
from datamodules.synthetic import SyntheticDiseaseDataModule, SyntheticTumorDataModule
from ldoctor.checkpoint_io import AtomicCheckpointIO, remove_stale_partials
from ldoctor.cli import LDoctorCLI
from ldoctor.module import MultiTaskModule
from tests.helpers import ROOT, tiny_trainer_kwargs

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


# --------------------------------------------------------------------------------------------- partial files


def test_partial_files_of_dead_writers_go_and_nothing_else(tmp_path):
    gone = dead_pid()
    stale = [tmp_path / f".last.ckpt.tmp-{gone}", tmp_path / f".best-epoch=3.ckpt.tmp-{gone}"]
    kept = [
        tmp_path / ".last.ckpt.tmp-1",  # a live process (init) may still be writing it
        tmp_path / "last.ckpt.tmp-123",  # not hidden: not a name AtomicCheckpointIO writes
        tmp_path / f".last.ckpt.tmp-{gone}x",
        tmp_path / ".notes.tmp-abc",
        tmp_path / "epoch=0-step=4.ckpt",
    ]
    for path in stale + kept:
        path.write_bytes(b"partial")
    folder = tmp_path / f".dir.tmp-{gone}"
    folder.mkdir()
    link = tmp_path / f".link.ckpt.tmp-{gone}"
    link.symlink_to(kept[-1])
    assert sorted(remove_stale_partials(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in kept) and folder.is_dir() and link.is_symlink()
    assert remove_stale_partials(tmp_path / "absent") == []

    # the first save into a folder sweeps it too (runs without the CLI)
    stale[0].write_bytes(b"partial")
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, tmp_path / "last.ckpt")
    assert not stale[0].exists() and torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 1


# --------------------------------------------------------------------------------------------- shipped configs


def checkpoint_callbacks(config: Path) -> list[dict]:
    """The ``ModelCheckpoint`` entries of a config (``init_args`` as written); an overlay appends to its base's."""
    trainer = yaml.safe_load(config.read_text()).get("trainer", {})
    if "data" not in yaml.safe_load(config.read_text()):  # an overlay: it must keep the base config's checkpoints
        assert "callbacks" not in trainer, f"{config.name} replaces the base config's callbacks: use callbacks+"
        return checkpoint_callbacks(ROOT / "configs" / "smoke.yaml")
    return [c.get("init_args", {}) for c in trainer.get("callbacks", []) if c["class_path"].endswith("ModelCheckpoint")]


class WorseEachEpoch(BoringModel):
    """Logs every shipped config's monitored metric, worse (lower) each epoch."""

    def on_validation_epoch_end(self) -> None:
        for key in ("val/auroc_mean", "val/tumor/auroc", "val/disease/auroc", "val/drug/jaccard"):
            self.log(key, 1.0 / (self.current_epoch + 1))


def test_every_shipped_config_writes_last_ckpt_each_epoch_in_a_stable_folder(tmp_path):
    assert len(CONFIGS) == 8
    for config in CONFIGS:
        checkpoints = checkpoint_callbacks(config)
        (last,) = [c for c in checkpoints if c.get("filename") == "last"]
        assert last["dirpath"] == "checkpoints" and last.get("monitor") is None, config.name
        assert last["enable_version_counter"] is False, config.name  # always last.ckpt, never last-v1.ckpt
        assert not any(c.get("save_last") for c in checkpoints), config.name  # a second writer: last-v1.ckpt
        # three epochs, the monitored metric worst in the last: last.ckpt still holds the last epoch
        root = tmp_path / config.stem
        callbacks = [ModelCheckpoint(**{**c, **({"dirpath": str(root / c["dirpath"])} if c.get("dirpath") else {})})
                     for c in checkpoints]
        trainer = L.Trainer(**tiny_trainer_kwargs(root, max_epochs=3, limit_train_batches=2, limit_val_batches=1,
                                                  num_sanity_val_steps=0, enable_checkpointing=True,
                                                  callbacks=callbacks))
        trainer.fit(WorseEachEpoch())
        saved = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)
        assert (saved["epoch"], saved["global_step"]) == (2, 6), config.name
        assert sorted(p.name for p in (root / "checkpoints").glob("last*")) == ["last.ckpt"], config.name


def test_relative_checkpoint_folder_is_under_default_root_dir(tmp_path):
    cli = LDoctorCLI(args=["--config", str(ROOT / "configs" / "lidc.yaml"),
                           f"--trainer.default_root_dir={tmp_path / 'run'}", "--model.trunk=resnet18"], run=False)
    folders = {c.dirpath for c in cli.trainer.checkpoint_callbacks}
    assert folders == {str(tmp_path / "run" / "checkpoints")}


# --------------------------------------------------------------------------------------------- one class only


class AllNegativeTumor(SyntheticTumorDataModule):
    """Synthetic tumor data whose validation labels are all 0: AUROC is undefined there."""

    def setup(self, stage: str) -> None:
        super().setup(stage)
        dataset = self.val_dataset

        class Negative(torch.utils.data.Dataset):
            def __len__(self) -> int:
                return len(dataset)

            def __getitem__(self, index: int) -> dict:
                return {**dataset[index], "label": torch.zeros(1)}

        self.val_dataset = Negative()


def test_single_class_validation_auroc_is_undefined_and_left_out_of_the_mean(tmp_path):
    kw = {"num_train": 8, "num_val": 16, "image_size": 32, "batch_size": 8}
    data = MultiTaskDataModule({"tumor": AllNegativeTumor(**kw), "disease": SyntheticDiseaseDataModule(**kw)})
    module = MultiTaskModule(data.tasks, trunk="resnet18")
    trainer = L.Trainer(**tiny_trainer_kwargs(tmp_path))
    with pytest.warns(UserWarning, match=r"val/tumor/auroc is undefined: the val labels of task 'tumor' hold one cl"):
        trainer.validate(module, datamodule=data, verbose=False)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert math.isnan(logged["val/tumor/auroc"])  # not 0.0
    assert not math.isnan(logged["val/disease/auroc"])
    assert logged["val/auroc_mean"] == pytest.approx(logged["val/disease/auroc"])  # the mean over defined AUROCs
    assert {"val/tumor/accuracy", "val/tumor/specificity"} <= set(logged)  # the other metrics are still logged


def test_metric_level_auroc_is_nan_where_undefined():
    from sklearn.metrics import roc_auc_score

    from ldoctor.metrics import prepare_for_metrics, task_metrics
    from ldoctor.tasks import TaskSpec

    binary = task_metrics(TaskSpec(name="t", kind="binary", num_outputs=1))
    binary.update(torch.rand(6), torch.zeros(6, dtype=torch.long))
    assert math.isnan(float(binary.compute()["auroc"]))  # torchmetrics' BinaryAUROC says 0.0
    # multiclass: class 2 absent from the targets is left out of the macro mean (torchmetrics would average in 0)
    spec = TaskSpec(name="m", kind="multiclass", num_outputs=3)
    logits, target = torch.randn(40, 3, generator=torch.Generator().manual_seed(0)), torch.arange(40.0) % 2
    metrics = task_metrics(spec)
    metrics.update(*prepare_for_metrics(spec, logits, target))
    probs = torch.softmax(logits, 1).numpy()
    expected = sum(roc_auc_score(target.numpy() == c, probs[:, c]) for c in (0, 1)) / 2
    assert float(metrics.compute()["auroc"]) == pytest.approx(expected, abs=1e-6)
    single = task_metrics(spec)
    single.update(torch.softmax(logits, 1), torch.zeros(40, dtype=torch.long))
    assert math.isnan(float(single.compute()["auroc"]))
