"""The report as one self-contained HTML file: page.html with page.css, page.js and the data
inlined (nothing is fetched when it opens).

    Trace ─► report_data: the symbols' text, bits per symbol, top-5 guesses, the
    (report.trace)   interpretable units and gate statistics (report.units), and every
                     layer's series quantised to one byte per unit and symbol (unit-major,
                     base64), each with the range its 256 levels span
                          │
                          ▼
                     render_page ─► report.html (@CSS@, @JS@, @DATA@ filled in)
"""

from __future__ import annotations

import base64
import html
import json
import re
from importlib import resources

import numpy as np

from .trace import GATES, SERIES, Trace
from .units import gate_statistics, interpretable_units, properties

PATTERN_SERIES = ("c", "h")  # the series a selection's units are looked for in


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
    if name in GATES.get(cell, ()):
        return 0.0, 1.0
    if cell == "irnn":  # ReLU: from 0 to the largest value seen
        return 0.0, float(max(values.max(), 1e-6))
    return -1.0, 1.0


def quantise(values: np.ndarray, lo: float, hi: float) -> bytes:
    """(T, H) float -> one byte per value, unit-major (unit u's T values together)."""
    q = np.rint((np.clip(values, lo, hi) - lo) / (hi - lo) * 255).astype(np.uint8)
    return np.ascontiguousarray(q.T).tobytes()


def report_data(trace: Trace, vocab, summary: str) -> dict:
    ids = trace.ids
    symbols = symbol_texts(vocab, ids)
    eod = (ids == vocab.eod_id)
    props = properties(symbols, eod)
    series = []
    for layer, kinds in enumerate(trace.layers):
        for name, values in kinds.items():
            lo, hi = _range(name, trace.cell, values)
            series.append({"layer": layer, "name": name, "label": SERIES[trace.cell][name],
                           "lo": lo, "hi": hi, "units": int(values.shape[1]),
                           "data": base64.b64encode(quantise(values, lo, hi)).decode()})
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
        "series": series, "pattern_series": list(PATTERN_SERIES),
        "interpretable": interpretable_units(trace, props),
        "gates": gate_statistics(trace),
    }


def render_page(data: dict, title: str) -> str:
    """The HTML of the report."""
    files = resources.files(__package__)
    page = (files / "page.html").read_text(encoding="utf-8")
    # JSON inside <script>: "</" would end the element, so it is written "<\/" (same JSON).
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    parts = {"TITLE": html.escape(title), "DATA": payload,
             "CSS": (files / "page.css").read_text(encoding="utf-8"),
             "JS": (files / "page.js").read_text(encoding="utf-8")}
    return re.sub(r"@(TITLE|CSS|JS|DATA)@", lambda m: parts[m.group(1)], page)
