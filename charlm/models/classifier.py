"""The recurrent classifier (many-to-one): the recurrent backbone reads a whole text, a pooling
of its features and a head give one label.

    ids (B, T), PAD after each text's end, lengths (B,)
        -> backbone, chunk by chunk of ``max_length`` symbols, the state carried
           (a text of any length is read whole: the last state has seen all of it)
        -> pooling over each text's own positions (never its PAD):
               last     the top layer's features after the text's last symbol
               concat   [last, max over time, mean over time] (ULMFiT's concat pooling)
        -> head: dropout + linear, or a small MLP (linear, ReLU, dropout, linear)
        -> logits (B, C)

The fused layers (lstm, gru, rnn, irnn) can read a batch packed (``pack_padded_sequence``:
``packed=True``); every cell can read it padded, the features after each text's end ignored.
Both give the same logits as reading each text alone (tested).

A classifier can start from a language model (``from_language_model``): the same backbone, its
weights copied; a Jordan network's backbone feeds back through its language model's output
layer, so for that cell the output layer comes along as the feedback ``readout``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, fields

import torch
from torch import nn

from ..errors import CharLMError
from ..options import fraction, non_negative_int, option, positive_int
from .backbone import RecurrentBackbone, check_fixed, count_parameters
from .heads import ClassifierHead, NextSymbolHead
from .language_model import LMConfig

POOLINGS = ("last", "concat")


@dataclass(frozen=True)
class ClassifierConfig(LMConfig):
    """The classifier's options: the backbone's (with, for a Jordan network, the output layer
    it feeds back through), the pooling and the head's."""

    labels: tuple[str, ...] = option((), "The label names, in the order of the outputs.",
                                     command_line=False)
    pooling: str = option(
        "concat", "What the head reads: the last state (last), or the last state with the "
                  "max and the mean of the top layer over the text (concat, as ULMFiT).",
        choices=POOLINGS)
    head_hidden: int = option(0, "Hidden units of an MLP head (0: a linear head).",
                              check=non_negative_int)
    head_dropout: float = option(0.1, "Dropout on what the head reads (and in an MLP head).",
                                 check=fraction)
    max_length: int = option(
        512, "Texts are read in chunks of at most this many symbols with the state carried, "
             "so the last state sees the whole text (predictions do not depend on it; in "
             "eval and predict memory per batch stays bounded, in training the gradient "
             "runs through every chunk).",
        check=positive_int)

    def check(self) -> None:
        super().check()
        if self.tie_weights:
            raise CharLMError("--tie-weights applies to language models only")
        if self.labels and len(self.labels) < 2:
            raise CharLMError("a classifier needs at least two labels")
        if len(set(self.labels)) != len(self.labels):
            raise CharLMError("label names must be distinct")

    @property
    def num_classes(self) -> int:
        return len(self.labels)


class _Pool:
    """Running pools over the chunks of a batch of texts: the features after each text's last
    symbol, the max and the sum over its positions."""

    def __init__(self, batch: int, width: int, device, concat: bool):
        self.last = torch.zeros(batch, width, device=device)
        self.concat = concat
        if concat:
            self.max = torch.full((batch, width), float("-inf"), device=device)
            self.sum = torch.zeros(batch, width, device=device)

    def add(self, rows: torch.Tensor, features: torch.Tensor, steps: torch.Tensor) -> None:
        """``features`` (b, t, H) of texts ``rows`` (b,), of which the first ``steps`` (b,)
        positions are text; a text whose steps end inside the chunk gets its last features."""
        features = features.float()
        t = features.shape[1]
        ends = steps <= t
        if ends.any():
            at = (steps[ends] - 1).clamp(min=0)
            self.last[rows[ends]] = features[ends.nonzero().flatten(), at]
        if self.concat:
            inside = (torch.arange(t, device=features.device).view(1, t, 1)
                      < steps.view(-1, 1, 1))
            self.max[rows] = torch.maximum(
                self.max[rows], features.masked_fill(~inside, float("-inf")).amax(dim=1))
            self.sum[rows] += features.masked_fill(~inside, 0.0).sum(dim=1)

    def pooled(self, lengths: torch.Tensor) -> torch.Tensor:
        if not self.concat:
            return self.last
        mean = self.sum / lengths.clamp(min=1).view(-1, 1).to(self.sum.dtype)
        return torch.cat([self.last, self.max, mean], dim=1)


class RecurrentClassifier(nn.Module):
    """Backbone + pooling + head: one label per text (see the module doc)."""

    kind = "rnn-classifier"
    config_class = ClassifierConfig

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        if config.num_classes < 2:
            raise CharLMError("a classifier needs at least two labels")
        self.config = c = config
        self.backbone = RecurrentBackbone(config)
        # A Jordan network feeds back its output distribution: the layer that makes it.
        self.readout = (NextSymbolHead(c.hidden_dim, c.vocab_size, 0.0, c.never_predict)
                        if c.cell == "jordan" else None)
        width = c.hidden_dim * (3 if c.pooling == "concat" else 1)
        self.head = ClassifierHead(width, c.num_classes, c.head_hidden, c.head_dropout)
        with torch.no_grad():
            for i in c.never_predict:  # never-read ids start as zero vectors
                self.backbone.embed.weight[i].zero_()

    @classmethod
    def count_parameters(cls, config: ClassifierConfig) -> int:
        return count_parameters(cls, config)

    @property
    def device(self) -> torch.device:
        return self.backbone.embed.weight.device

    @property
    def labels(self) -> tuple[str, ...]:
        return self.config.labels

    def compute_in(self, dtype: torch.dtype | None):
        return self.backbone.compute_in(dtype)

    @contextmanager
    def inference(self, dtype: torch.dtype | None = None):
        """The model as it predicts (no dropout), computing in ``dtype`` (None: float32)."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad(), self.compute_in(dtype):
                yield self
        finally:
            self.train(was_training)

    def features(self, ids: torch.Tensor, lengths: torch.Tensor,
                 packed: bool = False) -> torch.Tensor:
        """The pooled features (B, F) of the texts ``ids`` (B, T; PAD after each text's end)
        of ``lengths`` (B,), read in chunks of ``max_length`` with the state carried;
        ``packed``: the fused layers read each chunk packed."""
        if packed and not self.backbone.packs:
            raise CharLMError(f"--cell {self.config.cell} runs step by step and reads padded "
                              f"batches only")
        batch = ids.shape[0]
        lengths = lengths.to(ids.device)
        if bool((lengths < 1).any()):
            raise CharLMError("every text must hold at least one symbol")
        width = self.config.max_length
        pool = _Pool(batch, self.config.hidden_dim, ids.device, self.config.pooling == "concat")
        state = self.backbone.initial_state(batch)
        longest = int(lengths.max())
        for start in range(0, longest, width):
            rows = (lengths > start).nonzero().flatten()  # the texts that reach this chunk
            whole = len(rows) == batch
            steps = lengths[rows] - start
            chunk = ids[rows, start:start + width] if not whole else ids[:, start:start + width]
            chunk = chunk[:, :int(steps.max().clamp(max=width))]
            sub = state if whole else tuple(s[:, rows] for s in state)
            out, sub = self.backbone(chunk, sub, readout=self.readout,
                                     lengths=steps.clamp(max=chunk.shape[1]) if packed else None)
            pool.add(rows, out, steps)
            if whole:
                state = sub
            else:
                state = tuple(s.index_copy(1, rows, n.to(s.dtype)) for s, n in zip(state, sub))
        return pool.pooled(lengths)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor,
                packed: bool = False) -> torch.Tensor:
        """Logits (B, C) for the texts (see ``features``)."""
        return self.head(self.features(ids, lengths, packed))


def from_language_model(lm: nn.Module, labels: tuple[str, ...], **options) -> RecurrentClassifier:
    """A classifier on ``lm``'s backbone: its config (sizes, cell, vocab) with the classifier
    options given (and regularisers such as dropout, which do not change a shape), its weights
    copied (and, for a Jordan network, its output layer as the feedback readout)."""
    check_fixed(options, lm.config)
    lm_values = {f.name: getattr(lm.config, f.name) for f in fields(LMConfig)}
    lm_values["tie_weights"] = False
    config = ClassifierConfig(**{**lm_values, **{k: v for k, v in options.items()
                                                 if v is not None},
                                 "labels": tuple(labels)})
    model = RecurrentClassifier(config).to(lm.device)
    model.backbone.load_state_dict(lm.backbone.state_dict())
    if model.readout is not None:
        model.readout.load_state_dict(lm.head.state_dict())
    return model
