"""``charlm inspect``: one self-contained HTML report of what a language model learned.

    trace.py   the model over the text: loss and top guesses per symbol, every layer's
               state and gates written out step by step
    units.py   properties of the text, the units that follow them, gate saturation
    page.py    the data quantised and inlined into page.html (+ page.css, page.js)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..devices import DEVICE_HELP, DEVICES
from ..errors import CharLMError
from ..options import Options, option, positive_int
from .page import render_page, report_data, symbol_texts
from .trace import SERIES, STATES, anatomy, trace

MAX_LENGTH = 50_000  # characters: a page of 2x512 with --gates is then ~160 MB


def _unit_check(flag: str, value) -> None:
    parts = value.split(":") if isinstance(value, str) else []
    if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit() or not parts[1]:
        raise CharLMError(f"{flag} takes LAYER:SERIES:UNIT, e.g. 1:c:117, not {value!r}")


def _length_check(flag: str, value) -> None:
    positive_int(flag, value)
    if value > MAX_LENGTH:
        raise CharLMError(f"{flag} must be at most {MAX_LENGTH:,}, got {value:,}")


@dataclass(frozen=True)
class InspectConfig(Options):
    """What the report covers."""

    length: int = option(3000, "Characters of the text to run the model over (from its "
                               "start).", check=_length_check)
    unit: str | None = option(None, "Open the report on this unit, as LAYER:SERIES:UNIT "
                                    "(layers from 1; series h, c, i, f, o, g for an LSTM, h, "
                                    "r, z, n for a GRU, h otherwise), e.g. 1:c:117.",
                              check=_unit_check, default_help="the surprisal view")
    gates: bool = option(False, "Keep the gates' activations (and the candidate's) symbol by "
                                "symbol for the Units view, not only their statistics (the file "
                                "grows about threefold for an LSTM).")
    device: str = option("cpu", DEVICE_HELP, choices=DEVICES)


def parse_unit(spec: str, cell: str, layers: int, hidden: int) -> dict:
    """``LAYER:SERIES:UNIT`` checked against the model."""
    layer, name, unit = spec.split(":")
    layer, unit = int(layer), int(unit)
    if not 1 <= layer <= layers:
        raise CharLMError(f"--unit {spec}: layer {layer} is out of range (the model has "
                          f"{layers} layer{'s' if layers > 1 else ''}: 1 to {layers})")
    if name not in SERIES[cell]:
        raise CharLMError(f"--unit {spec}: a {cell} cell has no series {name!r} (it has "
                          f"{', '.join(SERIES[cell])})")
    if not 0 <= unit < hidden:
        raise CharLMError(f"--unit {spec}: unit {unit} is out of range (0 to {hidden - 1})")
    return {"layer": layer - 1, "name": name, "unit": unit}


def first_characters(vocab, tokens: np.ndarray, length: int) -> np.ndarray:
    """The shortest start of ``tokens`` that holds ``length`` characters (all of it if
    shorter)."""
    if len(tokens) == 0:
        return np.asarray(tokens)
    n = min(len(tokens), length + 1)
    while True:
        ids = np.asarray(tokens[:n])
        chars = np.cumsum([len(s) for s in symbol_texts(vocab, ids)])
        if chars[-1] >= length or n == len(tokens):
            return ids[: int(np.searchsorted(chars, length)) + 1] if chars[-1] >= length else ids
        n = min(len(tokens), 2 * n)


def build_report(lm, tokens: np.ndarray, config: InspectConfig, source: str) -> tuple[str, dict]:
    """The report's HTML and its data, for the language model ``lm`` (``charlm.load``) over
    ``tokens`` (a split's id stream: EOD where each document starts)."""
    model = lm.model
    parts = anatomy(model)
    if config.unit and not parts.layers:
        raise CharLMError(f"--unit {config.unit}: this model ({parts.summary}) has no units")
    start = (parse_unit(config.unit, parts.cell, parts.layers, parts.units) if config.unit
             else None)
    if start and start["name"] not in STATES and not config.gates:
        raise CharLMError(f"--unit {config.unit}: a gate's activations are in the report with "
                          f"--gates")
    ids = first_characters(lm.vocab, tokens, config.length)
    if len(ids) < 2 or len(ids) == (ids == lm.vocab.eod_id).sum():
        raise CharLMError(f"{source}: no text to inspect")
    traced = trace(model, ids, lm.vocab.eod_id, lm.vocab.unk_id)
    data = report_data(traced, lm.vocab, "", gates=config.gates)
    unknown = f" ({data['unknown']:,} unknown, not scored)" if data["unknown"] else ""
    data["summary"] = (f"{parts.summary}, {lm.vocab.kind} vocab of "
                       f"{lm.vocab.size} \u00b7 {source}: {data['chars']:,} characters"
                       f"{unknown} \u00b7 {data['bpc']:.4f} bits per character")
    data["start_unit"] = start
    return render_page(data, f"charlm inspect: {lm.path}"), data
