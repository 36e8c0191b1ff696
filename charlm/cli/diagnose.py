"""``charlm diagnose``: look inside models (how gradients vanish or explode)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..diagnose import DiagnoseConfig
from ..options import split_by_owner
from ..text.sources import ReadConfig
from .app import group
from .common import Guard, JsonOpt, err, out
from .params import with_options

diagnose_app = group("diagnose", "Look inside a model: how gradients vanish or explode through "
                                 "the recurrence.")


@diagnose_app.command("gradients")
@with_options(DiagnoseConfig, ReadConfig)
def diagnose_gradients(
    text: Annotated[Optional[list[Path]], typer.Argument(
        help="Text files to measure on. Default: the bundled Tiny Shakespeare.")] = None,
    checkpoint: Annotated[Optional[list[Path]], typer.Option(
        help="A run directory or .safetensors file to measure (repeatable).")] = None,
    as_json: JsonOpt = False,
    options: dict = None,
):
    """Measure how much the loss at step t depends on the recurrent state k steps back, the
    norm of dL_t/ds_(t-k), averaged over many positions of real text; print a table, write a
    log-scale plot (one curve per model), and report the largest weight-gradient norms seen
    without clipping (the exploding side)."""
    from ..api import bundled_corpus
    from ..diagnose import measure, plot as write_plot, table_ks

    with Guard():
        given = split_by_owner(options, (DiagnoseConfig, ReadConfig))
        config = DiagnoseConfig.from_given(**given[DiagnoseConfig])
        reading = ReadConfig.from_given(**given[ReadConfig])
        target = config.plot_path()
        paths = text or [bundled_corpus()]
        profiles = measure(texts=paths, checkpoints=checkpoint or [], config=config,
                           encoding=reading.encoding)
        source = ", ".join(str(p) for p in paths)
        write_plot(profiles=profiles, path=target,
                   title=f"gradient through the state, {source if text else 'Tiny Shakespeare'}")
        if as_json:
            print(json.dumps({"text": source, "plot": str(target), "models": profiles}))
            return
        table = Table(title=f"mean ||dL_t / ds_(t-k)|| over {config.windows} positions")
        table.add_column("k", justify="right")
        for name in profiles:
            table.add_column(name, justify="right")
        for k in table_ks(max_k=config.max_k):
            table.add_row(str(k), *[f"{p['mean'][k - 1]:.3e}" for p in profiles.values()])
        out.print(table)
        ex = Table(title="weight-gradient norm of one window's loss, no clipping")
        ex.add_column("model")
        ex.add_column("median", justify="right")
        ex.add_column("largest", justify="right")
        ex.add_column("largest ||dL_t/ds_(t-k)||, any k", justify="right")
        for name, p in profiles.items():
            ex.add_row(name, f"{p['weight_grad_median']:.3g}", f"{p['weight_grad_max']:.3g}",
                       f"{max(p['max']):.3g}")
        out.print(ex)
        err.print(f"plot: {target}", markup=False)
