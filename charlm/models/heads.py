"""Heads: what sits on the backbone's features and turns them into predictions."""

from __future__ import annotations

import torch
from torch import nn


class NextSymbolHead(nn.Linear):
    """Dropout, then a linear layer over the vocab: logits for the next symbol (B, T, V).

    Ids in ``never_predict`` (PAD, and UNK for a char vocab) get a logit of -inf, so they have
    no probability and are never sampled. The layer computes in the features' dtype (bf16
    features: bf16 casts of the float32 weights).
    """

    def __init__(self, hidden_dim: int, vocab_size: int, dropout: float,
                 never_predict: tuple[int, ...]):
        super().__init__(hidden_dim, vocab_size)
        self.drop = nn.Dropout(dropout)
        self.register_buffer("never", torch.tensor(list(never_predict), dtype=torch.long),
                             persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits(self.drop(features))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The layer without the dropout (a plain call, for sampling's step)."""
        if x.dtype == self.weight.dtype:
            logits = nn.functional.linear(x, self.weight, self.bias)
        else:
            logits = nn.functional.linear(x, self.weight.to(x.dtype), self.bias.to(x.dtype))
        return logits.index_fill_(-1, self.never, float("-inf"))  # safe: linear keeps no output


class ClassifierHead(nn.Module):
    """Dropout and a linear layer, or an MLP, from pooled features (B, F) to logits (B, C)."""

    def __init__(self, features: int, classes: int, hidden: int, dropout: float):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        if hidden:
            self.hidden = nn.Linear(features, hidden)
            self.out = nn.Linear(hidden, classes)
        else:
            self.hidden = None
            self.out = nn.Linear(features, classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        x = self.drop(pooled)
        if self.hidden is not None:
            x = self.drop(torch.relu(self.hidden(x)))
        return self.out(x)
