"""The recurrent language model: the recurrent backbone with the next-symbol head on top.

    ids (B, T) -> backbone (embed -> layers) -> features (B, T, H) -> head -> logits (B, T, V)

It is a ``NextSymbolModel`` (see ``charlm.predictor``), so ``charlm.evaluate`` and
``charlm.sample`` use it through that interface only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import CharLMError
from ..options import option
from ..predictor import NextSymbolModel, module_inference
from ..text.vocab import PAD_ID, Vocab
from .backbone import RecurrentBackbone, RecurrentConfig, State, count_parameters
from .heads import NextSymbolHead


@dataclass(frozen=True)
class LMConfig(RecurrentConfig):
    """The language model's options: the backbone's, and the head's."""

    tie_weights: bool = option(False, "Share the embedding and output weights (needs --embed = "
                                      "--hidden).")
    never_predict: tuple[int, ...] = option((PAD_ID,), "Ids whose logits are -inf (PAD, UNK).",
                                            command_line=False)

    def check(self) -> None:
        super().check()
        if self.tie_weights and self.embed_dim != self.hidden_dim:
            raise CharLMError(f"--tie-weights needs --embed equal to --hidden "
                              f"(got {self.embed_dim} and {self.hidden_dim})")
        if any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < self.vocab_size
               for i in self.never_predict):
            raise CharLMError("never_predict ids must lie inside the vocab")

    @classmethod
    def for_vocab(cls, vocab: Vocab, **options) -> LMConfig:
        """The config of a model of ``vocab``: its size, and no probability for its PAD and
        UNK."""
        return cls(vocab_size=vocab.size, never_predict=vocab.never_predicted, **options)


class RecurrentLM(nn.Module, NextSymbolModel):
    """Character (or token) language model with an explicitly carried recurrent state."""

    kind = "rnn-lm"
    config_class = LMConfig

    def __init__(self, config: LMConfig):
        super().__init__()
        self.config = c = config
        self.backbone = RecurrentBackbone(config)
        self.head = NextSymbolHead(c.hidden_dim, c.vocab_size, c.dropout, c.never_predict)
        if c.tie_weights:
            self.head.weight = self.backbone.embed.weight
        with torch.no_grad():
            for i in c.never_predict:  # never-read ids start as zero vectors
                self.backbone.embed.weight[i].zero_()

    @classmethod
    def count_parameters(cls, config: LMConfig) -> int:
        return count_parameters(cls, config)

    # ----- NextSymbolModel ---------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def device(self) -> torch.device:
        return self.backbone.embed.weight.device

    def initial_state(self, batch_size: int) -> State:
        return self.backbone.initial_state(batch_size)

    def reset_state(self, state: State, mask: torch.Tensor) -> State:
        return self.backbone.reset_state(state, mask)

    def next_logits(self, inputs: torch.Tensor, state: State | None = None,
                    reset: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        return self(inputs, state, reset)

    def inference(self, dtype: torch.dtype | None = None):
        return module_inference(self, dtype)

    def stepper(self):
        """The fused layers' kernel called directly, then the head's layer as plain calls
        (``RecurrentBackbone.feature_step``); the forward where that has none."""
        features, logits = self.backbone.feature_step(), self.head.logits
        if features is None:
            return super().stepper()

        def step(ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
            out, state = features(ids, state)
            return logits(out), state
        return step

    # ----- the forward -------------------------------------------------------------------------
    def compute_in(self, dtype: torch.dtype | None):
        """Mixed precision for the layers and the head (see RecurrentBackbone.compute_in)."""
        return self.backbone.compute_in(dtype)

    def forward(self, inputs: torch.Tensor, state: State | None = None,
                reset: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        """inputs (B, T) ids -> logits (B, T, V) and the state after the last input."""
        features, state = self.backbone(inputs, state, reset, readout=self.head)
        return self.head(features), state
