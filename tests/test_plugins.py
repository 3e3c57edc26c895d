"""A task, a head type and a trunk are added by writing files: no file of the module, net, CLI or callbacks changes.

The fourth task below is PneumoniaMNIST (an existing DataModule, configured) with a head type written for this test
(cosine similarity to learned class prototypes), trained by ``train.py fit`` beside the smoke config's three tasks.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch import nn

from datamodules.multitask import MultiTaskDataModule
from datamodules.synthetic import SyntheticDiseaseDataModule, SyntheticTumorDataModule
from ldoctor.callbacks import StagedFinetuning
from ldoctor.models.trunks import Trunk
from ldoctor.module import MultiTaskModule
from tests.helpers import ROOT, tiny_trainer_kwargs

#: The new head type, as a user writes it in a file of their own.
PROTOTYPE_HEAD = '''
import torch
import torch.nn.functional as F
from torch import nn

from ldoctor.models.heads import TaskHead


class PrototypeHead(TaskHead):
    """Logit of output c = temperature * cos(trunk features, prototype c) + bias c."""

    def __init__(self, task, in_features: int, temperature: float = 10.0) -> None:
        super().__init__()
        self.input_key, self.temperature = task.input_key, temperature
        self.prototypes = nn.Parameter(0.01 * torch.randn(task.num_outputs, in_features))
        self.bias = nn.Parameter(torch.zeros(task.num_outputs))

    def forward(self, batch, encode):
        features = F.normalize(encode(batch[self.input_key]), dim=1)
        return self.temperature * features @ F.normalize(self.prototypes, dim=1).T + self.bias
'''


def fourth_task_config(tmp_path: Path) -> Path:
    """configs/smoke.yaml plus a ``pneumonia`` task served by MedMNISTDataModule and read by ``PrototypeHead``."""
    config = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    config["data"]["init_args"]["datamodules"]["pneumonia"] = {
        "class_path": "datamodules.medmnist.MedMNISTDataModule",
        "init_args": {"task_name": "pneumonia", "class_names": ["pneumonia"], "image_size": 32, "batch_size": 8},
    }
    config["model"]["heads"] = {"pneumonia": {"class_path": "fourth_head.PrototypeHead",
                                              "init_args": {"temperature": 8.0}}}
    config["trainer"].update({"default_root_dir": str(tmp_path / "run"), "enable_progress_bar": False,
                              "limit_train_batches": 6, "log_every_n_steps": 1,
                              "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                             "init_args": {"save_last": True}}]})
    path = tmp_path / "four_tasks.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.slow
def test_a_fourth_task_with_a_new_head_type_trains_from_config(tmp_path, monkeypatch):
    plugin = tmp_path / "plugins"
    plugin.mkdir()
    (plugin / "fourth_head.py").write_text(textwrap.dedent(PROTOTYPE_HEAD))
    env = {**os.environ, "PYTHONPATH": f"{plugin}{os.pathsep}{ROOT}", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(ROOT / "train.py"), "fit", "--config", str(fourth_task_config(tmp_path))],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    version = tmp_path / "run" / "lightning_logs" / "version_0"
    with open(version / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for task in ("tumor", "disease", "drug", "pneumonia"):
        assert any(r.get(f"val/{task}/auroc") for r in rows), task
        assert any(r.get(f"train/{task}/loss") for r in rows) and any(r.get(f"weights/{task}") for r in rows), task
    monkeypatch.syspath_prepend(str(plugin))  # the user's file, importable as for train.py
    model = MultiTaskModule.load_from_checkpoint(version / "checkpoints" / "last.ckpt")  # the checkpoint alone
    head = model.net.heads["pneumonia"]
    assert type(head).__name__ == "PrototypeHead" and head.temperature == 8.0
    assert model.task_names == ["tumor", "disease", "drug", "pneumonia"]
    assert float(head.bias.abs().sum()) > 0  # trained: the bias started at zero
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model.eval().net.forward_task("pneumonia", {"image": images}).shape == (2, 1)


class TinyTrunk(Trunk):
    """A trunk of one's own: two conv stages and a pool (what a user writes to plug in another architecture)."""

    stages = ("block1", "block2")

    def __init__(self, width: int = 8) -> None:
        super().__init__(out_features=2 * width)
        self.block1 = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.block1(x)).mean(dim=(2, 3))


def test_a_trunk_of_your_own_trains_is_staged_and_travels_in_the_checkpoint(tmp_path):
    kw = {"num_train": 16, "num_val": 8, "image_size": 16, "batch_size": 8}
    data = MultiTaskDataModule({"tumor": SyntheticTumorDataModule(**kw), "disease": SyntheticDiseaseDataModule(**kw)})
    model = MultiTaskModule(data.tasks, trunk=partial(TinyTrunk, width=6))
    assert model.backbone.out_features == 12 and model.net.heads["tumor"].linear.in_features == 12
    frozen = model.backbone.block1[0].weight.detach().clone()
    trainer = L.Trainer(**tiny_trainer_kwargs(tmp_path, max_epochs=1,
                                              callbacks=[StagedFinetuning(freeze=["block1"])]))
    trainer.fit(model, datamodule=data)
    assert torch.equal(model.backbone.block1[0].weight, frozen)  # staged fine-tuning works on its stages
    assert model.hparams["trunk"] == {"class_path": "tests.test_plugins.TinyTrunk", "init_args": {"width": 6}}
    trainer.save_checkpoint(tmp_path / "tiny.ckpt")
    restored = MultiTaskModule.load_from_checkpoint(tmp_path / "tiny.ckpt")
    assert isinstance(restored.backbone, TinyTrunk) and restored.backbone.out_features == 12
    torch.save(model.backbone.state_dict(), tmp_path / "tiny.pth")  # its own keys load as trunk weights
    again = MultiTaskModule(data.tasks, trunk=partial(TinyTrunk, width=6), trunk_weights=str(tmp_path / "tiny.pth"))
    assert torch.equal(again.backbone.block2[0].weight, model.backbone.block2[0].weight)
