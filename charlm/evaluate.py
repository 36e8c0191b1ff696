"""Held-out evaluation: the summed loss over a whole split, the state carried through the text.

Any ``NextSymbolModel`` (see ``charlm.predictor``) is evaluated the same way. The split is cut
into parallel lanes (see ``text.batching``); each lane warms its state up on the text just
before its range (``burn_in``), so the figures match one sequential pass closely while running
many lanes at once. Unknown symbols (characters the vocab never saw) are not scored: no model
can predict them. They are counted and reported instead.

    loss_nats   total nats / scored symbols             (nats per symbol)
    perplexity  exp(loss_nats)
    bpc         total nats / characters / ln 2          (bits per character)
    chars       characters scored (unknown ones are left out)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .devices import COMPUTE_DTYPES, DEVICE_HELP, DEVICES, EVAL_PRECISIONS
from .errors import CharLMError
from .options import Options, non_negative_int, option, positive_int
from .predictor import NextSymbolModel, check_vocab, loss_sum
from .text.batching import LaneLayout
from .text.corpus import Split
from .text.vocab import PAD_ID, Vocab

MIN_LANES, MAX_LANES, SYMBOLS_PER_LANE = 32, 512, 16384
BURN_IN = 256  # symbols a lane reads, unscored, before its range
MAX_LOGITS = 1 << 26  # logits held at once (lanes x chunk x vocab): 256 MB in float32


@dataclass(frozen=True)
class EvalConfig(Options):
    """How a text is evaluated."""

    lanes: int | None = option(
        None, f"Parallel lanes the text is cut into (each first reads the {BURN_IN} symbols "
              f"before its start, unscored).", check=positive_int,
        default_help=f"{MIN_LANES}, or for long texts one per {SYMBOLS_PER_LANE // 1024}k "
                     f"symbols, at most {MAX_LANES}")
    bptt_len: int = option(256, "Symbols per chunk of the forward.", check=positive_int,
                           command_line=False)
    burn_in: int = option(BURN_IN, "Symbols each lane reads before its range, unscored.",
                          check=non_negative_int, command_line=False)
    precision: str = option(
        "fp32", "fp32 (exact) or bf16: the forward computes on bfloat16 casts of the weights, "
                "faster on CPUs with bf16 instructions; figures then move in the third or fourth "
                "decimal.", choices=EVAL_PRECISIONS)
    device: str = option("cpu", DEVICE_HELP, choices=DEVICES)  # where the model is loaded


def auto_lanes(symbols: int, bptt_len: int | None = None, vocab_size: int = 0) -> int:
    """Lanes for a text of ``symbols``: 32 for short texts (a validation split), more for long
    ones, one per 16k symbols up to 512 while a chunk's logits (of ``bptt_len`` symbols, by
    default EvalConfig's) stay within MAX_LOGITS, so the forward runs on larger matrices. The
    warm-up before each lane keeps the figure close to one sequential pass whatever the
    count."""
    bptt_len = bptt_len or EvalConfig.default("bptt_len")
    by_memory = MAX_LOGITS // max(1, bptt_len * vocab_size)
    return max(MIN_LANES, min(MAX_LANES, by_memory, symbols // SYMBOLS_PER_LANE))


@torch.no_grad()
def evaluate(model: NextSymbolModel, vocab: Vocab, split: Split,
             config: EvalConfig | None = None, sample: int | None = None,
             limit: int | None = None, world=None) -> dict:
    """The figures of ``model`` on ``split``. With ``world`` (the processes of a run), each
    scores its share of the lanes and the sums are combined: the figures of all lanes.

    Precision "bf16" runs the forward on bfloat16 casts of the weights (faster on CPUs with
    bf16 instructions); the loss is still summed in
    float32 and in float64 across chunks, but each logit carries bf16's ~3 significant digits,
    so figures move in the third or fourth decimal. "fp32" (the default) is exact.

    With ``limit`` (symbols) below the split's length only about that many are scored: the
    first limit/lanes symbols of every lane's range, each read after the lane's burn-in, so a
    fixed sample spread over the split, the same positions in the same context every time
    (e.g. for validation during training); the figures are the sample's. With ``sample`` below
    what is scored, the figures of the smaller such sample, whose positions lie inside, are
    given too, under "sample"."""
    config = config or EvalConfig()
    check_vocab(model, vocab)
    if split.chars - split.unknown < 1:
        raise CharLMError("no text to evaluate" + (": every character is unknown to the model"
                                                   if split.unknown else ""))
    layout = _layout(split, vocab, config)
    partial = limit is not None and limit < split.symbols
    if partial:
        layout = layout.limited(-(-limit // layout.num_lanes))
    sampled = None
    if sample and sample < min(split.symbols, limit or split.symbols):
        sampled = layout.limited(-(-sample // layout.num_lanes))
    shared = world is not None and world.size > 1
    if shared:
        share = world.share(layout.num_lanes, "the validation's lane count",
                            "run fewer processes")
        layout = layout.select(share)
        sampled = sampled.select(share) if sampled is not None else None
    total, count, s_total, s_count = 0.0, 0, 0.0, 0
    for chunk, logits, y in _forward(model, vocab, layout, config):
        s, n = loss_sum(logits, y)
        total += float(s)
        count += n
        if sampled is not None and chunk < sampled.chunks_per_epoch:
            outside = torch.from_numpy(~sampled.scored(chunk)).to(model.device)
            s, n = loss_sum(logits, y.masked_fill(outside, PAD_ID))
            s_total += float(s)
            s_count += n
    if shared:
        total, count, s_total, s_count = world.sum(total, count, s_total, s_count)
        count, s_count = int(count), int(s_count)
    chars = split.chars - split.unknown  # unknown characters are not scored
    if partial:  # part of the split: its characters at the split's chars per symbol
        chars = count * chars / max(split.symbols, 1)
    figures = _figures(total, count, chars, split.unknown)
    if sampled is not None:
        figures["sample"] = _figures(s_total, s_count, s_count * chars / max(count, 1), 0)
    return figures


@torch.no_grad()
def symbol_losses(model: NextSymbolModel, vocab: Vocab, split: Split,
                  config: EvalConfig | None = None) -> np.ndarray:
    """The nats of every target of ``split`` (position i: the loss of tokens[i] given what came
    before it), in float64; NaN where nothing is scored (position 0, unknown symbols). They are
    the terms whose sum is ``evaluate``'s total_nats, from the same lanes and chunks."""
    config = config or EvalConfig()
    check_vocab(model, vocab)
    layout = _layout(split, vocab, config)
    losses = np.full(len(split.tokens), np.nan)
    for chunk, logits, y in _forward(model, vocab, layout, config):
        nats = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1),
                               ignore_index=PAD_ID, reduction="none").view(y.shape)
        scored = (y != PAD_ID).cpu().numpy()
        losses[layout.positions(chunk)[scored] + 1] = nats.double().cpu().numpy()[scored]
    return losses


def figures_of(losses: np.ndarray, split: Split) -> dict:
    """``evaluate``'s figures from ``symbol_losses`` of the whole split (summed in another
    order: equal to about 1e-7 relative)."""
    scored = ~np.isnan(losses)
    return _figures(float(losses[scored].sum()), int(scored.sum()), split.chars - split.unknown,
                    split.unknown)


def _layout(split: Split, vocab: Vocab, config: EvalConfig) -> LaneLayout:
    lanes = config.lanes or auto_lanes(split.symbols, config.bptt_len, vocab.size)
    return LaneLayout(split.tokens, split.doc_starts, lanes, config.bptt_len, vocab.eod_id,
                      burn_in=config.burn_in)


def _forward(model: NextSymbolModel, vocab: Vocab, layout: LaneLayout, config: EvalConfig):
    """The model over the layout's chunks, the state carried: (chunk, logits, targets) with
    unknown targets turned into PAD (not scored)."""
    device = model.device
    with model.inference(COMPUTE_DTYPES[config.precision]):
        state = model.initial_state(layout.num_lanes)
        for chunk in range(layout.chunks_per_epoch):
            b = layout.batch(chunk)
            x = torch.from_numpy(b.inputs).to(device)
            y = torch.from_numpy(b.targets).to(device)
            if vocab.unk_id is not None:
                y = y.masked_fill(y == vocab.unk_id, PAD_ID)
            reset = torch.from_numpy(b.reset).to(device)
            logits, state = model.next_logits(x, state, reset)
            yield chunk, logits, y


def _figures(total: float, count: int, chars: float, unknown: int) -> dict:
    loss = total / count if count else float("nan")
    return {
        "loss_nats": loss,
        "perplexity": math.exp(loss) if count and loss < 700 else float("inf"),
        "bpc": total / chars / math.log(2) if chars else float("nan"),
        "chars": round(chars),
        "symbols": count,
        "unknown": unknown,
        "total_nats": total,
    }
