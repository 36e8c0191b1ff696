"""A character (or token) n-gram model with interpolated modified Kneser-Ney smoothing.

The memoryless contrast to the recurrent models: the next symbol depends on the last
``order - 1`` symbols only. Probabilities follow Chen & Goodman (1998), interpolated, with
three discounts per order:

    P_k(w | h) = (a_k(h, w) - D_k(a_k(h, w))) / A_k(h)  +  gamma_k(h) * P_(k-1)(w | h')

    h' = h without its oldest symbol; a_k = raw counts at the highest order, continuation
    counts below (how many distinct symbols come before h w; an occurrence at the start of a
    document, whose left is padding, counts once each); A_k(h) = the sum of a_k(h, .);
    gamma_k(h) = (D1 N1(h) + D2 N2(h) + D3+ N3+(h)) / A_k(h); D1, D2, D3+ from the counts of
    counts n1..n4 of order k (Y = n1 / (n1 + 2 n2), Dr = r - (r + 1) Y n(r+1) / nr); a context
    never seen at order k gives P_k = P_(k-1); P_0 is uniform over the symbols the model
    predicts (PAD and UNK never).

Documents are read as the recurrent models read them: a context never reaches back past the
EOD that starts a document; before it lies padding (PAD), and the EOD at a document's end is a
symbol to predict like any other.

How the tables are kept (all sorted int64 keys, so counting is a few numpy sorts per order and
a lookup is a binary search):

    context ids, by length L (1..order-1), read right to left: the context of the last L
    symbols has key  id(the last L-1 symbols) * V + (the symbol before them),  its id is its
    index in ctx_keys_L (the empty context has id 0)

    k-grams, by order k (1..order): key  id(context of length k-1) * V + w, with a_k(key)

Counting is vectorised. The text is read in chunks of 4M targets; each gram is its symbols in
base V, as many to an int64 word as fit (9 for 100 symbols, 5 for 2,450: one word for most
alphabets and orders, more for long grams of large alphabets); each chunk's distinct grams are
counted (``np.unique``) and merged, so memory follows the distinct grams, and the tables are
built from those. Lookups of an order whose contexts x V fit DENSE_LIMIT gather dense rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import CharLMError
from ..options import Options, option
from ..predictor import NextSymbolModel, State
from ..text.vocab import PAD_ID

MAX_ORDER = 64
# An order whose contexts x V fit this many entries keeps its rows dense (float64: 32 MB),
# so a lookup gathers a row instead of scattering its entries.
DENSE_LIMIT = 1 << 22


def _order_check(flag: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_ORDER:
        raise CharLMError(f"{flag} must be an integer from 1 to {MAX_ORDER} (1: symbol "
                          f"frequencies alone; N: the last N-1 symbols as context), got "
                          f"{value!r}")


@dataclass(frozen=True)
class NgramConfig(Options):
    """The n-gram model: its order, and the sizes of its tables (set by counting)."""

    vocab_size: int = option(1, "Symbols in the vocab.", command_line=False)
    order: int = option(6, "N of the n-gram: the next symbol is predicted from the last N-1.",
                        check=_order_check)
    never_predict: tuple[int, ...] = option((PAD_ID,), "Ids whose logits are -inf (PAD, UNK).",
                                            command_line=False)
    contexts: tuple[int, ...] = option((), "Distinct contexts of each length 1..N-1.",
                                       command_line=False)
    ngrams: tuple[int, ...] = option((), "Distinct k-grams of each order k = 1..N.",
                                     command_line=False)

    def check(self) -> None:
        super().check()
        if len(self.contexts) not in (0, self.order - 1) or \
                len(self.ngrams) not in (0, self.order):
            raise CharLMError("the n-gram tables do not match the order")


def _discounts(adjusted: np.ndarray) -> np.ndarray:
    """Chen & Goodman's D1, D2, D3+ from the counts of counts of one order (each kept within
    [0, r]; where a count of counts is missing, the single Kneser-Ney discount Y)."""
    n = [int(np.count_nonzero(adjusted == r)) for r in (1, 2, 3, 4)]
    y = n[0] / (n[0] + 2 * n[1]) if n[0] + n[1] else 0.5
    out = []
    for r in (1, 2, 3):
        d = r - (r + 1) * y * n[r] / n[r - 1] if n[r - 1] else y
        out.append(min(max(d, 0.0), float(r)))
    return np.array(out, dtype=np.float64)


def padded_stream(tokens: np.ndarray, eod_id: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """The id stream with ``pad`` PADs before each document's EOD (a document runs from its
    EOD to the next one, which is also its last target), and which positions are targets."""
    tokens = np.asarray(tokens).astype(np.int64)
    starts = np.flatnonzero(tokens == eod_id)
    if len(starts) == 0 or starts[0] != 0:
        starts = np.concatenate([[0], starts])
    starts = starts[starts < len(tokens) - 1]  # the final EOD starts nothing
    ends = np.append(starts[1:], len(tokens) - 1)  # inclusive: the next document's EOD
    lengths = pad + ends - starts + 1
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    block = np.repeat(np.arange(len(starts)), lengths)
    within = np.arange(int(lengths.sum())) - offsets[block]
    source = starts[block] + within - pad
    stream = np.where(within < pad, PAD_ID, tokens[np.maximum(source, 0)])
    return stream, within > pad  # the pads and each document's first EOD are read, not scored


def per_word(v: int) -> int:
    """Symbols of base ``v`` that one int64 word holds (v^k < 2^63)."""
    k = 1
    while v ** (k + 1) < 2 ** 63:
        k += 1
    return k


def packed_grams(tokens: np.ndarray, eod_id: int, order: int, v: int, never: np.ndarray,
                 chunk: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``order``-grams of the id stream, (G, W) int64 words, and their counts
    (G,), read ``chunk`` targets at a time. A gram is its symbols, the oldest first
    (c_(N-1) ... c_1 w), ``per_word(v)`` of them in base V to a word (W words: one for most
    alphabets and orders): position i predicts tokens[i] from the symbols before it back to the
    EOD that starts its document (``padded_stream``'s rule), PAD before that; targets in
    ``never`` are left out."""
    n = len(tokens)
    span, per = order - 1, per_word(v)
    words = -(-order // per)
    parts, counts, held = [], [], 0
    last_eod = 0  # the last EOD at or before the previous chunk's end (0: the stream's start)
    for a in range(1, n, chunk):
        b = min(n, a + chunk)
        lo = max(0, a - 1 - span)
        window = np.asarray(tokens[lo:b]).astype(np.int64)
        marks = np.where(window == eod_id, np.arange(lo, b), -1)
        marks = np.maximum(np.maximum.accumulate(marks), last_eod)  # the last EOD <= each
        last_eod = int(marks[-1])
        target = np.arange(a, b)
        begins = marks[target - 1 - lo]  # where each target's document starts
        w = window[target - lo]
        keep = ~np.isin(w, never)
        key = [np.zeros(b - a, dtype=np.int64) for _ in range(words)]
        for i, distance in enumerate(range(span, -1, -1)):  # the oldest symbol first
            before = target - distance
            sym = w if distance == 0 else np.where(
                before >= begins, window[np.maximum(before - lo, 0)], PAD_ID)
            key[i // per] = key[i // per] * v + sym
        k, c = _distinct(np.stack([word[keep] for word in key], axis=1))
        parts.append(k)
        counts.append(c)
        held += len(k)
        if held > 4 * chunk:  # merge what is held: memory stays with the distinct grams
            k, c = _merge(parts, counts)
            parts, counts, held = [k], [c], len(k)
    if not parts:
        return np.zeros((0, words), np.int64), np.zeros(0, np.int64)
    return _merge(parts, counts)


def _distinct(rows: np.ndarray, weights: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of (G, W) int64 ``rows`` and how often (or with what summed weight)
    each occurs."""
    width = rows.shape[1]
    flat = rows.reshape(-1) if width == 1 else \
        np.ascontiguousarray(rows).view(np.dtype((np.void, 8 * width)))[:, 0]  # a row as one value
    if weights is None:  # counts alone: a plain sort, faster than the inverse's argsort
        keys, counts = np.unique(flat, return_counts=True)
    else:
        keys, index = np.unique(flat, return_inverse=True)
        counts = np.bincount(index.reshape(-1), weights=weights, minlength=len(keys))
    return keys.view(np.int64).reshape(-1, width), counts.astype(np.int64)


def _merge(parts: list[np.ndarray], counts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of several (rows, counts) tables, their counts summed."""
    if len(parts) == 1:
        return parts[0], counts[0]
    return _distinct(np.concatenate(parts), np.concatenate(counts))


class NgramLM(nn.Module, NextSymbolModel):
    """The n-gram model as a ``NextSymbolModel``; its counts are buffers, so a checkpoint holds
    them like weights. Build one with ``NgramLM.count(tokens, vocab, order)``."""

    kind = "ngram-lm"
    config_class = NgramConfig

    def __init__(self, config: NgramConfig):
        super().__init__()
        self.config = c = config
        contexts = c.contexts or (0,) * (c.order - 1)
        ngrams = c.ngrams or (0,) * c.order
        for length, size in enumerate(contexts, start=1):
            self.register_buffer(f"ctx_keys_{length}", torch.zeros(size, dtype=torch.int64))
        for k, size in enumerate(ngrams, start=1):
            self.register_buffer(f"ngram_keys_{k}", torch.zeros(size, dtype=torch.int64))
            self.register_buffer(f"ngram_counts_{k}", torch.zeros(size, dtype=torch.int32))
        self.register_buffer("discounts", torch.zeros(c.order, 3, dtype=torch.float64))
        self._tables = None  # derived for lookups (see _derived), on the buffers' device

    @classmethod
    def count_parameters(cls, config: NgramConfig) -> int:
        return sum(config.contexts) + 2 * sum(config.ngrams) + 3 * config.order

    # ----- counting ----------------------------------------------------------------------------
    @classmethod
    def count(cls, tokens: np.ndarray, vocab, order: int, packed: bool = True) -> NgramLM:
        """The model of ``order`` counted from an id stream (a split's tokens: EOD where each
        document starts). The text is read in chunks (``packed_grams``); ``packed=False``
        counts every position at once, the same tables (tested)."""
        _order_check("--order", order)
        v = vocab.size
        never = np.asarray(vocab.never_predicted, dtype=np.int64)
        if packed:  # each distinct gram once, with its count: memory follows the distinct
            grams, weight = packed_grams(tokens, vocab.eod_id, order, v, never)  # grams
            per = per_word(v)

            def symbol(distance: int) -> np.ndarray:  # of every distinct gram
                i = order - 1 - distance  # its place, the oldest symbol first
                word = i // per
                digits = min(per, order - word * per)  # symbols in that word
                return (grams[:, word] // v ** (digits - 1 - i % per)) % v
        else:  # every target position at once (the reference the packed tables are tested by)
            stream, is_target = padded_stream(tokens, vocab.eod_id, order - 1)
            targets = np.flatnonzero(is_target & ~np.isin(stream, never))
            grams, weight = targets, None

            def symbol(distance: int) -> np.ndarray:  # of every target position
                return stream[targets - distance]
        if len(grams) == 0:
            raise CharLMError("no text to count n-grams on")
        # Context ids of every gram (or position), by length, right to left.
        ctx = np.zeros(len(grams), dtype=np.int64)
        ctx_keys = []
        for length in range(1, order):
            keys = ctx * v + symbol(length)
            table, ctx = np.unique(keys, return_inverse=True)
            ctx_keys.append(table)
            ctx = ctx.reshape(-1)
        # The highest order: raw counts; below, from each order's distinct grams.
        keys, index = np.unique(ctx * v + symbol(0), return_inverse=True)
        raw = np.bincount(index.reshape(-1), weights=weight, minlength=len(keys)).astype(np.int64)
        del ctx, index, grams, weight
        tables = [(keys, raw)]  # (keys, a_k) by order, the lowest first
        for k in range(order - 1, 0, -1):  # the k-grams, from the distinct (k+1)-grams
            upper = tables[0][0]
            parent_key = ctx_keys[k - 1][upper // v]  # the (k+1)-gram's context, length k
            lower = (parent_key // v) * v + upper % v  # without its oldest symbol
            lower_keys, index = np.unique(lower, return_inverse=True)
            index = index.reshape(-1)
            padded = (parent_key % v) == PAD_ID  # its left is padding: each occurrence counts
            adjusted = np.bincount(index, weights=np.where(padded, raw, 1),
                                   minlength=len(lower_keys))
            raw = np.bincount(index, weights=raw, minlength=len(lower_keys)).astype(np.int64)
            tables.insert(0, (lower_keys, adjusted.astype(np.int64)))
        config = NgramConfig(vocab_size=v, order=order, never_predict=vocab.never_predicted,
                             contexts=tuple(len(t) for t in ctx_keys),
                             ngrams=tuple(len(t[0]) for t in tables))
        model = cls(config)
        with torch.no_grad():
            for length, table in enumerate(ctx_keys, start=1):
                getattr(model, f"ctx_keys_{length}").copy_(torch.from_numpy(table))
            for k, (keys, counts) in enumerate(tables, start=1):
                if counts.max(initial=0) >= 2**31:
                    raise CharLMError("an n-gram count does not fit the table (over 2^31)")
                getattr(model, f"ngram_keys_{k}").copy_(torch.from_numpy(keys))
                getattr(model, f"ngram_counts_{k}").copy_(torch.from_numpy(counts))
                model.discounts[k - 1] = torch.from_numpy(_discounts(counts))
        return model

    # ----- what lookups need, derived from the buffers -----------------------------------------
    def _apply(self, fn, recurse=True):
        self._tables = None  # moved or converted: derived again
        return super()._apply(fn, recurse)

    def load_state_dict(self, *args, **kwargs):
        self._tables = None
        return super().load_state_dict(*args, **kwargs)

    def _derived(self) -> list[dict]:
        """Per order: each context's first row (CSR), gamma, and each row's symbol and
        discounted probability."""
        if self._tables is not None:
            return self._tables
        v = self.config.vocab_size
        tables = []
        for k in range(1, self.config.order + 1):
            keys = getattr(self, f"ngram_keys_{k}")
            counts = getattr(self, f"ngram_counts_{k}").to(torch.float64)
            n_ctx = 1 if k == 1 else len(getattr(self, f"ctx_keys_{k - 1}"))
            context = keys // v
            rows = torch.bincount(context, minlength=n_ctx)
            starts = torch.zeros(n_ctx + 1, dtype=torch.int64, device=keys.device)
            starts[1:] = torch.cumsum(rows, 0)
            d = self.discounts[k - 1]
            discount = torch.where(counts >= 3, d[2], torch.where(counts >= 2, d[1], d[0]))
            total = torch.zeros(n_ctx, dtype=torch.float64, device=keys.device)
            total.index_add_(0, context, counts)
            held = torch.zeros(n_ctx, dtype=torch.float64, device=keys.device)
            held.index_add_(0, context, discount)
            safe = total.clamp_min(1e-300)
            prob = (counts - discount) / safe[context]
            table = {"starts": starts, "symbol": keys % v, "prob": prob, "gamma": held / safe}
            if n_ctx * v <= DENSE_LIMIT:  # every context's row written out: a gather per lookup
                dense = torch.zeros(n_ctx * v, dtype=torch.float64, device=keys.device)
                dense[context * v + keys % v] = prob
                table["dense"] = dense.view(n_ctx, v)
            tables.append(table)
        self._tables = tables
        return tables

    # ----- NextSymbolModel ---------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def device(self) -> torch.device:
        return self.discounts.device

    def initial_state(self, batch_size: int) -> State:
        return (torch.full((self.config.order - 1, batch_size), PAD_ID, dtype=torch.int64,
                           device=self.device),)

    def context_ids(self, windows: torch.Tensor) -> list[torch.Tensor]:
        """(P, order-1) contexts, most recent last -> the id of each one's last L symbols for
        L = 0..order-1 (-1 where that context was never seen)."""
        v = self.config.vocab_size
        ids = [torch.zeros(len(windows), dtype=torch.int64, device=windows.device)]
        for length in range(1, self.config.order):
            table = getattr(self, f"ctx_keys_{length}")
            prev = ids[-1]
            key = prev * v + windows[:, -length]
            at = torch.searchsorted(table, key).clamp_max(max(len(table) - 1, 0))
            found = (prev >= 0) & (table[at] == key) if len(table) else prev < -1
            ids.append(torch.where(found, at, -1))
        return ids

    def probabilities(self, windows: torch.Tensor) -> torch.Tensor:
        """(P, order-1) contexts -> (P, V) float64 next-symbol probabilities."""
        c, v = self.config, self.config.vocab_size
        p = torch.ones(len(windows), v, dtype=torch.float64, device=windows.device)
        p[:, list(c.never_predict)] = 0
        p /= p.sum(-1, keepdim=True)
        for k, (table, ctx) in enumerate(zip(self._derived(), self.context_ids(windows)), 1):
            seen = torch.nonzero(ctx >= 0)[:, 0]
            if len(seen) == 0:
                break  # a longer context is unseen too
            cid = ctx[seen]
            if "dense" in table:
                p[seen] = p[seen] * table["gamma"][cid][:, None] + table["dense"][cid]
                continue
            first, last = table["starts"][cid], table["starts"][cid + 1]
            p[seen] *= table["gamma"][cid][:, None]
            lengths = last - first
            owner = torch.repeat_interleave(torch.arange(len(seen), device=p.device), lengths)
            offset = torch.arange(int(lengths.sum()), device=p.device) - \
                torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
            row = first[owner] + offset
            flat = p.view(-1)
            flat.index_add_(0, seen[owner] * v + table["symbol"][row], table["prob"][row])
        return p

    def next_logits(self, inputs: torch.Tensor, state: State | None = None,
                    reset: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        n = self.config.order - 1
        b, t = inputs.shape
        history = (state or self.initial_state(b))[0]
        ext = torch.cat([history.T.to(inputs.device), inputs.long()], dim=1)  # (B, n + T)
        if n:
            # Where each input's document starts in ext: what lies before it is padding.
            start = torch.zeros(b, t, dtype=torch.int64, device=inputs.device)
            if reset is not None:
                start = torch.where(reset, torch.arange(n, n + t, device=inputs.device), start)
                start = torch.cummax(start, dim=1).values
            windows = ext[:, 1:].unfold(1, n, 1)  # (B, T, n): inputs t-n+1..t
            position = torch.arange(n, device=inputs.device) + \
                torch.arange(1, t + 1, device=inputs.device)[:, None]  # (T, n) in ext
            windows = windows.masked_fill(position[None] < start[..., None], PAD_ID)
        else:
            windows = ext.new_zeros(b, t, 0)
        p = self.probabilities(windows.reshape(b * t, n))
        logits = p.log().float().view(b, t, -1)
        return logits, (windows[:, -1].T.contiguous(),)

    def forward(self, inputs, state=None, reset=None):
        return self.next_logits(inputs, state, reset)
