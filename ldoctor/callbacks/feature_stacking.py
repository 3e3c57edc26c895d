"""FeatureStacking: after training, stack the best checkpoint with a regression on the batches' side features.

For a task whose batches carry ``"features"`` (the tumor task with ``LIDCDataModule(radiomics="batch")``), this
callback fits :class:`ldoctor.evaluation.stacking.FeatureStack` when ``fit`` ends: the feature regression on the training
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

from ldoctor.datamodule import LDoctorDataModule, TaskDataModule
from ldoctor.evaluation.stacking import FeatureStack


def binary_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, 0/1 labels)``: a soft target (``LIDCDataModule(soft_labels=True)``: ``(consensus - 1) / 4``)
    counts on its side of 0.5; exactly 0.5 (ambiguous) and NaN (unknown) are not kept."""
    labels = np.asarray(labels, dtype=float)
    return np.isfinite(labels) & (labels != 0.5), (labels > 0.5).astype(float)


class FeatureStacking(L.Callback):
    """Fit and save a :class:`~ldoctor.evaluation.stacking.FeatureStack` for ``task`` at the end of ``fit`` (rank 0).

    Args:
        task: the binary task to stack (its DataModule's datasets must yield ``"features"``).
        filename: JSON file name, written in the checkpoint folder (else the trainer's ``default_root_dir``);
            ``{task}`` is filled in.

    Attributes:
        stack: the fitted stack (``None`` before ``fit`` ends).
        path: where it was written.
        scores: validation AUROC of ``image_model``, ``features`` and ``stack``.
    """

    def __init__(self, task: str = "tumor", filename: str = "feature_stack_{task}.json") -> None:
        self.task, self.filename = task, filename
        self.stack: FeatureStack | None = None
        self.path: Path | None = None
        self.scores: dict[str, float] = {}

    def _member(self, trainer: L.Trainer) -> TaskDataModule:
        data = trainer.datamodule
        if not isinstance(data, LDoctorDataModule):
            raise ValueError("FeatureStacking needs an ldoctor DataModule (trainer.fit(model, datamodule=...))")
        member = data.member(self.task)
        if not member.feature_names:
            raise ValueError(f"FeatureStacking: batches of task {self.task!r} carry no 'features' "
                             "(LIDCDataModule needs radiomics='batch')")
        return member

    @torch.no_grad()
    def _collect(self, loader, net: torch.nn.Module | None, device: torch.device) -> tuple[np.ndarray, ...]:
        """Features ``[N, K]``, labels ``[N]`` and (with ``net``) the image model's probabilities ``[N]`` of every
        batch of ``loader``."""
        features, labels, probs = [], [], []
        for batch in loader:
            features.append(batch["features"].double().cpu())
            labels.append(batch["label"].reshape(-1).double().cpu())
            if net is not None:
                batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
                probs.append(torch.sigmoid(net.forward_task(self.task, batch)).double().cpu()[:, 0])
        out = [torch.cat(features).numpy(), torch.cat(labels).numpy()]
        return (*out, torch.cat(probs).numpy()) if net is not None else tuple(out)

    def _best_net(self, trainer: L.Trainer, pl_module: L.LightningModule) -> torch.nn.Module:
        net = copy.deepcopy(pl_module.net)
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback is not None else ""
        if best:
            state = torch.load(best, map_location=pl_module.device, weights_only=True)["state_dict"]
            net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
        return net.eval()

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        spec = pl_module.task_specs.get(self.task)
        if spec is None or spec.kind != "binary":
            raise ValueError(f"FeatureStacking: task {self.task!r} must be a binary task of the model")
        member = self._member(trainer)
        x_train, y_train = self._collect(member.train_dataloader(), None, pl_module.device)
        x_val, y_val, probs = self._collect(member.val_dataloader(), self._best_net(trainer, pl_module),
                                            pl_module.device)
        hard_train, y_train = binary_labels(y_train)
        hard_val, y_val = binary_labels(y_val)
        self.stack = FeatureStack.fit(x_train[hard_train], y_train[hard_train], probs[hard_val], x_val[hard_val],
                                      y_val[hard_val], member.feature_names)
        checkpoints = trainer.checkpoint_callback
        folder = Path(checkpoints.dirpath if checkpoints is not None and checkpoints.dirpath else trainer.default_root_dir)
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
