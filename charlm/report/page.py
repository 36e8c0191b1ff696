"""The report as one self-contained HTML file: page.html with page.css, page.js and the data
inlined (nothing is fetched when it opens).

    Trace ─► report_data: the symbols' text, bits per symbol, top-5 guesses, the
    (report.trace)   interpretable units and gate statistics (report.units), and every
                     layer's series (the gates' with --gates) quantised to 16 levels over
                     each unit's own range, unit-major, two to a byte, deflated, base64;
                     each series with the range its colours span (lo, hi)
                          │
                          ▼
                     render_page ─► report.html (@CSS@, @JS@, @DATA@ filled in)
"""

from __future__ import annotations

import base64
import html
import json
import re
import zlib
from importlib import resources

import numpy as np

from .trace import GATES, SERIES, STATES, Trace
from .units import gate_statistics, interpretable_units, properties

LEVELS = 16  # of each activation: enough to shade text by, and half a byte each


def symbol_texts(vocab, ids: np.ndarray) -> list[str]:
    """Each symbol's text as the text reads (a BPE token's bytes that end inside a character
    go with the token that completes it); "" for EOD."""
    decoder = vocab.stream_decoder()
    out = []
    for i in ids.tolist():
        out.append("" if i == vocab.eod_id else decoder.push(i))
    return out


def vocab_labels(vocab) -> list[str | None]:
    """What each id reads as in the top-5 box; None for EOD (the end of a document)."""
    specials = {vocab.pad_id: "<pad>", vocab.unk_id: "<unk>"}
    return [None if i == vocab.eod_id else specials.get(i) or vocab.decode([i])
            for i in range(vocab.size)]


def _range(name: str, cell: str, values: np.ndarray) -> tuple[float, float]:
    if name in GATES.get(cell, ()) or cell == "hmm":  # gates, probabilities
        return 0.0, 1.0
    if cell == "irnn":  # ReLU: from 0 to the largest value seen
        return 0.0, float(max(values.max(), 1e-6))
    return -1.0, 1.0


def quantise(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T, H) float -> LEVELS levels (0..LEVELS-1) over each unit's own range, unit-major
    (unit u's T values together), flat; and each unit's low and high ends (H,)."""
    lo = values.min(axis=0).astype(np.float64)
    hi = np.maximum(values.max(axis=0), lo + 1e-6).astype(np.float64)
    q = np.rint((values - lo) / (hi - lo) * (LEVELS - 1)).astype(np.uint8)
    return np.ascontiguousarray(q.T).reshape(-1), lo, hi


def pack(levels: np.ndarray) -> bytes:
    """Two levels a byte (the first in the high half), then deflate (zlib's format, which
    the browser's DecompressionStream("deflate") reads)."""
    if len(levels) % 2:
        levels = np.append(levels, 0).astype(np.uint8)
    return zlib.compress(((levels[0::2] << 4) | levels[1::2]).astype(np.uint8).tobytes(), 6)


def unpack(data: bytes, count: int) -> np.ndarray:
    """``pack``'s inverse (the page does the same in JavaScript)."""
    b = np.frombuffer(zlib.decompress(data), dtype=np.uint8)
    return np.stack([b >> 4, b & 15], axis=1).reshape(-1)[:count]


def report_data(trace: Trace, vocab, summary: str, gates: bool = False) -> dict:
    """Everything the page shows; the gates' activations per symbol only with ``gates`` (their
    statistics always)."""
    ids = trace.ids
    symbols = symbol_texts(vocab, ids)
    eod = (ids == vocab.eod_id)
    props = properties(symbols, eod)
    series = []
    for layer, kinds in enumerate(trace.layers):
        for name, values in kinds.items():
            if name not in STATES and not gates:  # they triple the file
                continue
            lo, hi = _range(name, trace.cell, values)
            levels, unit_lo, unit_hi = quantise(values)
            series.append({"layer": layer, "name": name, "label": SERIES[trace.cell][name],
                           "lo": lo, "hi": hi, "units": int(values.shape[1]),
                           "unit_lo": np.round(unit_lo, 5).tolist(),
                           "unit_hi": np.round(unit_hi, 5).tolist(),
                           "data": base64.b64encode(pack(levels)).decode()})
    scored = ~np.isnan(trace.bits)
    chars = sum(len(s) for s, ok in zip(symbols[1:], scored) if ok)
    return {
        "summary": summary, "cell": trace.cell, "layers": len(trace.layers),
        "symbols": symbols, "eod": eod.tolist(), "ids": ids.tolist(),
        "bits": [round(float(b), 4) if ok else None for b, ok in zip(trace.bits, scored)],
        "bpc": float(np.nansum(trace.bits) / max(chars, 1)), "chars": chars,
        "unknown": int((~scored).sum()),
        "top_k": int(trace.top_ids.shape[1]),
        "top_ids": trace.top_ids.reshape(-1).tolist(),
        "top_probs": np.round(trace.top_probs.reshape(-1), 4).tolist(),
        "vocab": vocab_labels(vocab),
        "series": series, "levels": LEVELS, "gate_steps": gates,
        "pattern_series": list(STATES),
        "interpretable": interpretable_units(trace, props),
        "gates": gate_statistics(trace),
    }


def render_page(data: dict, title: str, page_name: str = "page") -> str:
    """The HTML of the report (``page_name`` "page"), or of another page built the same way
    (``compare``: ``charlm compare``'s view): NAME.html with page.css, NAME.js and the data."""
    files = resources.files(__package__)
    page = (files / f"{page_name}.html").read_text(encoding="utf-8")
    # JSON inside <script>: "</script" would end the element and "<!--" change how it is
    # read, so every "<" is written as the escape \u003c (the same JSON).
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    parts = {"TITLE": html.escape(title), "DATA": payload,
             "CSS": (files / "page.css").read_text(encoding="utf-8"),
             "JS": (files / f"{page_name}.js").read_text(encoding="utf-8")}
    return re.sub(r"@(TITLE|CSS|JS|DATA)@", lambda m: parts[m.group(1)], page)
