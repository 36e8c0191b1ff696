"""What a language model computes over a text, symbol by symbol: each layer's state and gates.

    ids (one stream, EOD where documents start)
      │
      ├─► the model's own next_logits ─► loss per symbol (bits), top-5 guesses
      │     (the same figures `charlm eval` gives; any kind of language model)
      │
      ├─► a baseline's units (model_layers): the window model's hidden layer; the HMM's
      │     belief, P(hidden state | the text so far), one unit per state; an n-gram has none
      │
      └─► trace_layers (recurrent models): each layer's recurrence written out step by step
            from the model's weights (every cell: lstm, gru, rnn, irnn, leaky, jordan; layer norm too), keeping
            per step: h; for an LSTM tanh(c) and the gates i, f, o and the candidate g; for a
            GRU the gates r, z and the candidate n. The state goes back to the initial one
            where a document starts, as in training and evaluation; the top layer's h equals
            the model's features (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..models.cells import JordanRNN

# The series kept per layer, by cell, with what they are.
SERIES = {
    "lstm": {"h": "hidden output h", "c": "cell state tanh(c)", "i": "input gate",
             "f": "forget gate", "o": "output gate", "g": "candidate g"},
    "gru": {"h": "hidden output h", "r": "reset gate", "z": "update gate",
            "n": "candidate n"},
    "rnn": {"h": "hidden output h"},
    "irnn": {"h": "hidden output h (ReLU)"},
    "leaky": {"h": "hidden output h"},
    "jordan": {"h": "hidden layer h"},
    # The baselines, each one layer (or none) of its own.
    "window": {"h": "hidden layer (tanh)"},
    "hmm": {"h": "P(state | text so far)"},
    "ngram": {},
}
GATES = {"lstm": ("i", "f", "o"), "gru": ("r", "z")}  # sigmoid gates, in [0, 1]
# The state (h, an LSTM's tanh(c)): always in the report, and where units for a pattern are
# looked for; the other series (gates, candidates) are kept per symbol only with --gates.
STATES = ("h", "c")


@dataclass
class Trace:
    """A model's run over ``ids`` (T,): per symbol t the figures for predicting ids[t + 1]
    from what came up to t, and each layer's series at t, (T, H) float32 arrays."""

    ids: np.ndarray
    bits: np.ndarray             # (T - 1,) the loss of ids[t + 1] in bits (NaN: unknown,
                                 # not scored, as in evaluation)
    top_ids: np.ndarray          # (T - 1, K) the model's K most likely next symbols...
    top_probs: np.ndarray        # (T - 1, K) ...and their probabilities
    cell: str
    layers: list[dict[str, np.ndarray]] = field(default_factory=list)


class Anatomy(NamedTuple):
    """What the report calls a model's parts."""

    cell: str     # its entry in SERIES
    layers: int
    units: int    # in each layer
    summary: str  # the model in a few words


def anatomy(model) -> Anatomy:
    """The model's parts, whatever its kind."""
    c = model.config
    if model.kind == "rnn-lm":
        return Anatomy(c.cell, c.num_layers, c.hidden_dim,
                       f"{c.cell} {c.num_layers}\u00d7{c.hidden_dim}")
    if model.kind == "window-lm":
        return Anatomy("window", 1, c.hidden_dim,
                       f"window model, K = {c.context}, {c.hidden_dim} hidden units")
    if model.kind == "hmm-lm":
        return Anatomy("hmm", 1, c.states, f"HMM, {c.states} states")
    return Anatomy("ngram", 0, 0, f"{c.order}-gram (Kneser-Ney)")


def model_layers(model, ids: torch.Tensor, reset: torch.Tensor) -> list[dict[str, np.ndarray]]:
    """Each layer's series over ``ids`` (T,), whatever the kind of model."""
    if model.kind == "rnn-lm":
        return trace_layers(model, ids, reset)[0]
    if model.kind == "window-lm":
        hidden, _ = model.features(model.windows(ids[None], None, reset[None]))
        return [{"h": hidden[0].float().cpu().numpy()}]
    if model.kind == "hmm-lm":
        return [{"h": model.emission_posteriors(ids, reset).float().cpu().numpy()}]
    return []  # an n-gram's memory is its last N-1 symbols: nothing to show as units


@torch.no_grad()
def trace(model, ids: np.ndarray, eod_id: int, unk_id: int | None = None, top: int = 5) -> Trace:
    """Run ``model`` (any kind of language model) over ``ids`` and keep what the report
    shows."""
    x = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=model.device)[None]
    with model.inference():
        reset = x == eod_id
        logits, _ = model.next_logits(x, None, reset)
        logp = torch.log_softmax(logits[0, :-1].double(), dim=-1)
        targets = x[0, 1:]
        bits = -logp.gather(1, targets[:, None])[:, 0] / np.log(2.0)
        if unk_id is not None:
            bits = bits.masked_fill(targets == unk_id, float("nan"))
        k = min(top, logp.shape[-1])
        top_logp, top_ids = logp.topk(k, dim=-1)
        layers = model_layers(model, x[0], reset[0])
    return Trace(ids=np.asarray(ids), bits=bits.float().cpu().numpy(),
                 top_ids=top_ids.cpu().numpy(), top_probs=top_logp.exp().float().cpu().numpy(),
                 cell=anatomy(model).cell, layers=layers)


def _weights(rnn, k: int):
    return (getattr(rnn, f"weight_ih_l{k}"), getattr(rnn, f"weight_hh_l{k}"),
            getattr(rnn, f"bias_ih_l{k}"), getattr(rnn, f"bias_hh_l{k}"))


def _ln(rnn, x: torch.Tensor, k: int, j: int) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), getattr(rnn, f"ln{j}_weight_l{k}"),
                        getattr(rnn, f"ln{j}_bias_l{k}"))


def trace_layers(model, ids: torch.Tensor, reset: torch.Tensor
                 ) -> tuple[list[dict[str, np.ndarray]], torch.Tensor]:
    """Each layer's series over ``ids`` (T,), and the top layer's h (T, H): the features the
    model's head reads."""
    backbone = model.backbone
    rnn, cell, ln = backbone.rnn, model.config.cell, model.config.layer_norm
    x = backbone.embed(ids)  # (T, E)
    initial = [s[:, 0] for s in backbone.initial_state(1)]  # each (L, H) or (1, V)
    if isinstance(rnn, JordanRNN):
        return _jordan(model, x, reset, initial[0][0])
    layers = []
    for k in range(model.config.num_layers):
        h0 = initial[0][k]
        c0 = initial[1][k] if cell == "lstm" else None
        series = _layer(rnn, cell, ln, k, x, reset, h0, c0)
        layers.append(series)
        x = series["h"]
    top = layers[-1]["h"]
    return [{name: s.float().cpu().numpy() for name, s in layer.items()} for layer in layers], top


def _layer(rnn, cell: str, ln: bool, k: int, x: torch.Tensor, reset: torch.Tensor,
           h0: torch.Tensor, c0: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """One layer (not Jordan) over the whole input ``x`` (T, in), step by step."""
    w_ih, w_hh, b_ih, b_hh = _weights(rnn, k)
    xp = F.linear(x, w_ih, b_ih)  # (T, G*H): every step's input product at once
    hs = w_hh.shape[1]
    names = {"lstm": "hcifog", "gru": "hrzn"}.get(cell, "h")
    out = {name: [] for name in names}
    h, c = h0, c0
    if cell == "leaky":
        leak = (torch.sigmoid(getattr(rnn, f"leak_logit_l{k}")) if rnn.learn_leak
                else torch.tensor(rnn.leak, dtype=x.dtype))
    starts = reset.tolist()
    for t in range(x.shape[0]):
        if starts[t]:
            h, c = h0, c0
        if cell == "lstm":
            pre = xp[t] + b_hh + w_hh @ h
            if ln:
                pre = _ln(rnn, pre, k, 0)
            i, f, g, o = (pre[:hs].sigmoid(), pre[hs:2 * hs].sigmoid(), pre[2 * hs:3 * hs].tanh(),
                          pre[3 * hs:].sigmoid())
            c = f * c + i * g
            tc = torch.tanh(_ln(rnn, c, k, 1) if ln else c)
            h = o * tc
            for name, v in zip("hcifog", (h, tc, i, f, o, g)):
                out[name].append(v)
        elif cell == "gru":
            hp = w_hh @ h + b_hh
            rz = xp[t][:2 * hs] + hp[:2 * hs]
            rz = (_ln(rnn, rz, k, 0) if ln else rz).sigmoid()
            r, z = rz[:hs], rz[hs:]
            n = xp[t][2 * hs:] + r * hp[2 * hs:]
            n = torch.tanh(_ln(rnn, n, k, 1) if ln else n)
            h = torch.lerp(n, h, z)
            for name, v in zip("hrzn", (h, r, z, n)):
                out[name].append(v)
        else:
            pre = xp[t] + b_hh + w_hh @ h
            if ln:
                pre = _ln(rnn, pre, k, 0)
            if cell == "leaky":
                h = torch.lerp(torch.tanh(pre), h, leak)
            else:
                h = torch.tanh(pre) if cell == "rnn" else torch.relu(pre)
            out["h"].append(h)
    return {name: torch.stack(v) for name, v in out.items()}


def _jordan(model, x: torch.Tensor, reset: torch.Tensor, y0: torch.Tensor):
    """A Jordan network: every layer reads the distribution the output layer gave at the step
    before."""
    rnn, head = model.backbone.rnn, model.head
    layers = range(model.config.num_layers)
    weights = [_weights(rnn, k) for k in layers]
    out = [[] for _ in layers]
    y = y0
    starts = reset.tolist()
    for t in range(x.shape[0]):
        if starts[t]:
            y = y0
        inp = x[t]
        for k in layers:
            w_ih, w_hh, b_ih, b_hh = weights[k]
            pre = F.linear(inp, w_ih, b_ih) + w_hh @ y + b_hh
            if model.config.layer_norm:
                pre = _ln(rnn, pre, k, 0)
            inp = torch.tanh(pre)
            out[k].append(inp)
        logits = head(inp[None])[0]
        y = torch.softmax(logits, -1)
    layers_out = [{"h": torch.stack(v)} for v in out]
    top = layers_out[-1]["h"]
    return [{"h": layer["h"].float().cpu().numpy()} for layer in layers_out], top
