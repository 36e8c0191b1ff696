"""Training curves: runs' metrics.jsonl drawn as one figure.

    metrics.jsonl ─► read_curves ─► Curves (training loss per step; the validation figure
    (one run)                        per evaluation; the best point: best.safetensors')
                                        │  several runs
                                        ▼
                     draw_curves ─► PNG: top, training loss (each run's steps, thin, and a
                                    moving average); bottom, the validation figure, the best
                                    point of each run marked; x: steps or seconds

A language model's validation figure is bits per character; a classifier's, accuracy. Runs of
the two kinds are not drawn together.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CharLMError
from .files import atomic_write
from .training.run_dir import METRICS

AXES = ("steps", "time")
VALIDATION = {  # the record key of the figure drawn, its label, whether higher is better
    "lm": ("val_bpc", "validation bits per character", False),
    "classifier": ("val_accuracy", "validation accuracy", True),
}


@dataclass
class Curves:
    """One run's curves, read from its metrics.jsonl."""

    name: str
    kind: str                                   # "lm" or "classifier"
    steps: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_times: list[float] = field(default_factory=list)
    val: list[float] = field(default_factory=list)
    best: int | None = None                     # index into val of best.safetensors' point

    @property
    def best_value(self) -> float | None:
        return None if self.best is None else self.val[self.best]


def run_directory(path: Path) -> Path:
    """A run directory given as itself or as one of its checkpoint files."""
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        return path.parent
    return path


def read_curves(run_dir: Path, name: str | None = None) -> Curves:
    """The curves of the run in ``run_dir`` (a line cut short by a crash, or being written,
    is passed over; a step logged twice keeps its last record)."""
    run_dir = run_directory(run_dir)
    path = run_dir / METRICS
    if not run_dir.exists():
        raise CharLMError(f"{run_dir}: no such run directory")
    if not path.is_file():
        raise CharLMError(f"{run_dir}: no {METRICS} (not a charlm run directory?)")
    train, val = {}, {}
    kind = None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            continue
        if "val_bpc" in record or "val_accuracy" in record:
            kind = "lm" if "val_bpc" in record else "classifier"
            val[record["step"]] = record
        elif isinstance(record.get("loss"), (int, float)) and math.isfinite(record["loss"]) \
                and not record.get("skipped"):  # a skipped, non-finite step has no point
            train[record["step"]] = record
    if not train:
        raise CharLMError(f"{run_dir}: no training steps logged yet")
    curves = Curves(name=name or run_dir.name, kind=kind or "lm")
    for step in sorted(train):
        curves.steps.append(step)
        curves.times.append(float(train[step].get("time", math.nan)))
        curves.losses.append(float(train[step]["loss"]))
    key, _, higher = VALIDATION[curves.kind]
    for step in sorted(val):
        record = val[step]
        value = record.get(key)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        curves.val_steps.append(step)
        curves.val_times.append(float(record.get("time", math.nan)))
        curves.val.append(float(value))
        if record.get("best"):
            curves.best = len(curves.val) - 1  # the last point marked best is the checkpoint's
    if curves.best is None and curves.val:
        pick = max if higher else min
        curves.best = curves.val.index(pick(curves.val))
    return curves


def run_names(paths: list[Path]) -> list[str]:
    """Legend names: each run's directory name, with its parent where two names clash."""
    dirs = [run_directory(p).resolve() for p in paths]
    names = [d.name for d in dirs]
    return [f"{d.parent.name}/{d.name}" if names.count(d.name) > 1 else d.name for d in dirs]


def moving_average(values: list[float], window: int) -> list[float]:
    """The mean of each value and the ``window - 1`` before it (fewer at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def figure(runs: list[Curves], x: str = "steps", title: str | None = None):
    """The matplotlib Figure of ``runs``; ``x``: "steps" or "time" (seconds since each run
    began)."""
    if x not in AXES:
        raise CharLMError(f"--x must be one of {', '.join(AXES)}, not {x!r}")
    kinds = {r.kind for r in runs}
    if len(kinds) > 1:
        raise CharLMError("language-model and classifier runs have different validation "
                          "figures; plot them separately")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    kind = kinds.pop()
    _, val_label, _ = VALIDATION[kind]
    fig = Figure(figsize=(8, 6.4), dpi=110)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(1, 1))
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for run, colour in zip(runs, colours):
        xs = run.steps if x == "steps" else run.times
        smooth = moving_average(run.losses, max(1, len(run.losses) // 50))
        top.plot(xs, run.losses, color=colour, alpha=0.25, linewidth=0.6)
        top.plot(xs, smooth, color=colour, linewidth=1.6, label=run.name)
        if run.val:
            vx = run.val_steps if x == "steps" else run.val_times
            bottom.plot(vx, run.val, color=colour, marker="o", markersize=3, linewidth=1.4)
            if run.best is not None:
                bx, by = vx[run.best], run.val[run.best]
                bottom.plot([bx], [by], marker="*", markersize=14, color=colour,
                            markeredgecolor="black", linestyle="none")
                bottom.annotate(f"{by:.4f}", (bx, by), textcoords="offset points",
                                xytext=(6, 8 if kind == "lm" else -14), fontsize=8,
                                color=colour)
    top.set_ylabel("training loss (nats per symbol)" if kind == "lm" else "training loss")
    top.legend(fontsize=8, loc="upper right")
    top.margins(x=0.04)
    top.grid(alpha=0.3)
    bottom.set_ylabel(val_label)
    bottom.set_xlabel("step" if x == "steps" else "seconds since the run began")
    bottom.grid(alpha=0.3)
    if not any(r.val for r in runs):
        bottom.text(0.5, 0.5, "no validation figures logged", ha="center", va="center",
                    transform=bottom.transAxes, color="grey")
    bottom.plot([], [], marker="*", markersize=10, color="grey", markeredgecolor="black",
                linestyle="none", label="best (best.safetensors)")
    bottom.legend(fontsize=8, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def draw_curves(runs: list[Curves], x: str = "steps", title: str | None = None) -> bytes:
    """The figure of ``runs`` (see ``figure``) as PNG bytes."""
    buffer = io.BytesIO()
    figure(runs, x, title).savefig(buffer, format="png")
    return buffer.getvalue()


def write_curves(runs: list[Curves], path: Path, x: str = "steps",
                 title: str | None = None) -> None:
    """Draw ``runs`` into the PNG at ``path`` (written whole or not at all)."""
    atomic_write(Path(path), draw_curves(runs, x, title))
