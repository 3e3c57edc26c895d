"""A trained model's predictions over a loader, with optional test-time augmentation (in-plane flips)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ldoctor.models.net import MultiTaskNet

#: In-plane flips of every image (the last two dims of ``[B, 3, S, S]`` or ``[B, V, 3, S, S]``) averaged by
#: test-time augmentation; ``()`` is the image as it is.
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


@dataclass
class Predictions:
    """One task's predictions over a loader, in loader order.

    Attributes:
        ids: sample ids ``[N]``.
        probs: probabilities, ``[N]`` for a binary task, else ``[N, num_outputs]``.
        labels: the batches' labels, same shape as ``probs`` (binary) or as the batches carry them; NaN = unknown.
        features: the batches' ``"features"`` ``[N, K]`` when they carry them, else ``None``.
    """

    ids: list[str]
    probs: np.ndarray
    labels: np.ndarray
    features: np.ndarray | None = None


@torch.no_grad()
def predict(net: MultiTaskNet, task: str, loader: Iterable[dict], kind: str = "binary",
            flips: Sequence[tuple[int, ...]] = ((),)) -> Predictions:
    """Probabilities of ``task`` for every batch of ``loader`` (eval mode), averaged over ``flips`` of the images.

    Args:
        net: the trained network (put in eval mode here).
        task: the task name.
        loader: batches of that task (not shuffled, if the order matters to the caller).
        kind: the task kind: softmax for ``"multiclass"``, sigmoid otherwise.
        flips: image flips to average (:data:`TTA_FLIPS` for test-time augmentation); ``((),)`` = none.
    """
    net.eval()
    device = next(net.parameters()).device
    ids, probs, labels, features = [], [], [], []
    for batch in loader:
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        views = [{**batch, "image": batch["image"].flip(f)} if f else batch for f in flips]
        logits = [net.forward_task(task, b).float() for b in views]
        scores = [torch.softmax(z, dim=1) if kind == "multiclass" else torch.sigmoid(z) for z in logits]
        probs.append(torch.stack(scores).mean(0).cpu())
        labels.append(batch["label"].float().cpu())
        ids += list(batch["id"])
        if "features" in batch:
            features.append(batch["features"].double().cpu())
    probs_, labels_ = torch.cat(probs).double().numpy(), torch.cat(labels).double().numpy()
    if kind == "binary":
        probs_, labels_ = probs_.reshape(-1), labels_.reshape(-1)
    return Predictions(ids, probs_, labels_, torch.cat(features).numpy() if features else None)
