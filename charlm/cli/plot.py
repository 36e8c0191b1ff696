"""``charlm plot``: training curves of one run or several, as one PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .app import app
from .common import Guard, err


@app.command()
def plot(
    runs: Annotated[Optional[list[Path]], typer.Argument(
        help="Run directories (or their checkpoint files). Default: the most recently "
             "trained run under ./checkpoints/.", show_default=False)] = None,
    out_path: Annotated[Optional[Path], typer.Option(
        "--out", help="PNG file to write; an explicit path that exists is refused. Default: "
                      "curves.png (curves-2.png... if it exists).")] = None,
    x: Annotated[str, typer.Option(
        "--x", help="What the x axis counts: steps, or time (seconds since each run began).")
    ] = "steps",
):
    """Draw training loss and the validation figure (bits per character; a classifier's
    accuracy) against steps or wall-clock seconds, several runs on one figure, each run's
    best validation point (its best.safetensors) marked."""
    from ..curves import read_curves, run_names, write_curves
    from ..files import output_path
    from ..training.run_dir import find_checkpoint

    with Guard():
        runs = runs or [find_checkpoint(None).parent]
        curves = [read_curves(r, name) for r, name in zip(runs, run_names(runs))]
        target = output_path(out_path, Path("curves.png"), "--out")
        write_curves(curves, target, x=x)
        table = Table(title=f"wrote {target}", title_justify="left")
        best_of = "val bits/char" if curves[0].kind == "lm" else "val accuracy"
        for col in ("run", "steps", "seconds", "last loss", f"best {best_of}", "at step"):
            table.add_column(col, justify="left" if col == "run" else "right")
        for c in curves:
            best = "-" if c.best is None else f"{c.best_value:.4f}"
            at = "-" if c.best is None else f"{c.val_steps[c.best]:,}"
            table.add_row(c.name, f"{c.steps[-1]:,}", f"{c.times[-1]:,.0f}",
                          f"{c.losses[-1]:.4f}", best, at)
        err.print(table)
