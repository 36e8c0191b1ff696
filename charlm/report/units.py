"""Which units mean something: properties of the text each symbol sits in, the units whose
activation follows them best, and how often each gate is saturated.

A property is measured at each symbol of the text (for a BPE token, at its last character);
a unit's activation at that symbol is the state after reading it. "Follows" is the Pearson
correlation over the text; a property the text never varies (no quotes at all) is left out.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .trace import GATES, STATES, Trace

OPENING, CLOSING = "([{", ")]}"
QUOTES = {'"': None, "\u201c": True, "\u201d": False}  # toggling, opening, closing
DOC_START = 10  # symbols counted as the start of a document
SATURATED = (0.1, 0.9)  # a gate below the first is left-saturated, above the second right-


def _position_in_line(chars: list[str], starts: np.ndarray) -> np.ndarray:
    out, n = np.zeros(len(chars)), 0
    for t, ch in enumerate(chars):
        n = 0 if starts[t] or ch.endswith("\n") else n + len(ch)
        out[t] = n
    return out


def _position_in_word(chars: list[str], starts: np.ndarray) -> np.ndarray:
    out, n = np.zeros(len(chars)), 0
    for t, ch in enumerate(chars):
        n = n + 1 if ch and ch[-1].isalpha() and not starts[t] else 0
        out[t] = n
    return out


def _inside_quotes(chars: list[str], starts: np.ndarray) -> np.ndarray:
    out, inside = np.zeros(len(chars)), False
    for t, ch in enumerate(chars):
        if starts[t]:
            inside = False
        for c in ch:
            if c in QUOTES:
                inside = (not inside) if QUOTES[c] is None else QUOTES[c]
        out[t] = inside
    return out


def _bracket_depth(chars: list[str], starts: np.ndarray) -> np.ndarray:
    out, depth = np.zeros(len(chars)), 0
    for t, ch in enumerate(chars):
        if starts[t]:
            depth = 0
        for c in ch:
            depth += (c in OPENING) - (c in CLOSING and depth > 0)
        out[t] = depth > 0
    return out


def _line_start(chars: list[str], starts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(chars))
    for t in range(1, len(chars)):
        out[t] = chars[t - 1].endswith("\n") or bool(starts[t])
    return out


def _uppercase(chars: list[str], starts: np.ndarray) -> np.ndarray:
    return np.array([bool(ch) and ch[-1].isupper() for ch in chars], dtype=float)


def _doc_start(chars: list[str], starts: np.ndarray) -> np.ndarray:
    out, n = np.zeros(len(chars)), DOC_START
    for t in range(len(chars)):
        n = 0 if starts[t] else n + 1
        out[t] = n < DOC_START
    return out


PROPERTIES: dict[str, Callable[[list[str], np.ndarray], np.ndarray]] = {
    "position in line": _position_in_line,
    "position in word": _position_in_word,
    "inside quotes": _inside_quotes,
    "inside brackets": _bracket_depth,
    "start of a line": _line_start,
    "uppercase letter": _uppercase,
    "start of a document": _doc_start,
}


def properties(chars: list[str], starts: np.ndarray) -> dict[str, np.ndarray]:
    """Each property at each symbol (``chars``: the symbols' text; ``starts``: where a
    document begins)."""
    return {name: f(chars, starts) for name, f in PROPERTIES.items()}


def correlations(series: np.ndarray, prop: np.ndarray) -> np.ndarray:
    """Pearson r of each unit (columns of ``series``, (T, H)) with ``prop`` (T,); 0 for a
    unit that never changes."""
    x = series - series.mean(axis=0)
    y = prop - prop.mean()
    denom = np.sqrt((x * x).sum(axis=0) * (y * y).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x * y[:, None]).sum(axis=0) / denom
    return np.nan_to_num(r)


def interpretable_units(trace: Trace, props: dict[str, np.ndarray], per_property: int = 3,
                        kinds: tuple[str, ...] = STATES) -> list[dict]:
    """For each property the text varies, the ``per_property`` units (of the series in
    ``kinds``, every layer) that follow it best, strongest first overall."""
    found = []
    for name, prop in props.items():
        if prop.std() == 0:
            continue
        best = []
        for layer, series in enumerate(trace.layers):
            for kind in kinds:
                if kind not in series:
                    continue
                r = correlations(series[kind].astype(np.float64), prop)
                for unit in np.argsort(-np.abs(r))[:per_property]:
                    best.append({"property": name, "layer": layer, "series": kind,
                                 "unit": int(unit), "r": float(r[unit])})
        best.sort(key=lambda u: -abs(u["r"]))
        found += best[:per_property]
    found.sort(key=lambda u: -abs(u["r"]))
    return found


def gate_statistics(trace: Trace) -> list[dict]:
    """Per layer and gate: the fraction of symbols at which each unit's gate is below 0.1
    (left-saturated) and above 0.9 (right-saturated)."""
    low, high = SATURATED
    stats = []
    for layer, series in enumerate(trace.layers):
        for gate in GATES.get(trace.cell, ()):
            g = series[gate]
            stats.append({"layer": layer, "gate": gate,
                          "left": (g < low).mean(axis=0).round(4).tolist(),
                          "right": (g > high).mean(axis=0).round(4).tolist()})
    return stats
