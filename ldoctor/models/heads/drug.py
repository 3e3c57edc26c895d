"""The ``drug`` task's head: a patient's admission history (+ the admission's image) -> medication classes.

:class:`DrugHead` is a thin model around two torch layers: :class:`~ldoctor.models.history.HistoryEncoder` (a GRU
over the admissions' code embeddings) and :class:`DrugReadout` (a wide-and-deep read-out with a copy path). When a
batch carries ``"image"`` and ``"has_image"``, the trunk features of the admissions with an image are projected
and joined to the history encoding; the others get a learned "no image" vector.

Logits of admission ``b`` and drug ``d`` (:class:`DrugReadout`)::

    logit[b, d] = deep[b, d] + wide[b, d] + copy[b, d]
    deep[b, d]  = (W_deep dropout(features[b]))_d + bias_d           # history encoder (+ image) features
    wide[b, d]  = sum_c W_wide[d, c] dropout_w(bag[b, c])             # linear map of the multi-hot codes
    copy[b, d]  = (gate + gate_d) * prev[b, d]                         # drugs of earlier admissions

With ``copy_combine="mixture"`` the copy path mixes probabilities instead, as COGNet mixes its generation and
copy distributions: for an admission with earlier drugs, ``p[b, d] = (1 - g_d) sigmoid(deep + wide) + g_d
prev[b, d]`` with ``g_d = sigmoid(gate + gate_d)``, returned as its logit; a first admission keeps
``sigmoid(deep + wide)``. A drug given last time then starts at the pooled repeat rate whatever its base rate,
where the additive gate leaves rare drugs far below it.

``bag`` is the multi-hot of the current admission's codes (``wide="current"``) or of every admission so far
(``wide="all"``, the input of the logistic-regression baseline). ``prev`` is 1 where drug ``d`` appears as an
``M:<d>`` code in the previous admission (``copy="last"``) or in any earlier one (``copy="all"``); ``gate`` is
a shared gate estimated from the training re-admissions (``DrugReadout.init_copy_gate``), ``gate_d`` learned: the copy
mechanism of COGNet (Wu et al., "Conditional Generation Net for Medication Recommendation", WWW 2022,
arXiv:2202.06588) reduced to a learned per-drug gate, so a re-admission can repeat earlier drugs without
learning the ``M:d -> d`` identity from a handful of re-admissions. The wide path is the wide half of
wide-and-deep models (Cheng et al., "Wide & Deep Learning for Recommender Systems", DLRS 2016,
arXiv:1606.07792): with a few dozen training patients a well-regularised linear model on the bag of codes is
a strong baseline, and this lets the network match it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from ldoctor.labels import label_rates
from ldoctor.models.heads.base import Encoder, TaskHead, set_prior_bias
from ldoctor.models.history import HistoryEncoder, admission_lengths
from ldoctor.tasks import TaskSpec

if TYPE_CHECKING:
    from ldoctor.datamodule import TaskDataModule

#: Prefix of earlier admissions' drugs in the code vocabulary, as the MIMIC-III reader writes them.
MEDICATION_PREFIX = "M:"

WidePath = Literal["none", "current", "all"]
CopyPath = Literal["none", "last", "all"]
CopyCombine = Literal["logit", "mixture"]
#: Probabilities of the mixture are kept in [eps, 1 - eps] before they are turned back into logits.
MIXTURE_EPS = 1e-6


def medication_code_map(code_vocabulary: Sequence[str], class_names: Sequence[str]) -> torch.Tensor:
    """0/1 ``[V + 1, D]`` matrix: row ``i`` (code index ``i``, ``code_vocabulary[i - 1]``; row 0 = padding) has a
    1 in column ``d`` when the code is ``M:<class_names[d]>``. Codes of drugs outside ``class_names`` map to
    nothing."""
    drug_index = {d: i for i, d in enumerate(class_names)}
    matrix = torch.zeros(len(code_vocabulary) + 1, len(class_names))
    for i, code in enumerate(code_vocabulary, start=1):
        if code.startswith(MEDICATION_PREFIX) and code[len(MEDICATION_PREFIX) :] in drug_index:
            matrix[i, drug_index[code[len(MEDICATION_PREFIX) :]]] = 1.0
    return matrix


def multi_hot(codes: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """0/1 ``[B, vocab_size]`` bag of code indices ``[B, N]`` (index ``i >= 1`` -> column ``i - 1``; 0 ignored)."""
    bag = torch.zeros(codes.shape[0], vocab_size + 1, device=codes.device)
    bag.scatter_(1, codes, 1.0)
    return bag[:, 1:]


def select_admissions(codes: torch.Tensor, which: Literal["current", "previous", "all", "earlier"]) -> torch.Tensor:
    """Codes ``[B, A * L]`` of the chosen admissions (others zeroed) of codes ``[B, A, L]``.

    ``current`` = the last real admission, ``previous`` = the one before it (none for first admissions),
    ``earlier`` = every admission before the current one, ``all`` = every admission.
    """
    position = torch.arange(codes.shape[1], device=codes.device).view(1, -1)
    last = (admission_lengths(codes) - 1).view(-1, 1)
    keep = {
        "current": position == last,
        "previous": position == last - 1,
        "earlier": position < last,
        "all": position <= last,
    }[which]
    return (codes * keep.unsqueeze(2)).flatten(1)


class DrugReadout(nn.Module):
    """Deep linear read-out + optional wide (bag-of-codes) and copy (earlier drugs) paths.

    Args:
        in_features: width ``F`` of the history (+ image) features.
        code_vocabulary: the task's code strings (index ``i`` in the codes tensor = ``code_vocabulary[i - 1]``).
        class_names: the drug classes, in output order.
        dropout: dropout on the deep features.
        wide: ``"none"``, ``"current"`` (this admission's codes) or ``"all"`` (every admission so far).
        copy: ``"none"``, ``"last"`` (the previous admission's drugs) or ``"all"`` (any earlier admission's).
        wide_dropout: dropout on the wide path's multi-hot input (an adaptive L2 penalty for linear models).
        copy_combine: ``"logit"`` (gate added to the logits) or ``"mixture"`` (probability mixture, see above).

    Attributes:
        linear: the deep read-out (its ``bias`` is the per-drug bias, e.g. set to the training log-odds).
        wide: ``Linear(V, D, bias=False)``, zero-initialised, or ``None``.
        copy_gate: learned per-drug gate ``[D]`` (zeros), or ``None``.
        copy_gate_shared: a scalar buffer (zero) added to every drug's gate, set by ``init_copy_gate`` from the
            training data and not trained; ``None`` without a copy path.
    """

    def __init__(
        self,
        in_features: int,
        code_vocabulary: Sequence[str],
        class_names: Sequence[str],
        dropout: float = 0.2,
        wide: WidePath = "none",
        copy: CopyPath = "none",
        wide_dropout: float = 0.0,
        copy_combine: CopyCombine = "logit",
    ) -> None:
        super().__init__()
        if copy_combine not in ("logit", "mixture"):
            raise ValueError(f"copy_combine must be 'logit' or 'mixture', got {copy_combine!r}")
        self.copy_combine = copy_combine
        if wide not in ("none", "current", "all"):
            raise ValueError(f"wide must be 'none', 'current' or 'all', got {wide!r}")
        if copy not in ("none", "last", "all"):
            raise ValueError(f"copy must be 'none', 'last' or 'all', got {copy!r}")
        for name, p in (("dropout", dropout), ("wide_dropout", wide_dropout)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        self.vocab_size, self.wide_mode, self.copy_mode = len(code_vocabulary), wide, copy
        num_drugs = len(class_names)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_features, num_drugs)
        self.wide_dropout = nn.Dropout(wide_dropout)
        self.wide = None
        if wide != "none":
            self.wide = nn.Linear(self.vocab_size, num_drugs, bias=False)
            nn.init.zeros_(self.wide.weight)
        self.copy_gate: nn.Parameter | None = None
        self.copy_gate_shared: torch.Tensor | None
        if copy == "none":
            self.copy_gate_shared = None
        else:
            code_map = medication_code_map(code_vocabulary, class_names)
            if not code_map.any():
                raise ValueError(
                    "copy path needs the drugs of earlier admissions as 'M:<drug>' codes in the code vocabulary "
                    "(MIMICDrugDataModule history_drugs=True); none found"
                )
            self.register_buffer("code_map", code_map, persistent=False)
            self.copy_gate = nn.Parameter(torch.zeros(num_drugs))
            # not trained: set from the training data by init_copy_gate (see there why)
            self.register_buffer("copy_gate_shared", torch.zeros(()))

    def previous_drugs(self, codes: torch.Tensor) -> torch.Tensor:
        """0/1 ``[B, D]``: drugs seen as ``M:`` codes in the previous (``copy="last"``) or any earlier admission."""
        which = "previous" if self.copy_mode == "last" else "earlier"
        bag = multi_hot(select_admissions(codes, which), self.vocab_size)
        return (bag @ self.code_map[1:].to(bag.dtype)).clamp(max=1.0)

    @torch.no_grad()
    def init_copy_gate(self, batches: Iterable[dict]) -> float | None:
        """Start the shared copy gate at its training estimate (call after the bias is set, e.g. to log-odds).

        Over the training (admission, drug) pairs whose drug was given earlier (``previous_drugs``), the gate is
        ``logit(p) - mean(bias_d)``: ``p`` the share of those pairs prescribed again (clipped to [0.01, 0.99]),
        ``bias_d`` the head bias of their drugs. With ``copy_combine="mixture"`` it is ``logit(g)`` with
        ``g = (p - q) / (1 - q)`` (clipped to [0.01, 0.99]), ``q`` the mean of ``sigmoid(bias_d)`` over those
        pairs, so that ``(1 - g) q + g = p``. A re-admission then starts at the pooled repeat rate instead
        of waiting for a gate learned from a handful of re-admissions. The shared gate is a buffer, not trained:
        on the MIMIC-III demo (~10 training re-admissions) the wide and deep paths memorise the training set
        (training Jaccard 1.0) and, when it was a parameter, halved it (0.56 -> 0.29, seed 0), so re-admissions
        of new patients lost the repeat signal. The per-drug gates stay trained.

        Args:
            batches: training batches with ``codes`` ``[B, A, L]`` and ``label`` ``[B, D]`` (NaN = unknown).

        Returns:
            the gate, or ``None`` (gate unchanged) when no training admission has an earlier drug.
        """
        if self.copy_gate is None:
            raise ValueError("init_copy_gate needs a copy path (copy='last' or 'all')")
        bias = self.linear.bias.detach().float().cpu()
        hits = pairs = bias_sum = prob_sum = 0.0
        for batch in batches:
            previous = self.previous_drugs(batch["codes"].to(self.code_map.device)).float().cpu()
            label = batch["label"].float().cpu()
            previous = previous * ~torch.isnan(label)
            hits += float((previous * label.nan_to_num(0.0)).sum())
            pairs += float(previous.sum())
            bias_sum += float((previous * bias).sum())
            prob_sum += float((previous * torch.sigmoid(bias)).sum())
        if pairs == 0:
            return None
        rate = min(max(hits / pairs, 0.01), 0.99)
        if self.copy_combine == "mixture":
            base = prob_sum / pairs
            share = min(max((rate - base) / max(1.0 - base, 1e-6), 0.01), 0.99)
            gate = math.log(share / (1 - share))
        else:
            gate = math.log(rate / (1 - rate)) - bias_sum / pairs
        self.copy_gate_shared.fill_(gate)
        return gate

    def forward(self, features: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Args: features ``[B, F]``; codes int64 ``[B, A, L]`` (0 = padding). Returns: logits ``[B, D]``."""
        logits = self.linear(self.dropout(features))
        if self.wide is not None:
            bag = multi_hot(select_admissions(codes, self.wide_mode), self.vocab_size).to(logits.dtype)
            logits = logits + self.wide(self.wide_dropout(bag))
        if self.copy_gate is not None:
            gate = self.copy_gate + self.copy_gate_shared
            previous = self.previous_drugs(codes).to(logits.dtype)
            if self.copy_combine == "logit":
                return logits + gate * previous
            share = torch.sigmoid(gate)
            probs = (1 - share) * torch.sigmoid(logits) + share * previous
            mixed = torch.logit(probs.clamp(MIXTURE_EPS, 1 - MIXTURE_EPS))
            return torch.where(previous.amax(dim=1, keepdim=True) > 0, mixed, logits)  # first admissions: as is
        return logits


class DrugHead(TaskHead):
    """History encoder, image fusion and :class:`DrugReadout` for a code-history task (module docstring).

    Configured under ``model.heads.drug``::

        heads:
          drug:
            class_path: ldoctor.models.heads.DrugHead
            init_args: {hidden_dim: 64, dropout: 0.9, wide: current, copy: last, copy_combine: mixture,
                        prior_bias: true}

    Args:
        task: a multilabel task with ``input_key="codes"`` and its ``code_vocabulary``; ``class_names`` are the drugs.
        in_features: trunk feature width ``F`` (the admission's image is projected from it).
        embed_dim: code embedding width of the history encoder.
        hidden_dim: history encoder width ``H``; the read-out sees ``2 H`` (history + image or "no image").
        history_dropout: dropout on the admission embeddings.
        dropout: dropout on the read-out's deep features.
        wide: wide path: ``"none"``, ``"current"`` (this admission's codes) or ``"all"`` (every admission so far).
        copy: copy path: ``"none"``, ``"last"`` (the previous admission's drugs) or ``"all"`` (any earlier one's;
            needs ``M:<drug>`` codes, ``MIMICDrugDataModule(history_drugs=True)``).
        wide_dropout: dropout on the wide path's multi-hot input.
        copy_combine: ``"logit"`` (copy gate added to the logits) or ``"mixture"`` (COGNet-style probability mixture).
        prior_bias: start the read-out bias at each drug's training log-odds, so the untrained head predicts the
            frequent drugs. A copy path's shared gate is always started at the training repeat rate
            (:meth:`DrugReadout.init_copy_gate`), relative to the bias.
    """

    def __init__(
        self,
        task: TaskSpec,
        in_features: int,
        # the history encoder
        embed_dim: int = 64, hidden_dim: int = 128, history_dropout: float = 0.2,
        # the read-out
        dropout: float = 0.2, wide: WidePath = "none", copy: CopyPath = "none", wide_dropout: float = 0.0,
        copy_combine: CopyCombine = "logit", prior_bias: bool = False,
    ) -> None:
        super().__init__()
        if task.kind != "multilabel" or not task.code_vocabulary:
            raise ValueError(f"DrugHead needs a multilabel task with a code_vocabulary; {task.name!r} is {task.kind}"
                             f"{'' if task.code_vocabulary else ' without one'}")
        self.task_name, self.input_key, self.in_features = task.name, task.input_key, in_features
        self.prior_bias = prior_bias
        self.history = HistoryEncoder(len(task.code_vocabulary), embed_dim, hidden_dim, history_dropout)
        self.image_fusion = nn.Linear(in_features, hidden_dim)
        self.no_image = nn.Parameter(torch.zeros(hidden_dim))
        self.readout = DrugReadout(2 * hidden_dim, task.code_vocabulary, task.class_names, dropout, wide, copy,
                                   wide_dropout, copy_combine)

    def features(self, batch: Mapping[str, Any], encode: Encoder) -> torch.Tensor:
        """History encoding joined with the admission's image features (or the "no image" vector): ``[B, 2 H]``."""
        history = self.history(batch[self.input_key])
        fused = self.no_image.expand_as(history)
        has_image = batch.get("has_image")
        if has_image is not None and bool(has_image.any()):
            # every row goes through the trunk (zeros where there is no image), so BatchNorm never sees a
            # batch of one image; rows without an image keep the learned "no image" vector
            projected = self.image_fusion(encode(batch["image"])).to(history.dtype)
            fused = torch.where(has_image.view(-1, 1), projected, fused)
        else:
            # An empty projection keeps the fusion layer in the autograd graph (zero gradient, no effect on the
            # output), so plain DDP sees the same used parameters whether or not a batch has images.
            fused = fused + self.image_fusion(history.new_zeros(0, self.in_features)).sum()
        return torch.cat([history, fused], dim=1)

    def forward(self, batch: Mapping[str, Any], encode: Encoder) -> torch.Tensor:
        """Args: batch with ``codes`` int64 ``[B, A, L]`` (and optionally ``image``, ``has_image``).
        Returns: logits ``[B, num_drugs]``."""
        return self.readout(self.features(batch, encode), batch[self.input_key])

    def init_from_data(self, data: TaskDataModule) -> None:
        """Bias at the training log-odds (``prior_bias``), then the copy path's shared gate at the repeat rate."""
        linear = self.readout.linear
        if self.prior_bias:
            rates = set_prior_bias(linear, label_rates(data.train_labels(), "multilabel", linear.out_features),
                                   "multilabel")
            rank_zero_info(f"{self.task_name}: head bias at the training log-odds (mean rate {float(rates.mean()):.3f})")
        if self.readout.copy_gate is not None:
            gate = self.readout.init_copy_gate(data.train_dataloader())
            rank_zero_info(f"{self.task_name}: shared copy gate from the training re-admissions: {gate}")
