"""Held-out evaluation: the summed loss over a whole split, the state carried through the text.

The split is cut into parallel lanes (see ``batching``); each lane warms its state up on the text
just before its range (``burn_in``), so the figures match one sequential pass closely while running
many lanes at once. Unknown symbols (characters the vocab never saw) are not scored: no model can
predict them. They are counted and reported instead.

    loss_nats   total nats / scored symbols             (nats per symbol)
    perplexity  exp(loss_nats)
    bpc         total nats / characters / ln 2          (bits per character)
    chars       characters scored (unknown ones are left out)
"""

from __future__ import annotations

import math

import torch

from .batching import LaneLayout
from .corpus import Split
from .errors import CharLMError
from .config import EVAL_PRECISIONS, check_precision
from .model import COMPUTE_DTYPES, CharRNN, loss_sum
from .vocab import PAD_ID, Vocab


MIN_LANES, MAX_LANES, SYMBOLS_PER_LANE = 32, 512, 16384
MAX_LOGITS = 1 << 26  # logits held at once (lanes x chunk x vocab): 256 MB in float32


def auto_lanes(symbols: int, bptt_len: int = 256, vocab_size: int = 0) -> int:
    """Lanes for a text of ``symbols``: 32 for short texts (a validation split), more for long
    ones, one per 16k symbols up to 512 while a chunk's logits stay within MAX_LOGITS, so the
    forward runs on larger matrices. The warm-up before each lane keeps the figure close to one
    sequential pass whatever the count."""
    by_memory = MAX_LOGITS // max(1, bptt_len * vocab_size)
    return max(MIN_LANES, min(MAX_LANES, by_memory, symbols // SYMBOLS_PER_LANE))


@torch.no_grad()
def evaluate(model: CharRNN, vocab: Vocab, split: Split, lanes: int | None = None,
             bptt_len: int = 256,
             burn_in: int = 256, device: torch.device | str | None = None,
             precision: str = "fp32") -> dict:
    """``precision`` "bf16" runs the forward on bfloat16 casts of the weights (faster on CPUs
    with bf16 instructions); the loss is still summed in float32 and in float64 across chunks,
    but each logit carries bf16's ~3 significant digits, so figures move in the third or fourth
    decimal. "fp32" (the default) is exact."""
    check_precision(precision, EVAL_PRECISIONS)
    dtype = COMPUTE_DTYPES[precision]
    if split.chars - split.unknown < 1:
        raise CharLMError("no text to evaluate" + (": every character is unknown to the model"
                                                   if split.unknown else ""))
    device = device or next(model.parameters()).device
    lanes = auto_lanes(split.symbols, bptt_len, vocab.size) if lanes is None else lanes
    was_training = model.training
    model.eval()
    layout = LaneLayout(split.tokens, split.doc_starts, lanes, bptt_len, vocab.eod_id,
                        burn_in=burn_in)
    state = model.initial_state(layout.num_lanes)
    total, count = 0.0, 0
    try:
        for chunk in range(layout.chunks_per_epoch):
            b = layout.batch(chunk)
            x = torch.from_numpy(b.inputs).to(device)
            y = torch.from_numpy(b.targets).to(device)
            if vocab.unk_id is not None:
                y = y.masked_fill(y == vocab.unk_id, PAD_ID)
            reset = torch.from_numpy(b.reset).to(device)
            with model.compute_in(dtype):
                logits, state = model(x, state, reset)
            s, n = loss_sum(logits, y)
            total += float(s)
            count += n
    finally:
        model.train(was_training)
    loss = total / count if count else float("nan")
    chars = split.chars - split.unknown  # unknown characters are not scored
    return {
        "loss_nats": loss,
        "perplexity": math.exp(loss) if count and loss < 700 else float("inf"),
        "bpc": total / chars / math.log(2),
        "chars": chars,
        "symbols": count,
        "unknown": split.unknown,
        "total_nats": total,
    }
