"""Settings chosen for a time budget and the text: what ``charlm train --max-time S`` uses when
no preset and no size option is given.

    a few seconds of the small model's real training steps on this corpus ──> symbols/s
        │
    passes = (S - seconds spent) x symbols/s / training symbols
        │
        ├─ at most SMALL_UP_TO_PASSES: the small model (1x640), unregularised: the budget
        │  reads the text only a few times, and more steps on more text beat capacity
        └─ more: a few seconds of the large model (2x512) ──> its passes
              ├─ fewer than LARGE_FROM_PASSES: still the small model (a short budget on a
              │  short text: the large one would take too few steps to learn)
              └─ else the large model, dropout and weight drop by its passes (none at a few
                 passes, more as it would overfit)
    and a validation cadence of about VALIDATIONS_PER_RUN per run.

The rule (``choose``) takes the measurement as a function, so its properties are tested apart
from any timing: at one budget a bigger corpus never gets a bigger model or more
regularisation, and for one model a longer budget never gets less. The tables come from the
sweeps in bench/RESULTS.md (sections 1 and 10); the measurement is made by ``charlm.lm_runs``.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from .models.backbone import UNMASKED_CELLS

AUTO = "auto"  # the name a run chosen this way records as its preset

# The two models, each a measured winner (bench/RESULTS.md sections 1 and 10): a 1x640 LSTM
# wherever the budget reads the text only a few times (more steps on more text beat capacity
# then), a regularised 2x512 LSTM where the 1x640 would read it often enough to overfit.
SMALL = {"cell": "lstm", "num_layers": 1, "hidden_dim": 640, "embed_dim": 64, "batch_size": 16,
         "bptt_len": 64, "lr": 5e-3}
LARGE = {"cell": "lstm", "num_layers": 2, "hidden_dim": 512, "embed_dim": 64, "batch_size": 16,
         "bptt_len": 64, "lr": 3e-3}
COMMON = {"weight_decay": 0.1, "precision": "auto"}  # gained in every preset (RESULTS section 1)
SMALL_UP_TO_PASSES = 8.0  # the small model while the budget lets it read the text this often
LARGE_FROM_PASSES = 4.0   # ...and the large model only where it would read it this often

# The large model's regularisation by the passes over the training text it will make:
# (passes, dropout, weight drop) points, linear between them, flat beyond the last.
REGULARISATION: tuple[tuple[float, float, float], ...] = (
    (3.0, 0.0, 0.0),
    (7.0, 0.2, 0.25),   # Tiny Shakespeare at 600 s: the best of 12 settings
    (19.0, 0.35, 0.4),  # a 0.3 MB novel at 600 s: 0.03 bits/char better than 0.2 / 0.25
)
VALIDATIONS_PER_RUN = 8  # about this many validations over the run (at least every MIN_EVAL)
MIN_EVAL_EVERY = 100


def regularisation(passes: float) -> dict:
    """Dropout and weight drop for the large model reading its training text ``passes``
    times."""
    points = REGULARISATION
    if passes <= points[0][0]:
        dropout, weight_drop = points[0][1:]
    elif passes >= points[-1][0]:
        dropout, weight_drop = points[-1][1:]
    else:
        (p0, d0, w0), (p1, d1, w1) = next((a, b) for a, b in zip(points, points[1:])
                                          if a[0] <= passes <= b[0])
        t = (passes - p0) / (p1 - p0)
        dropout, weight_drop = d0 + t * (d1 - d0), w0 + t * (w1 - w0)
    return {"dropout": round(dropout, 3), "weight_drop": round(weight_drop, 3)}


def choose(budget: float, train_symbols: int, speed: Callable[[dict], float],
           spent: Callable[[], float] = lambda: 0.0,
           given: dict | None = None) -> tuple[dict, dict]:
    """The settings (option values by field name) for a run of ``budget`` seconds on
    ``train_symbols`` of training text; ``speed(settings)`` gives the symbols per second a
    model trains at (measured; the large model's only when needed) and ``spent()`` the
    seconds of the budget gone so far; options ``given`` (by field name) win over the choice
    (a batch size given changes the steps). Returns the settings and a record of the choice
    for the run's config."""
    measured, given = {}, given or {}
    left = budget

    def passes(model: dict, name: str, timed_with: dict) -> float:
        nonlocal left
        measured[name] = speed({**model, **COMMON, **timed_with})
        left = max(budget - spent(), 0.0)
        return left * measured[name] / max(train_symbols, 1)

    # A cell given that takes no weight drop (irnn) is regularised by dropout alone.
    masked = given.get("cell", SMALL["cell"]) not in UNMASKED_CELLS
    model, reg, name = SMALL, {"dropout": 0.0, "weight_drop": 0.0}, "small"
    if (p := passes(SMALL, "small", {})) > SMALL_UP_TO_PASSES:
        # Timed with weight drop on: it slows a step (its rate does not), up to ~2x here.
        p = passes(LARGE, "large", {"weight_drop": REGULARISATION[-1][2] if masked else 0.0})
        if p >= LARGE_FROM_PASSES:
            model, reg, name = LARGE, regularisation(p), "large"
            if not masked:
                reg["weight_drop"] = 0.0
        else:  # at the small model's passes in the time now left
            p = left * measured["small"] / max(train_symbols, 1)
    shape = {**model, **given}
    steps = p * train_symbols / (shape["batch_size"] * shape["bptt_len"])
    every = max(MIN_EVAL_EVERY, int(round(steps / VALIDATIONS_PER_RUN / 50.0)) * 50)
    chosen = {**model, **COMMON, **reg, "eval_every": every}
    record = {"budget": budget, "spent": round(budget - left, 2), "train_symbols": train_symbols,
              "symbols_per_s": {k: round(v, 1) for k, v in measured.items()},
              "model": name, "passes": round(p, 2), "steps": int(steps), "settings": chosen}
    return chosen, record


def describe_rule() -> str:
    """The rule in one line, for --help."""
    rising = ", ".join(f"{d:g} and {w:g} at {p:g}" for p, d, w in REGULARISATION[1:])
    return (f"a 1x{SMALL['hidden_dim']} LSTM (or the --cell given) while the budget reads the "
            f"text at most {SMALL_UP_TO_PASSES:g} times, else (if it reads it at least "
            f"{LARGE_FROM_PASSES:g} times) a 2x{LARGE['hidden_dim']} one with dropout and "
            f"weight drop rising from 0 at {REGULARISATION[0][0]:g} of its passes to {rising}")


# ----- the measurement ------------------------------------------------------------------------
MEASURE_SECONDS = 1.0  # timed steps of a model, after WARMUP_STEPS untimed ones...
MEASURE_SHARE = 0.01   # ...and at most this share of the budget
WARMUP_STEPS = 2
MIN_STEPS = 5


def measure(train_step, budget: float) -> float:
    """Symbols per second of ``train_step()`` (which returns a record with "targets"), timed
    over MEASURE_SECONDS (at most MEASURE_SHARE of the ``budget``) and at least MIN_STEPS
    steps, after WARMUP_STEPS untimed ones."""
    seconds = min(MEASURE_SECONDS, MEASURE_SHARE * budget)
    for _ in range(WARMUP_STEPS):
        train_step()
    t0, steps, targets = time.perf_counter(), 0, 0
    while steps < MIN_STEPS or time.perf_counter() - t0 < seconds:
        targets += train_step()["targets"]
        steps += 1
    return targets / (time.perf_counter() - t0)
