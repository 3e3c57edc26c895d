"""MedMNIST DataModule: the real PneumoniaMNIST file, task kinds from the labels, bad files, learning."""

from __future__ import annotations

from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datamodules.medmnist import PNEUMONIAMNIST_DEMO, MedMNISTDataModule
from ldoctor.losses import EqualWeighting, MaskedBCEWithLogits
from ldoctor.models.heads import ClassificationHead
from ldoctor.module import MultiTaskModule
from ldoctor.transforms.radiograph import IMAGENET_MEAN, IMAGENET_STD
from tests.fixtures.images import learnable_npz
from tests.helpers import tiny_trainer_kwargs


@pytest.fixture(scope="module")
def pneumonia() -> MedMNISTDataModule:
    dm = MedMNISTDataModule(class_names=["normal", "pneumonia"], image_size=64, batch_size=32)
    with pytest.warns(UserWarning, match="no test split"):
        dm.setup("fit")
    return dm


def test_real_pneumoniamnist_counts_task_and_pos_weight(pneumonia):
    """PneumoniaMNIST (MedMNIST v2): train 4,707 (1,213 normal / 3,494 pneumonia), val 524 (135 / 389)."""
    assert pneumonia.task.kind == "binary" and pneumonia.task.class_names == ["pneumonia"]
    assert pneumonia.task.name == "disease"
    assert len(pneumonia.train_dataset) == 4_707 and len(pneumonia.val_dataset) == 524
    assert pneumonia.test_dataset is None
    assert int(pneumonia.labels("train").sum()) == 3_494 and int(pneumonia.labels("val").sum()) == 389
    loss = MaskedBCEWithLogits(pneumonia.task, pos_weight="auto")
    loss.init_from_data(pneumonia)  # class balance from the training labels, as fit does
    torch.testing.assert_close(loss.pos_weight, torch.tensor([1_213 / 3_494]))
    torch.testing.assert_close(pneumonia.train_labels().mean(), torch.tensor(3_494 / 4_707))


def test_real_pneumoniamnist_batch_is_the_upsampled_image(pneumonia):
    batch = next(iter(pneumonia.val_dataloader()))
    assert batch["image"].shape == (32, 3, 64, 64) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (32, 1) and batch["id"][:2] == ["val-0", "val-1"]
    with np.load(PNEUMONIAMNIST_DEMO) as npz:
        original = torch.from_numpy(npz["val_images"][:32]).float()[:, None] / 255
        labels = torch.from_numpy(npz["val_labels"][:32]).float()
    torch.testing.assert_close(batch["label"], labels)
    expected = F.interpolate(original, size=(64, 64), mode="bilinear", align_corners=False)
    grey = batch["image"][:, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    # the cached uint8 step rounds to 1/255
    torch.testing.assert_close(grey, expected[:, 0], atol=0.6 / 255 + 1e-5, rtol=0)


def _write_npz(path, labels: dict[str, np.ndarray], rgb: bool = False, size: int = 28, seed: int = 0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, y in labels.items():
        shape = (len(y), size, size, 3) if rgb else (len(y), size, size)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = y
    np.savez(path, **arrays)
    return str(path)


def test_task_kind_follows_the_labels(tmp_path):
    binary = _write_npz(tmp_path / "b.npz", {"train": np.array([[0], [1], [1]]), "val": np.array([[0], [1]])})
    dm = MedMNISTDataModule(npz=binary, task_name="pneumonia", class_names=["pneumonia"])
    assert (dm.task.name, dm.task.kind, dm.task.num_outputs) == ("pneumonia", "binary", 1)
    multi = _write_npz(tmp_path / "m.npz", {"train": np.array([[0], [3], [1]]), "val": np.array([[2], [1]])})
    dm = MedMNISTDataModule(npz=multi, image_size=32, batch_size=4)
    assert (dm.task.kind, dm.task.num_outputs) == ("multiclass", 4)
    assert dm.task.class_names == ["class_0", "class_1", "class_2", "class_3"]
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["label"].shape == (3,) and sorted(batch["label"].tolist()) == [0.0, 1.0, 3.0]
    assert sorted(dm.train_labels().tolist()) == [0.0, 1.0, 3.0]  # class indices, as the batches carry them
    with pytest.raises(ValueError, match="multiclass"):
        MaskedBCEWithLogits(dm.task, pos_weight="auto")
    y = np.array([[0, 1, 1], [1, 0, 0], [0, 0, 1], [0, 0, 1]])
    chest = _write_npz(tmp_path / "c.npz", {"train": y, "val": y[:2], "test": y[2:]}, rgb=True)
    dm = MedMNISTDataModule(npz=chest, image_size=32, batch_size=4, class_names=["a", "b", "c"])
    assert (dm.task.kind, dm.task.num_outputs) == ("multilabel", 3)
    dm.setup("test")
    loss = MaskedBCEWithLogits(dm.task, pos_weight="auto")
    loss.init_from_data(dm)
    torch.testing.assert_close(loss.pos_weight, torch.tensor([3.0, 3.0, 1 / 3]))
    batch = next(iter(dm.test_dataloader()))
    assert batch["label"].shape == (2, 3) and batch["image"].shape == (2, 3, 32, 32)
    # RGB stays RGB: the channels differ (grey input would give identical de-normalised channels)
    red = batch["image"][:, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    green = batch["image"][:, 1] * IMAGENET_STD[1] + IMAGENET_MEAN[1]
    assert float((red - green).abs().mean()) > 0.1


def test_bad_npz_files_name_the_key_and_row(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        MedMNISTDataModule(npz=str(tmp_path / "nothere.npz"))
    no_val = _write_npz(tmp_path / "nv.npz", {"train": np.array([[0], [1]])})
    with pytest.raises(ValueError, match=r"nv.npz: no val_images / val_labels"):
        _ = MedMNISTDataModule(npz=no_val).task
    negative = _write_npz(tmp_path / "neg.npz", {"train": np.array([[0], [-1]]), "val": np.array([[0]])})
    with pytest.raises(ValueError, match=r"neg.npz: train_labels row 1 is \[-1\]; expected non-negative integers"):
        _ = MedMNISTDataModule(npz=negative).task
    np.savez(tmp_path / "f.npz", train_images=np.zeros((2, 28, 28), np.float32), train_labels=np.zeros((2, 1)),
             val_images=np.zeros((1, 28, 28), np.uint8), val_labels=np.zeros((1, 1)))
    with pytest.raises(ValueError, match=r"f.npz: train_images is float32 \(2, 28, 28\); expected uint8"):
        _ = MedMNISTDataModule(npz=str(tmp_path / "f.npz")).task
    np.savez(tmp_path / "n.npz", train_images=np.zeros((3, 28, 28), np.uint8), train_labels=np.zeros((2, 1)),
             val_images=np.zeros((1, 28, 28), np.uint8), val_labels=np.zeros((1, 1)))
    with pytest.raises(ValueError, match=r"n.npz: train_labels has shape \(2, 1\) for 3 images"):
        _ = MedMNISTDataModule(npz=str(tmp_path / "n.npz")).task


def _learnable_npz(path, n: int, seed: int) -> str:
    return learnable_npz(path, {"train": n, "val": n // 2}, seed)


def test_the_disease_head_learns_a_learnable_medmnist_signal(tmp_path, one_thread):
    L.seed_everything(0)
    dm = MedMNISTDataModule(npz=_learnable_npz(tmp_path / "l.npz", 96, 0), image_size=28, batch_size=32,
                            augmentation=None)
    model = MultiTaskModule(tasks=dm.tasks, heads={"disease": partial(ClassificationHead, dropout=0.0)},
                            trunk="resnet18", weighting=EqualWeighting,
                            optimizer=partial(torch.optim.AdamW, lr=3e-3))
    trainer = L.Trainer(**tiny_trainer_kwargs(tmp_path, max_epochs=3))
    trainer.fit(model, datamodule=dm)
    assert float(trainer.callback_metrics["val/disease/auroc"]) > 0.9


def test_validation_from_train_turns_the_files_validation_into_the_test_split():
    dm = MedMNISTDataModule(val_from_train=0.1, seed=3, image_size=28)
    dm.setup("fit")
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (4_707 - 471, 471, 524)
    assert int(dm.labels("test").sum()) == 389  # the shipped validation split, untouched
    assert int(dm.labels("train").sum()) + int(dm.labels("val").sum()) == 3_494
    other = MedMNISTDataModule(val_from_train=0.1, seed=4, image_size=28)
    other.setup("fit")
    assert not np.array_equal(other.arrays["val"][0], dm.arrays["val"][0])  # another seed, other images
    assert np.array_equal(other.arrays["test"][0], dm.arrays["test"][0])
