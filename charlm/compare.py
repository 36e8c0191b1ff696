"""``charlm compare``: several language models on one text, and where they differ.

    runs (any kind, any vocab) ─► each scores the same text with its own vocab
        │   symbol_losses: nats per symbol (evaluate's pass) ─► its figures ──► the table
        ▼
    slots: one per character of the text, and one per end of a document (the EOD a model
        predicts there); a BPE token's nats are spread evenly over its characters, a token
        that ends inside a character adds its nats to the next one's
        │   (R runs x N slots; the runs must cut the text into the same documents; the
        │   characters shown are the text's own, even where a run's vocab lacks them; with
        │   no text given, the first run's validation split, whose characters unknown to that
        │   run are U+FFFD for all: give the text file for those)
        ▼
    categories of the slots (after a newline, inside quotes, inside brackets by distance to
        the opening one, first character of a word, rest of a word...): bits per character of
        each run over the slots every run scores ─────────────────────────────► the breakdown
        │
        ▼
    the page: the first --length characters shaded by the difference between two runs'
        bits (report/page.py's template filling, compare.html + compare.js)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import CharLMError
from .evaluate import EvalConfig, figures_of, symbol_losses
from .options import Options, option
from .report import MAX_LENGTH
from .report.page import render_page, symbol_texts
from .report.units import CLOSING, OPENING, QUOTES
from .text.corpus import encode_texts
from .text.documents import split_documents

LN2 = math.log(2.0)
BRACKET_DISTANCES = ((1, 5), (6, 20), (21, 80), (81, None))  # characters after the opening one


def _length_check(flag: str, value) -> None:
    if not isinstance(value, int) or value < 0 or value > MAX_LENGTH:
        raise CharLMError(f"{flag} must be between 0 and {MAX_LENGTH:,}, got {value!r}")


@dataclass(frozen=True)
class CompareConfig(Options):
    """What the comparison covers."""

    length: int = option(20_000, "Characters of the text shown in the HTML view (from its "
                                 "start; 0: no page). The table and the breakdown cover all of "
                                 "it.", check=_length_check)


@dataclass
class Slots:
    """The text as the comparison sees it: ``chars[i]`` the character slot i predicts ("" at
    the end of a document), ``nats`` (R, N) each run's loss there (NaN: not scored)."""

    chars: list[str]
    end: np.ndarray   # (N,) bool: the end of a document
    nats: np.ndarray  # (R, N) float64

    @property
    def common(self) -> np.ndarray:
        """(N,) the slots every run scores."""
        return ~np.isnan(self.nats).any(axis=0)


def char_slots(vocab, tokens: np.ndarray, losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One model's per-symbol ``losses`` (as ``symbol_losses`` gives) as per-slot losses:
    (end (N,) bool, nats (N,))."""
    texts = symbol_texts(vocab, np.asarray(tokens))
    eod = vocab.eod_id
    end, nats = [], []
    pending = 0.0  # nats of a token that ended inside a character
    for i in range(1, len(tokens)):
        loss = losses[i]
        if tokens[i] == eod:
            end.append(True)
            nats.append(loss + pending)
            pending = 0.0
            continue
        length = len(texts[i])
        if not length:
            pending += 0.0 if np.isnan(loss) else loss
            continue
        end += [False] * length
        nats += [(loss + pending) / length] * length
        pending = 0.0
    return np.asarray(end, dtype=bool), np.asarray(nats, dtype=np.float64)


def categories(chars: list[str], end: np.ndarray) -> dict[str, np.ndarray]:
    """Which slots belong to each category (they overlap), in the order the breakdown shows
    them. Each is about the character predicted and what precedes it in its document."""
    n = len(chars)
    after_newline = np.zeros(n, bool)
    word_start = np.zeros(n, bool)
    word_rest = np.zeros(n, bool)
    in_quotes = np.zeros(n, bool)
    closing_quote = np.zeros(n, bool)
    bracket_distance = np.zeros(n, np.int64)  # 0: not inside brackets
    closing_bracket = np.zeros(n, bool)
    prev, prev2 = "", ""
    quote_open, stack = False, []
    for i, ch in enumerate(chars):
        if end[i]:  # a document ends: nothing carries into the next one
            prev, prev2, quote_open, stack = "", "", False, []
            continue
        after_newline[i] = prev == "\n"
        if ch.isalpha():
            inside = prev.isalpha() or (prev == "'" and prev2.isalpha())
            word_rest[i], word_start[i] = inside, not inside
        closes_quote = quote_open and QUOTES.get(ch, True) is not True  # '"' or a closing one
        if quote_open:
            in_quotes[i] = True
            closing_quote[i] = closes_quote
        if stack:
            bracket_distance[i] = i - stack[-1]
        if ch in CLOSING:
            kind = OPENING[CLOSING.index(ch)]
            if any(chars[j] == kind for j in stack):  # else a stray closer: nothing closes
                closing_bracket[i] = True
                while chars[stack[-1]] != kind:  # brackets left open inside this one
                    stack.pop()
                stack.pop()
        elif ch in OPENING:
            stack.append(i)
        if closes_quote:
            quote_open = False
        elif QUOTES.get(ch, False) is not False:  # '"' or an opening one
            quote_open = True
        prev2, prev = prev, ch
    out = {"all characters": ~end, "end of a document": end.copy(),
           "after a newline": after_newline, "word start": word_start,
           "rest of a word": word_rest, "inside quotes": in_quotes,
           "closing quote": closing_quote}
    for lo, hi in BRACKET_DISTANCES:
        within = bracket_distance >= lo
        if hi is not None:
            within &= bracket_distance <= hi
        out[f"{lo}-{hi} after an opening bracket" if hi else
            f"{lo}+ after an opening bracket"] = within
    out["closing bracket"] = closing_bracket
    return out


def breakdown(slots: Slots) -> list[dict]:
    """Per category: how many slots every run scores, and each run's bits per character
    there."""
    common = slots.common
    rows = []
    for name, member in categories(slots.chars, slots.end).items():
        keep = member & common
        count = int(keep.sum())
        bits = [float(slots.nats[r, keep].sum() / count / LN2) if count else None
                for r in range(len(slots.nats))]
        rows.append({"category": name, "count": count, "bits": bits})
    return rows


def score(lm, split, config: EvalConfig | None = None) -> tuple[dict, tuple]:
    """One run on a split of the text: its evaluation figures, and its slots."""
    if split.chars - split.unknown < 1:
        raise CharLMError(f"{lm.path}: no text to score" + (
            ": every character is unknown to the model" if split.unknown else ""))
    losses = symbol_losses(lm.model, lm.vocab, split, config)
    return figures_of(losses, split), char_slots(lm.vocab, split.tokens, losses)


def align(slot_sets: list[tuple], names: list[str], documents: list[str]) -> Slots:
    """The runs' slots as one Slots, once they are seen to cover ``documents`` (the text cut
    as the first run cuts it)."""
    chars = [c for d in documents for c in [*d, ""]]
    end = np.asarray([c == "" for c in chars], dtype=bool)
    for (ends, _), name in zip(slot_sets, names):
        if not np.array_equal(ends, end):
            raise CharLMError(f"{name} cuts the text into other documents than {names[0]} "
                              f"(another document separator): its losses cannot be set side by "
                              f"side")
    return Slots(chars=chars, end=end, nats=np.stack([s[1] for s in slot_sets]))


def compare(lms: list, names: list[str], texts: list[str] | None,
            eval_config: EvalConfig | None = None, progress=None) -> dict:
    """The comparison of ``lms`` (``charlm.load``) on ``texts`` (each cut into documents by
    each run's separator), or on the first run's validation split: the table's figures, the
    breakdown, and the slots (for the page: ``render``)."""
    if len(lms) < 2:
        raise CharLMError("charlm compare needs at least two runs")
    first = None
    if texts is None:  # the runs that share its vocab read the split itself, the symbols
        first = lms[0].validation_split()  # `charlm eval` scores; the others its documents
        documents = _documents(lms[0].vocab, first)
    else:
        documents = [d for t in texts for d in split_documents(t, lms[0].doc_separator)]
    figures, slot_sets = [], []
    for lm, name in zip(lms, names):
        if first is None:
            split = lm.encode(texts)  # cut by its own separator (align checks the cuts agree)
        elif lm.vocab.to_json() == lms[0].vocab.to_json():
            split = first
        else:  # the split's documents as they are (cut again, a piece could lose its edges)
            split = encode_texts(lm.vocab, documents)
        if progress:
            progress(name)
        f, s = score(lm, split, eval_config)
        figures.append(f)
        slot_sets.append(s)
    slots = align(slot_sets, names, documents)
    result = {"runs": [{"name": n, "kind": lm.kind, "figures": f}
                       for n, lm, f in zip(names, lms, figures)],
              "breakdown": breakdown(slots), "slots": slots}
    return result


def _documents(vocab, split) -> list[str]:
    """A split's documents as text (each one document: they hold no separator)."""
    tokens = np.asarray(split.tokens)
    ends = [*split.doc_starts[1:], len(tokens) - int(tokens[-1] == vocab.eod_id)]
    return [vocab.decode(tokens[a + 1:b]) for a, b in zip(split.doc_starts, ends)]


def page_data(result: dict, length: int, source: str) -> dict:
    """What the HTML view shows: the first ``length`` characters (whole documents' ends
    included), each run's bits there, the table and the breakdown."""
    slots: Slots = result["slots"]
    n, chars = 0, 0
    while n < len(slots.chars) and chars < length:
        chars += not slots.end[n]
        n += 1
    bits = [[None if math.isnan(v) else round(v / LN2, 3) for v in row[:n].tolist()]
            for row in slots.nats]
    return {"source": source,
            "runs": [{"name": r["name"], "kind": r["kind"], "bpc": r["figures"]["bpc"],
                      "chars": r["figures"]["chars"], "unknown": r["figures"]["unknown"]}
                     for r in result["runs"]],
            "chars": slots.chars[:n], "end": slots.end[:n].tolist(), "bits": bits,
            "breakdown": result["breakdown"], "shown": chars,
            "total_chars": int((~slots.end).sum())}


def render(result: dict, length: int, source: str, title: str) -> str:
    return render_page(page_data(result, length, source), title, "compare")
