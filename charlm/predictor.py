"""What evaluation and sampling need of a model, whatever kind it is.

A ``NextSymbolModel`` gives scores for the next symbol given a carried state: the recurrent
language model is one, and so can be a count-based n-gram model or a hidden Markov model. The
figures of ``charlm.evaluate`` (nats, bits per character, with document boundaries and unknown
symbols) and the text of ``charlm.sample`` come from these few methods alone:

    state = model.initial_state(batch)                    # what "nothing read yet" is
    logits, state = model.next_logits(ids, state, reset)  # (B, T) ids -> (B, T, V) scores
    step = model.stepper()                                # sampling: one id per lane at a time
    logits, state = step(ids, state)                      # (B,) ids -> (B, V), as next_logits
    state = model.reset_state(state, mask)                # lanes where mask (B,) is true start over

``logits`` are log-probabilities up to a constant per position (a softmax turns them into the
distribution); a symbol the model never predicts has -inf. ``reset`` (B, T), where given, marks
the inputs before which a lane's state goes back to the initial one (a document starts there).
A state is a tuple of tensors whose second dimension is the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import nn

from .errors import CharLMError
from .text.vocab import PAD_ID

State = tuple[torch.Tensor, ...]


class NextSymbolModel:
    """The interface (see the module doc); subclasses implement ``initial_state``,
    ``next_logits``, ``vocab_size`` and ``device``."""

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        """Where the model's inputs must be."""
        raise NotImplementedError

    def initial_state(self, batch_size: int) -> State:
        raise NotImplementedError

    def next_logits(self, inputs: torch.Tensor, state: State | None = None,
                    reset: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        raise NotImplementedError

    def reset_state(self, state: State, mask: torch.Tensor) -> State:
        return reset_where(state, self.initial_state(mask.shape[0]), mask)

    def stepper(self) -> Callable[[torch.Tensor, State], tuple[torch.Tensor, State]]:
        """``step(ids, state)``: one id (B,) per lane read -> the next symbol's logits (B, V)
        and the state, the figures of ``next_logits`` on ids (B, 1). Sampling calls it once a
        symbol, so a model may give a leaner path than its forward; take it inside
        ``inference()`` and use it there."""
        def step(ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
            logits, state = self.next_logits(ids[:, None], state)
            return logits[:, 0], state
        return step

    @contextmanager
    def inference(self, dtype: torch.dtype | None = None):
        """The model as it predicts for evaluation and sampling (no training-time noise),
        computing in ``dtype`` where it supports one (None: its own precision)."""
        if dtype not in (None, torch.float32):
            raise CharLMError(f"this model ({type(self).__name__}) computes in float32 only; "
                              f"use --precision fp32")
        yield self


class MixedPrecision:
    """``compute_in(dtype)`` for a torch module whose forward reads ``self.compute_dtype``."""

    compute_dtype: torch.dtype | None = None

    @contextmanager
    def compute_in(self, dtype: torch.dtype | None):
        """Mixed precision: inside this context the layers compute in ``dtype`` (e.g.
        bfloat16) on casts of the float32 weights, which stay the weights the optimizer
        updates; gradients flow back through the casts. ``None`` or float32 changes
        nothing."""
        before = self.compute_dtype
        self.compute_dtype = None if dtype in (None, torch.float32) else dtype
        try:
            yield self
        finally:
            self.compute_dtype = before


@contextmanager
def module_inference(model: nn.Module, dtype: torch.dtype | None):
    """``inference`` of a torch model that has ``compute_in(dtype)``: in eval mode (no
    dropout) and computing in ``dtype``, its training mode put back after."""
    was_training = model.training
    model.eval()
    try:
        with model.compute_in(dtype):
            yield model
    finally:
        model.train(was_training)


def reset_where(state: State, initial: State, mask: torch.Tensor) -> State:
    """``state`` with the lanes where ``mask`` (B,) is true put back to ``initial`` (the batch
    is each tensor's second dimension)."""
    return tuple(torch.where(mask.view(1, -1, *([1] * (s.dim() - 2))), i, s)
                 for i, s in zip(initial, state))


def check_vocab(model: NextSymbolModel, vocab) -> None:
    if model.vocab_size != vocab.size:
        raise CharLMError(f"the model predicts {model.vocab_size} symbols but the vocab has "
                          f"{vocab.size}")


def loss_sum(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed nats of the targets under the logits (PAD targets are not scored), and how many
    targets were scored."""
    total = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                        targets.reshape(-1), ignore_index=PAD_ID, reduction="sum")
    return total, int((targets != PAD_ID).sum())
