"""A fixed-window feed-forward language model (Bengio et al. 2003 in form): memoryless.

    the last K ids ─► embeddings, concatenated (K*E) ─► hidden layer (tanh, H) ─► logits (V)
                 └──────────────────────────────────────── direct (linear, K*E ─► V) ─┘

It sees exactly the K symbols before the one it predicts, and nothing further back: what it
carries from one chunk to the next (its "state") is only those K ids, so the same loop, lanes
and evaluation as the recurrent models apply unchanged. Where a document starts, the window
holds PAD before its EOD, as the recurrent models start from their initial state there.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from ..options import Options, at_most, fraction, option, positive_int
from ..predictor import MixedPrecision, NextSymbolModel, module_inference, State
from ..text.vocab import PAD_ID, Vocab

MAX_CONTEXT = 1024


@dataclass(frozen=True)
class WindowConfig(Options):
    """The window model's options."""

    vocab_size: int = option(1, "Symbols in the vocab.", command_line=False)
    context: int = option(8, "K: the symbols before the next one that the model reads (its "
                             "whole memory).", check=at_most(MAX_CONTEXT, positive_int))
    embed_dim: int = option(32, "Embedding size of each symbol in the window.", flag="--embed",
                            check=positive_int)
    hidden_dim: int = option(512, "Units of the hidden layer.", flag="--hidden",
                             check=positive_int)
    dropout: float = option(0.0, "Dropout on the concatenated embeddings and the hidden layer.",
                            check=fraction)
    direct: bool = option(True, "Also a linear map from the window's embeddings straight to the "
                                "logits (Bengio et al.'s direct connections).")
    never_predict: tuple[int, ...] = option((PAD_ID,), "Ids whose logits are -inf (PAD, UNK).",
                                            command_line=False)

    @classmethod
    def for_vocab(cls, vocab: Vocab, **options) -> WindowConfig:
        return cls(vocab_size=vocab.size, never_predict=vocab.never_predicted, **options)


class WindowLM(MixedPrecision, nn.Module, NextSymbolModel):
    kind = "window-lm"
    config_class = WindowConfig

    def __init__(self, config: WindowConfig):
        super().__init__()
        self.config = c = config
        width = c.context * c.embed_dim
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim)
        self.hidden = nn.Linear(width, c.hidden_dim)
        self.out = nn.Linear(c.hidden_dim, c.vocab_size)
        self.direct = nn.Linear(width, c.vocab_size, bias=False) if c.direct else None
        self.drop = nn.Dropout(c.dropout)
        mask = torch.zeros(c.vocab_size)
        mask[list(c.never_predict)] = float("-inf")
        self.register_buffer("logit_mask", mask, persistent=False)

    @classmethod
    def count_parameters(cls, config: WindowConfig) -> int:
        c = config
        width = c.context * c.embed_dim
        return (c.vocab_size * c.embed_dim + (width + 1) * c.hidden_dim
                + (c.hidden_dim + 1) * c.vocab_size + (width * c.vocab_size if c.direct else 0))

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def initial_state(self, batch_size: int) -> State:
        return (torch.full((self.config.context, batch_size), PAD_ID, dtype=torch.int64,
                           device=self.device),)

    def windows(self, inputs: torch.Tensor, state: State | None, reset: torch.Tensor | None
                ) -> torch.Tensor:
        """(B, T) inputs after the carried window -> (B, T, K): the K ids up to each input, PAD
        before the document it is in."""
        k = self.config.context
        b, t = inputs.shape
        history = (state or self.initial_state(b))[0].T.to(inputs.device)
        ext = torch.cat([history, inputs.long()], dim=1)  # (B, K + T)
        windows = ext[:, 1:].unfold(1, k, 1)  # (B, T, K): ext[t + 1 .. t + K]
        if reset is not None and bool(reset.any()):
            start = torch.where(reset, torch.arange(k, k + t, device=inputs.device), 0)
            start = torch.cummax(start, dim=1).values  # where each input's document starts
            position = torch.arange(k, device=inputs.device) + \
                torch.arange(1, t + 1, device=inputs.device)[:, None]
            windows = windows.masked_fill(position[None] < start[..., None], PAD_ID)
        return windows

    def features(self, windows: torch.Tensor) -> torch.Tensor:
        """(B, T, K) ids -> the hidden layer (B, T, H) and the embeddings read (B, T, K*E)."""
        e = self.drop(self.embed(windows).flatten(2))
        return torch.tanh(self.hidden(e)), e

    def forward(self, inputs: torch.Tensor, state: State | None = None,
                reset: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        windows = self.windows(inputs, state, reset)
        autocast = (torch.autocast(self.device.type, dtype=self.compute_dtype)
                    if self.compute_dtype is not None else nullcontext())
        with autocast:
            h, e = self.features(windows)
            logits = self.out(self.drop(h))
            if self.direct is not None:
                logits = logits + self.direct(e)
        return logits.float() + self.logit_mask, (windows[:, -1].T.contiguous(),)

    def next_logits(self, inputs, state=None, reset=None):
        return self(inputs, state, reset)

    def inference(self, dtype: torch.dtype | None = None):
        return module_inference(self, dtype)
