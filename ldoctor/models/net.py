"""MultiTaskNet: one shared trunk, one head per task, a history encoder for code inputs."""

from __future__ import annotations

import torch
from torch import nn

from ldoctor.models.drug_head import CopyCombine, CopyPath, DrugHead, WidePath
from ldoctor.models.heads import ClassificationHead
from ldoctor.models.history import HistoryEncoder
from ldoctor.models.trunks import build_trunk
from ldoctor.tasks import TaskSpec, validate_tasks


class MultiTaskNet(nn.Module):
    """Shared trunk + per-task heads.

    - image tasks: ``[B, 3, H, W]`` -> trunk -> head; multi-view ``[B, V, 3, H, W]`` (2.5D CT): every view
      goes through the same trunk and the ``V`` view features are mean-pooled.
    - code tasks (``drug``): ``[B, A, L]`` codes -> ``history`` encoder; if the batch carries ``image`` and
      ``has_image``, the trunk features of those images are projected and concatenated, other rows get the
      learned ``no_image`` vector. With ``code_wide`` or ``code_copy`` the code task's head is a ``DrugHead``
      (``ldoctor.models.drug_head``): the linear read-out plus a linear map of the multi-hot codes and a learned
      per-drug gate on the earlier admissions' drugs.
    - image tasks with ``TaskSpec.feature_names`` (the tumor task's radiomics): the batch's ``"features"``
      ``[B, K]`` are standardised and added to the logits through a linear path.

    Args:
        tasks: the task specs.
        trunk: registered trunk name (``ldoctor.models.trunks.TRUNKS``).
        trunk_weights: ``None``, a torchvision enum name or a local state-dict file.
        dropout: dropout in every head.
        history_embed_dim: code embedding width of the history encoder.
        history_hidden_dim: history encoder output width.
        code_wide: wide path of code tasks: ``"none"``, ``"current"`` (this admission's codes) or ``"all"``
            (every admission so far).
        code_copy: copy path of code tasks: ``"none"``, ``"last"`` (previous admission's drugs) or ``"all"``
            (any earlier admission's drugs; needs ``M:<drug>`` codes, MIMICDrugDataModule ``history_drugs``).
        wide_dropout: dropout on the wide path's multi-hot input.
        copy_combine: how the copy path joins the logits: ``"logit"`` (added gate) or ``"mixture"``
            (probability mixture, ``ldoctor.models.drug_head.DrugHead``).
    """

    def __init__(
        self,
        tasks: list[TaskSpec],
        trunk: str = "resnet50",
        trunk_weights: str | None = None,
        dropout: float = 0.2,
        history_embed_dim: int = 64,
        history_hidden_dim: int = 128,
        code_wide: WidePath = "none",
        code_copy: CopyPath = "none",
        wide_dropout: float = 0.0,
        copy_combine: CopyCombine = "logit",
    ) -> None:
        super().__init__()
        self.tasks = validate_tasks(tasks)
        self.trunk = build_trunk(trunk, trunk_weights)
        feat = self.trunk.out_features
        self.heads = nn.ModuleDict()
        self.history = nn.ModuleDict()
        self.image_fusion = nn.ModuleDict()
        self.no_image = nn.ParameterDict()
        for name, spec in self.tasks.items():
            if spec.input_key == "codes":
                self.history[name] = HistoryEncoder(len(spec.code_vocabulary), history_embed_dim, history_hidden_dim)
                self.image_fusion[name] = nn.Linear(feat, history_hidden_dim)
                self.no_image[name] = nn.Parameter(torch.zeros(history_hidden_dim))
                self.heads[name] = self._code_head(
                    spec, 2 * history_hidden_dim, dropout, code_wide, code_copy, wide_dropout, copy_combine
                )
            else:
                self.heads[name] = ClassificationHead(feat, spec.num_outputs, dropout, len(spec.feature_names))

    @staticmethod
    def _code_head(
        spec: TaskSpec,
        in_features: int,
        dropout: float,
        wide: WidePath,
        copy: CopyPath,
        wide_dropout: float,
        copy_combine: CopyCombine = "logit",
    ) -> nn.Module:
        """``ClassificationHead`` (no wide or copy path) or ``DrugHead`` for a code task."""
        if wide == "none" and copy == "none":
            return ClassificationHead(in_features, spec.num_outputs, dropout)
        return DrugHead(
            in_features, spec.code_vocabulary, spec.class_names, dropout, wide, copy, wide_dropout, copy_combine
        )

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Args: images ``[B, 3, H, W]`` or ``[B, V, 3, H, W]``. Returns: ``[B, F]`` (views mean-pooled)."""
        if images.dim() == 4:
            return self.trunk(images)
        if images.dim() == 5:
            b, v = images.shape[:2]
            return self.trunk(images.flatten(0, 1)).view(b, v, -1).mean(dim=1)
        raise ValueError(f"image input must be [B, 3, H, W] or [B, V, 3, H, W], got shape {tuple(images.shape)}")

    def code_features(self, name: str, batch: dict) -> torch.Tensor:
        """History encoding fused with the admission's image features: ``[B, 2 * hidden]``."""
        history = self.history[name](batch["codes"])
        fused = self.no_image[name].expand_as(history)
        has_image = batch.get("has_image")
        if has_image is not None and bool(has_image.any()):
            # every row goes through the trunk (zeros where there is no image), so BatchNorm never sees a
            # batch of one image; rows without an image keep the learned "no image" vector
            projected = self.image_fusion[name](self.image_features(batch["image"])).to(history.dtype)
            fused = torch.where(has_image.view(-1, 1), projected, fused)
        else:
            # An empty projection keeps the fusion layer in the autograd graph (zero gradient, no effect on the
            # output), so plain DDP sees the same used parameters whether or not a batch has images.
            fused = fused + self.image_fusion[name](history.new_zeros(0, self.trunk.out_features)).sum()
        return torch.cat([history, fused], dim=1)

    def forward_task(self, name: str, batch: dict) -> torch.Tensor:
        """Logits ``[B, num_outputs]`` of one task for its batch."""
        spec = self.tasks[name]
        if spec.input_key == "codes":
            features = self.code_features(name, batch)
            if isinstance(self.heads[name], DrugHead):
                return self.heads[name](features, batch["codes"])
        else:
            features = self.image_features(batch[spec.input_key])
            if spec.feature_names:
                return self.heads[name](features, batch.get("features"))
        return self.heads[name](features)

    def forward(self, batches: dict[str, dict]) -> dict[str, torch.Tensor]:
        """Args: ``{task: task batch}``. Returns: ``{task: logits}``."""
        return {name: self.forward_task(name, batch) for name, batch in batches.items()}
