"""The recurrent language model: embedding -> stacked LSTM/GRU/Elman RNN -> linear over the vocab.

The forward takes the recurrent state and returns the new one, so callers carry it across
chunks (training, evaluation) or steps (sampling). A boolean ``reset`` mask (B, T) says where a
lane's state goes back to the initial state before an input is read (a document starts there).
The fused ``torch.nn`` layers run the stretches between resets.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.func import functional_call

from .cells import GATES, JordanRNN, LoopRNN, SteppedRNN, layer_norm_sizes
from .config import flag
from .errors import CharLMError
from .vocab import PAD_ID

CELLS = ("lstm", "gru", "rnn", "irnn", "leaky", "jordan")
FUSED_CELLS = ("lstm", "gru", "rnn", "irnn")  # the rest, and some options, run step by step
                                              # (cells.LoopRNN, cells.JordanRNN)
# The fused torch.nn layer that runs each cell; irnn is nn.RNN with ReLU and its own init.
_LAYERS = {"lstm": (nn.LSTM, {}), "gru": (nn.GRU, {}), "rnn": (nn.RNN, {"nonlinearity": "tanh"}),
           "irnn": (nn.RNN, {"nonlinearity": "relu"})}
IRNN_INPUT_STD = 0.001  # Le, Jaitly & Hinton 2015: identity recurrence, small input weights
# What each --precision computes in (None: the weights' own float32); see CharRNN.compute_in.
COMPUTE_DTYPES = {"fp32": None, "bf16": torch.bfloat16}
State = tuple[torch.Tensor, ...]  # (h,) or (h, c), each (num_layers, B, hidden_dim); jordan:
                                  # (y,), the previous output distribution, (1, B, vocab)


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    cell: str = "lstm"
    num_layers: int = 2
    hidden_dim: int = 256
    embed_dim: int = 64
    dropout: float = 0.0
    weight_drop: float = 0.0  # DropConnect on the hidden-to-hidden matrices while training
    tie_weights: bool = False
    learn_init_state: bool = False  # a trained h0 (and c0) at every document start
    layer_norm: bool = False        # inside the recurrence, before the nonlinearities
    recurrent_dropout: float = 0.0  # on the recurrent update, one mask per chunk
    leak: float = 0.5               # leaky cell: h' = g h + (1 - g) tanh(...), g = leak
    learn_leak: bool = False        # leaky cell: g learned per unit, starting at leak
    never_predict: tuple[int, ...] = (PAD_ID,)  # ids whose logits are -inf (PAD, UNK)

    def __post_init__(self):
        if self.cell not in CELLS:
            raise CharLMError(f"--cell must be one of {', '.join(CELLS)}, not {self.cell!r}")
        for name in ("vocab_size", "num_layers", "hidden_dim", "embed_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise CharLMError(f"{flag(name)} must be a positive integer, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise CharLMError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.recurrent_dropout < 1.0:
            raise CharLMError(f"--recurrent-dropout must be in [0, 1), got "
                              f"{self.recurrent_dropout}")
        if not 0.0 < self.leak < 1.0:
            raise CharLMError(f"--leak must be in (0, 1), got {self.leak}")
        if self.cell == "irnn" and (self.recurrent_dropout > 0 or self.weight_drop > 0):
            raise CharLMError("--recurrent-dropout and --weight-drop do not suit --cell irnn: "
                              "on its identity recurrence a kept unit would grow by 1/(1 - p) "
                              "at every step; use --dropout")
        if self.cell != "leaky" and (self.learn_leak or self.leak != 0.5):
            raise CharLMError("--leak and --learn-leak apply only to --cell leaky")
        if not 0.0 <= self.weight_drop < 1.0:
            raise CharLMError(f"--weight-drop must be in [0, 1), got {self.weight_drop}")
        if self.tie_weights and self.embed_dim != self.hidden_dim:
            raise CharLMError(f"--tie-weights needs --embed equal to --hidden "
                              f"(got {self.embed_dim} and {self.hidden_dim})")
        if any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < self.vocab_size
               for i in self.never_predict):
            raise CharLMError("never_predict ids must lie inside the vocab")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["never_predict"] = list(self.never_predict)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise CharLMError(f"model config has unknown fields: {', '.join(sorted(unknown))}")
        d = dict(d)
        if "never_predict" in d:
            d["never_predict"] = tuple(d["never_predict"])
        return cls(**d)

    def num_parameters(self) -> int:
        gates = GATES[self.cell]
        h, e, v = self.hidden_dim, self.embed_dim, self.vocab_size
        back = v if self.cell == "jordan" else h  # what the recurrence reads back
        rnn = gates * h * (e + back + 2) + (self.num_layers - 1) * gates * h * (h + back + 2)
        head = (0 if self.tie_weights else v * h) + v
        init = (v if self.cell == "jordan" else
                self.num_layers * h * (2 if self.cell == "lstm" else 1)) \
            if self.learn_init_state else 0
        norm = 2 * sum(layer_norm_sizes(self.cell, h)) * self.num_layers if self.layer_norm \
            else 0
        leak = self.num_layers * h if self.learn_leak else 0
        return v * e + rnn + head + init + norm + leak

    @property
    def uses_loop(self) -> bool:
        """Whether the layers run step by step (cells.LoopRNN) rather than fused."""
        return self.cell not in FUSED_CELLS or self.layer_norm or self.recurrent_dropout > 0


class CharRNN(nn.Module):
    """Character (or token) language model with an explicitly carried recurrent state."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=PAD_ID)
        between = c.dropout if c.num_layers > 1 else 0.0
        if c.cell == "jordan":
            self.rnn = JordanRNN(c.embed_dim, c.hidden_dim, c.num_layers, c.vocab_size, between,
                                 c.layer_norm, c.recurrent_dropout)
        elif c.uses_loop:
            self.rnn = LoopRNN(c.cell, c.embed_dim, c.hidden_dim, c.num_layers, between,
                               c.layer_norm, c.recurrent_dropout, c.leak, c.learn_leak)
        else:
            rnn_cls, kwargs = _LAYERS[c.cell]
            self.rnn = rnn_cls(c.embed_dim, c.hidden_dim, c.num_layers, batch_first=True,
                               dropout=between, **kwargs)
        if c.cell == "irnn":
            with torch.no_grad():
                for name, p in self.rnn.named_parameters():
                    if name.startswith("weight_hh"):
                        p.copy_(torch.eye(c.hidden_dim))
                    elif name.startswith("weight_ih"):
                        p.normal_(0.0, IRNN_INPUT_STD)
                    elif name.startswith("bias_"):
                        p.zero_()
        if c.learn_init_state:  # trained like any weight; zeros to start
            shape = self._state_shape(1)
            self.init_state = nn.ParameterList(
                nn.Parameter(torch.zeros(shape)) for _ in range(2 if c.cell == "lstm" else 1))
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.hidden_dim, c.vocab_size)
        if c.tie_weights:
            self.head.weight = self.embed.weight
        self.register_buffer("_never", torch.tensor(list(c.never_predict), dtype=torch.long),
                             persistent=False)
        with torch.no_grad():
            for i in c.never_predict:  # never-read ids start as zero vectors
                self.embed.weight[i].zero_()
        self.compute_dtype: torch.dtype | None = None  # see compute_in

    @contextmanager
    def compute_in(self, dtype: torch.dtype | None):
        """Mixed precision: inside this context the recurrence and the output layer compute in
        ``dtype`` (e.g. bfloat16) on casts of the float32 weights, which stay the weights the
        optimizer updates; gradients flow back through the casts. The carried state stays
        float32 between calls. ``None`` or float32 changes nothing."""
        before = self.compute_dtype
        self.compute_dtype = None if dtype in (None, torch.float32) else dtype
        try:
            yield self
        finally:
            self.compute_dtype = before

    @property
    def state_size(self) -> int:
        return 2 if self.config.cell == "lstm" else 1

    def _state_shape(self, batch_size: int) -> tuple[int, int, int]:
        c = self.config
        if c.cell == "jordan":  # the previous output distribution
            return (1, batch_size, c.vocab_size)
        return (c.num_layers, batch_size, c.hidden_dim)

    def initial_state(self, batch_size: int) -> State:
        """The state at a document start: zeros, or the learned h0 (and c0)."""
        shape = self._state_shape(batch_size)
        if self.config.learn_init_state:
            return tuple(p.expand(*shape).contiguous() for p in self.init_state)
        zeros = self.head.bias.new_zeros(shape)
        return tuple(zeros.clone() for _ in range(self.state_size))

    def reset_state(self, state: State, mask: torch.Tensor) -> State:
        """Put lanes where ``mask`` (B,) is true back to the initial state."""
        init = self.initial_state(mask.shape[0])
        m = mask.view(1, -1, 1)
        return tuple(torch.where(m, i, s) for i, s in zip(init, state))

    @staticmethod
    def detach_state(state: State) -> State:
        return tuple(s.detach() for s in state)

    def _run(self, x: torch.Tensor, state: State, weights: dict | None):
        if weights is None:
            out, new = self.rnn(x, state if self.state_size == 2 else state[0])
        else:  # mixed precision: the same layer on low-precision casts of its weights
            state = tuple(s.to(x.dtype) for s in state)
            out, new = functional_call(self.rnn, weights,
                                       (x, state if self.state_size == 2 else state[0]))
        return out, (new if isinstance(new, tuple) else (new,))

    def forward(self, inputs: torch.Tensor, state: State | None = None,
                reset: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        """inputs (B, T) ids -> logits (B, T, V) and the state after the last input."""
        batch, steps = inputs.shape
        if state is None:
            state = self.initial_state(batch)
        x = self.embed(inputs)  # (B, T, E)
        dtype, weights = self.compute_dtype, None
        if dtype is not None:
            x = x.to(dtype)
            weights = {name: w.to(dtype) for name, w in self.rnn.named_parameters()}
        p = self.config.weight_drop
        if p > 0 and self.training:
            # Weight drop (DropConnect): one mask on each recurrent matrix for the whole chunk,
            # so the same connections are dropped at every time step; the input-to-hidden
            # matrices and the state itself are left alone.
            weights = weights or dict(self.rnn.named_parameters())
            for name in weights:
                if name.startswith("weight_hh"):
                    weights[name] = nn.functional.dropout(weights[name], p, training=True)
        stepped = isinstance(self.rnn, SteppedRNN)
        if stepped:  # one recurrent-dropout mask for the whole chunk
            self.rnn.sample_masks(batch, x.device, x.dtype)
        if isinstance(self.rnn, JordanRNN):  # its state is the output layer's distribution
            self.rnn.set_head(self.head.weight.to(x.dtype), self.head.bias.to(x.dtype),
                              self._never)
        try:
            out, state = self._stretches(x, state, reset, weights)
        finally:
            if stepped:
                self.rnn.clear_masks()
        if dtype is None:
            logits = self.head(self.drop(out))  # (B, T, V)
        else:
            logits = nn.functional.linear(self.drop(out), self.head.weight.to(dtype),
                                          self.head.bias.to(dtype))
            state = tuple(s.to(self.head.bias.dtype) for s in state)
        logits.index_fill_(-1, self._never, float("-inf"))  # safe: linear keeps no output
        return logits, state

    def _stretches(self, x: torch.Tensor, state: State, reset: torch.Tensor | None,
                   weights: dict | None) -> tuple[torch.Tensor, State]:
        """Run the layers over the chunk, split at the time steps where some lane resets (a
        document starts there); each stretch runs as one call."""
        if reset is None:
            return self._run(x, state, weights)
        times = torch.nonzero(reset.any(dim=0)).flatten().tolist()
        pieces, prev = [], 0
        for t in times:
            if t > prev:
                o, state = self._run(x[:, prev:t], state, weights)
                pieces.append(o)
            state = self.reset_state(state, reset[:, t])
            prev = t
        o, state = self._run(x[:, prev:], state, weights)
        pieces.append(o)
        return (pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)), state


def loss_sum(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed nats over non-PAD targets, and how many there were."""
    total = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                        targets.reshape(-1), ignore_index=PAD_ID, reduction="sum")
    return total, int((targets != PAD_ID).sum())
