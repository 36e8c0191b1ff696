"""The recurrent backbone: embedding -> stacked recurrent layers, with the state carried.

Every model of charlm that reads text as a recurrent network is this backbone with a head on
top (``heads``): the next-symbol head makes a language model; a classification head will make a
classifier, and can start from a language model's backbone weights.

The forward takes the recurrent state and returns the new one, so callers carry it across
chunks (training, evaluation) or steps (sampling). A boolean ``reset`` mask (B, T) says where a
lane's state goes back to the initial state before an input is read (a document starts there);
the layers run the stretches between resets, each as one call.

    ids (B, T) -> embed (B, T, E) -> layers -> features (B, T, H), state
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from ..errors import CharLMError, TooLargeToCount
from ..options import Options, fraction, open_fraction, option, positive_int
from ..predictor import MixedPrecision, reset_where
from ..text.vocab import PAD_ID
from .cells import JordanRNN, LoopRNN, SteppedRNN

CELLS = ("lstm", "gru", "rnn", "irnn", "leaky", "jordan")
FUSED_CELLS = ("lstm", "gru", "rnn", "irnn")  # the rest, and some options, run step by step
                                              # (cells.LoopRNN, cells.JordanRNN)
# The fused torch.nn layer that runs each cell; irnn is nn.RNN with ReLU and its own init.
_LAYERS = {"lstm": (nn.LSTM, {}), "gru": (nn.GRU, {}), "rnn": (nn.RNN, {"nonlinearity": "tanh"}),
           "irnn": (nn.RNN, {"nonlinearity": "relu"})}
IRNN_INPUT_STD = 0.001  # Le, Jaitly & Hinton 2015: identity recurrence, small input weights
# Cells whose recurrence takes no weight drop nor recurrent dropout (see RecurrentConfig.check).
UNMASKED_CELLS = ("irnn",)
State = tuple[torch.Tensor, ...]  # (h,) or (h, c), each (num_layers, B, hidden_dim); jordan:
                                  # (y,), the previous output distribution, (1, B, vocab)


@dataclass(frozen=True)
class RecurrentConfig(Options):
    """The backbone's options (saved in a run's config.json under "model")."""

    section = "model"

    vocab_size: int = option(help="Symbols in the vocab.", check=positive_int,
                             command_line=False)
    cell: str = option(
        "lstm", "Recurrent cell: lstm, gru, rnn (Elman, tanh), irnn (ReLU recurrence started at "
                "the identity, zero biases: Le, Jaitly & Hinton 2015), leaky (leaky-integrator "
                "units, h' = g h + (1 - g) tanh(...); see --leak) or jordan (the state fed "
                "back is the previous output distribution, not a hidden layer).", choices=CELLS)
    num_layers: int = option(2, "Stacked recurrent layers.", flag="--layers", check=positive_int)
    hidden_dim: int = option(256, "Hidden units per layer.", flag="--hidden", check=positive_int)
    embed_dim: int = option(64, "Embedding size.", flag="--embed", check=positive_int)
    dropout: float = option(0.0, "Dropout between layers and before the output layer.",
                            check=fraction)
    weight_drop: float = option(
        0.0, "Weight drop (DropConnect, as in AWD-LSTM): while training, drop this share of "
             "the hidden-to-hidden weights, one mask per chunk for every time step.",
        check=fraction)
    learn_init_state: bool = option(
        False, "Train the initial state h0 (and c0 for lstm) used at every document start, "
               "instead of zeros.")
    layer_norm: bool = option(
        False, "Layer normalisation inside the recurrence, before the nonlinearities (Ba, Kiros "
               "& Hinton 2016); runs the layers step by step.")
    recurrent_dropout: float = option(
        0.0, "Dropout on the recurrent update without memory loss (Semeniuta et al. 2016): the "
             "LSTM's candidate g, the GRU's candidate n, the leaky unit's new value, the "
             "Elman/IRNN recurrent input; one mask per chunk; runs the layers step by step.",
        check=fraction)
    leak: float = option(0.5, "Leaky cell: the share g of the old state each unit keeps per "
                              "step, in (0, 1).", check=open_fraction)
    learn_leak: bool = option(False, "Leaky cell: learn g per unit (starting at --leak).")

    def check(self) -> None:
        if self.cell in UNMASKED_CELLS and (self.recurrent_dropout > 0 or self.weight_drop > 0):
            raise CharLMError(f"--recurrent-dropout and --weight-drop do not suit --cell "
                              f"{self.cell}: on its identity recurrence a kept unit would grow by 1/(1 - p) "
                              "at every step; use --dropout")
        if self.cell != "leaky" and (self.learn_leak or self.leak != self.default("leak")):
            raise CharLMError("--leak and --learn-leak apply only to --cell leaky")

    @property
    def uses_loop(self) -> bool:
        """Whether the layers run step by step (cells.LoopRNN) rather than fused."""
        return self.cell not in FUSED_CELLS or self.layer_norm or self.recurrent_dropout > 0

    @property
    def state_size(self) -> int:
        """Tensors in the carried state: (h, c) for the LSTM, (h,) for the others."""
        return 2 if self.cell == "lstm" else 1


# The options a trained backbone fixes (its cell and the shapes of its weights); the
# regularisers may differ in a model that starts from it (--init-from).
REGULARISERS = ("dropout", "weight_drop", "recurrent_dropout")
SHAPE_OPTIONS = tuple(name for name in RecurrentConfig.declared() if name not in REGULARISERS)


def check_fixed(given: dict, config: RecurrentConfig) -> None:
    """Refuse options ``given`` that differ from what the trained ``config`` fixes."""
    fixed = sorted(RecurrentConfig.flag(k) for k, v in given.items()
                   if k in SHAPE_OPTIONS and v is not None and v != getattr(config, k))
    if fixed:
        raise CharLMError(f"the model given with --init-from fixes {', '.join(fixed)} (its "
                          f"weights are copied); leave them out")


class RecurrentBackbone(MixedPrecision, nn.Module):
    """Embedding and recurrent stack with an explicitly carried state (see the module doc)."""

    def __init__(self, config: RecurrentConfig):
        super().__init__()
        self.config = c = config
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
        if c.learn_init_state:  # trained like any weight (never weight-decayed); zeros to start
            shape = self._state_shape(1)
            self.init_state = nn.ParameterList(
                nn.Parameter(torch.zeros(shape)) for _ in range(c.state_size))

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
        zeros = self.embed.weight.new_zeros(shape)
        return tuple(zeros.clone() for _ in range(self.config.state_size))

    def reset_state(self, state: State, mask: torch.Tensor) -> State:
        """Put lanes where ``mask`` (B,) is true back to the initial state."""
        return reset_where(state, self.initial_state(mask.shape[0]), mask)

    def feature_step(self):
        """``step(ids (B,), state) -> (features (B, H), state)``: one input per lane through
        the fused layers by their kernel alone (torch.lstm / gru / rnn_*), without the module
        call around it (its checks cost about as much as the step of a small model); the same
        figures as ``forward`` on (B, 1) ids. None where the layers run step by step, in
        training mode (dropout) or in mixed precision: use ``forward`` there."""
        rnn = self.rnn
        if isinstance(rnn, SteppedRNN) or self.training or self.compute_dtype is not None:
            return None
        kernel = {"LSTM": torch.lstm, "GRU": torch.gru, "RNN_TANH": torch.rnn_tanh,
                  "RNN_RELU": torch.rnn_relu}[rnn.mode]
        weights = [w for layer in rnn.all_weights for w in layer]
        table = self.embed.weight
        # has biases, layers, dropout, train, bidirectional, batch first
        settings = (rnn.bias, rnn.num_layers, 0.0, False, False, False)
        two = self.config.state_size == 2  # the LSTM's kernel takes (h, c), the others h

        def step(ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
            state = tuple(s.contiguous() for s in state)  # as cuDNN needs (see _run)
            out, *new = kernel(nn.functional.embedding(ids, table)[None],
                               state if two else state[0], weights, *settings)
            return out[0], tuple(new)
        return step

    @property
    def packs(self) -> bool:
        """Whether ``forward`` can take ``lengths`` (the fused layers read packed sequences)."""
        return not isinstance(self.rnn, SteppedRNN)

    def forward(self, inputs: torch.Tensor, state: State | None = None,
                reset: torch.Tensor | None = None,
                readout: nn.Module | None = None,
                lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        """inputs (B, T) ids -> features (B, T, H) and the state after the last input.

        ``readout``: the output layer a Jordan network feeds back through (its state is that
        layer's distribution over the vocab); the other cells ignore it. ``lengths`` (B,), for
        the fused layers only (``packs``): each row is a text of that many ids followed by PAD;
        the layers read it packed (``pack_padded_sequence``), so the state returned is each
        row's after its own last id and the features past a row's end are zeros.
        """
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
        if isinstance(self.rnn, JordanRNN):
            if readout is None:
                raise CharLMError("a Jordan network needs the output layer it feeds back "
                                  "through")
            self.rnn.set_head(readout.weight.to(x.dtype), readout.bias.to(x.dtype),
                              readout.never)
        try:
            if lengths is not None:
                if reset is not None or not self.packs:
                    raise CharLMError("packed sequences are read by the fused layers, with no "
                                      "reset inside")
                out, state = self._packed(x, state, lengths.cpu(), weights)
            else:
                out, state = self._stretches(x, state, reset, weights)
        finally:
            if stepped:
                self.rnn.clear_masks()
        if dtype is not None:
            state = tuple(s.to(self.embed.weight.dtype) for s in state)
        return out, state

    def _run(self, x: torch.Tensor, state: State, weights: dict | None):
        two = self.config.state_size == 2
        state = tuple(s.contiguous() for s in state)  # cuDNN takes no other (a lane's slice)
        if weights is None:
            out, new = self.rnn(x, state if two else state[0])
        else:  # mixed precision or weight drop: the same layer on other weights
            dtype = x.data.dtype if isinstance(x, nn.utils.rnn.PackedSequence) else x.dtype
            state = tuple(s.to(dtype) for s in state)
            out, new = functional_call(self.rnn, weights, (x, state if two else state[0]))
        return out, (new if isinstance(new, tuple) else (new,))

    def _packed(self, x: torch.Tensor, state: State, lengths: torch.Tensor,
                weights: dict | None) -> tuple[torch.Tensor, State]:
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                                   enforce_sorted=False)
        out, state = self._run(packed, state, weights)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out, state

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


def count_parameters(build, config: Options) -> int:
    """Parameters of the model ``build(config)`` would make, counted on the "meta" device (no
    memory) without building a model of absurd depth: every layer after the first has the same
    parameters, so a model of L layers has count(1) + (L - 1) (count(2) - count(1)). Sizes too
    large for torch to describe raise TooLargeToCount."""
    from dataclasses import replace

    def count(layers: int) -> int:
        try:
            with torch.device("meta"):
                model = build(replace(config, num_layers=layers))
        except RuntimeError as exc:  # "Storage size calculation overflowed"
            if "overflow" in str(exc):
                raise TooLargeToCount() from None
            raise
        return sum(p.numel() for p in model.parameters())
    one = count(1)
    return one + (config.num_layers - 1) * (count(2) - one) if config.num_layers > 1 else one
