"""FeatureStacking: after training, stack the best checkpoint with a regression on the batches' side features.

For a task whose batches carry ``"features"`` (the tumor task with ``LIDCDataModule(radiomics="batch")``), this
callback fits :class:`ldoctor.stacking.FeatureStack` when ``fit`` ends: the feature regression on the training
cases, the stack weights on the validation cases with the probabilities of the checkpoint of best validation score
(``trainer.checkpoint_callback``; the final weights when there is none). It writes the stack as JSON beside the
checkpoints and logs the validation AUROC of the image model, the feature regression and the stack (the stack's is
fitted on those same cases, so it is optimistic: score it on the test split, as ``benchmarks/lidc.py`` does).

Example (CLI):
    python train.py fit --config configs/lidc.yaml --data.init_args.radiomics=batch \\
        --trainer.callbacks+=ldoctor.callbacks.FeatureStacking
"""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from sklearn.metrics import roc_auc_score

from ldoctor.stacking import FeatureStack


def binary_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, 0/1 labels)``: a soft target (``LIDCDataModule(soft_labels=True)``: ``(consensus - 1) / 4``)
    counts on its side of 0.5; exactly 0.5 (ambiguous) and NaN (unknown) are not kept."""
    labels = np.asarray(labels, dtype=float)
    return np.isfinite(labels) & (labels != 0.5), (labels > 0.5).astype(float)


class FeatureStacking(L.Callback):
    """Fit and save a :class:`~ldoctor.stacking.FeatureStack` for ``task`` at the end of ``fit`` (rank 0).

    Args:
        task: the binary task to stack (its DataModule's datasets must yield ``"features"``).
        filename: JSON file name, written in the checkpoint folder (else the trainer's ``default_root_dir``);
            ``{task}`` is filled in.
        batch_size: inference batch size on the validation cases.

    Attributes:
        stack: the fitted stack (``None`` before ``fit`` ends).
        path: where it was written.
        scores: validation AUROC of ``image_model``, ``features`` and ``stack``.
    """

    def __init__(self, task: str = "tumor", filename: str = "feature_stack_{task}.json", batch_size: int = 64) -> None:
        self.task, self.filename, self.batch_size = task, filename, batch_size
        self.stack: FeatureStack | None = None
        self.path: Path | None = None
        self.scores: dict[str, float] = {}

    def _datamodule(self, trainer: L.Trainer):
        dm = trainer.datamodule
        if dm is None:
            raise ValueError("FeatureStacking needs a DataModule (trainer.fit(model, datamodule=...))")
        dm = getattr(dm, "datamodules", {}).get(self.task, dm)
        if getattr(dm, "val_dataset", None) is None or getattr(dm, "train_dataset", None) is None:
            raise ValueError(f"FeatureStacking: the {self.task!r} DataModule has no train_dataset and val_dataset")
        return dm

    @staticmethod
    def _features_and_labels(dataset, split: str, task: str) -> tuple[np.ndarray, np.ndarray]:
        features, labels = [], []
        for i in range(len(dataset)):
            item = dataset[i]
            if "features" not in item:
                raise ValueError(f"FeatureStacking: {split} samples of task {task!r} carry no 'features' "
                                 "(LIDCDataModule needs radiomics='batch')")
            features.append(np.asarray(item["features"], dtype=float))
            labels.append(float(np.asarray(item["label"]).reshape(-1)[0]))
        return np.stack(features), np.asarray(labels)

    @torch.no_grad()
    def _probabilities(self, net: torch.nn.Module, dataset, device: torch.device) -> np.ndarray:
        out = []
        for start in range(0, len(dataset), self.batch_size):
            items = [dataset[i] for i in range(start, min(start + self.batch_size, len(dataset)))]
            batch = {key: torch.stack([torch.as_tensor(item[key]) for item in items]).to(device)
                     for key in ("image", "features")}
            out.append(torch.sigmoid(net.forward_task(self.task, batch)).float().cpu()[:, 0])
        return torch.cat(out).double().numpy()

    def _best_net(self, trainer: L.Trainer, pl_module: L.LightningModule) -> torch.nn.Module:
        net = copy.deepcopy(pl_module.net)
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") if trainer.checkpoint_callback else ""
        if best:
            state = torch.load(best, map_location=pl_module.device, weights_only=True)["state_dict"]
            net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
        return net.eval()

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        spec = pl_module.task_specs.get(self.task)
        if spec is None or spec.kind != "binary":
            raise ValueError(f"FeatureStacking: task {self.task!r} must be a binary task of the model")
        dm = self._datamodule(trainer)
        x_train, y_train = self._features_and_labels(dm.train_dataset, "training", self.task)
        x_val, y_val = self._features_and_labels(dm.val_dataset, "validation", self.task)
        probs = self._probabilities(self._best_net(trainer, pl_module), dm.val_dataset, pl_module.device)
        hard_train, y_train = binary_labels(y_train)
        hard_val, y_val = binary_labels(y_val)
        self.stack = FeatureStack.fit(x_train[hard_train], y_train[hard_train], probs[hard_val], x_val[hard_val],
                                      y_val[hard_val], getattr(dm, "feature_names", None) or None)
        folder = Path(getattr(trainer.checkpoint_callback, "dirpath", None) or trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / self.filename.format(task=self.task)
        self.stack.save(self.path)
        y = y_val[hard_val]
        self.scores = {
            "image_model": float(roc_auc_score(y, probs[hard_val])),
            "features": float(roc_auc_score(y, self.stack.feature_probs(x_val[hard_val]))),
            "stack": float(roc_auc_score(y, self.stack.predict(probs[hard_val], x_val[hard_val]))),
        }
        for logger in trainer.loggers:
            logger.log_metrics({f"stack/{self.task}/val_auroc_{k}": v for k, v in self.scores.items()},
                               step=trainer.global_step)
        rank_zero_info(f"FeatureStacking: {self.path} written; validation AUROC "
                       f"{ {k: round(v, 4) for k, v in self.scores.items()} } (the stack's is fitted on these cases)")
