"""Patient-history encoder: a patient's admissions (code lists) -> one vector (used by the ``drug`` head)."""

from __future__ import annotations

import torch
from torch import nn


def admission_lengths(codes: torch.Tensor) -> torch.Tensor:
    """Real admissions per patient ``[B]`` (at least 1) of codes ``[B, A, L]`` (left-aligned, 0 = padding)."""
    return (codes != 0).any(dim=2).sum(dim=1).clamp(min=1)


class HistoryEncoder(nn.Module):
    """Encode a patient's admissions so far into one vector.

    Each admission's codes (diagnoses and procedures, one shared vocabulary) are embedded and summed;
    a GRU runs over the admissions in time order and its state after the last real admission is the output.

    Args:
        vocab_size: number of codes, not counting padding index 0.
        embed_dim: code embedding width.
        hidden_dim: GRU state width = output width.
        dropout: dropout on the admission embeddings.

    Example:
        >>> enc = HistoryEncoder(vocab_size=10, embed_dim=8, hidden_dim=16)
        >>> codes = torch.tensor([[[1, 2, 0], [3, 0, 0]]])  # 1 patient, 2 admissions, <= 3 codes
        >>> enc(codes).shape
        torch.Size([1, 16])
    """

    def __init__(self, vocab_size: int, embed_dim: int = 64, hidden_dim: int = 128, dropout: float = 0.2) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size + 1, embed_dim, padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(embed_dim, hidden_dim, batch_first=True)
        self.out_features = hidden_dim

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """Args:
            codes: int64 ``[batch, admissions, codes]``, 0 = padding; admissions are left-aligned in time
                order, padded admissions are all-zero rows.

        Returns:
            ``[batch, hidden_dim]``: the state after each patient's last real admission.
        """
        admissions = self.dropout(self.embedding(codes).sum(dim=2))  # [B, A, E]
        lengths = admission_lengths(codes)
        packed = nn.utils.rnn.pack_padded_sequence(admissions, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, state = self.gru(packed)
        return state[-1]
