"""``charlm inspect``: the HTML report of what a language model learned."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..options import split_by_owner
from ..report import InspectConfig
from ..text.sources import ReadConfig
from .app import app
from .common import CheckpointOpt, Guard, err
from .params import with_options


@app.command()
@with_options(InspectConfig, ReadConfig)
def inspect(
    text: Annotated[Optional[list[Path]], typer.Argument(
        help="Text files to run the model over, each a document. Default: the run's "
             "validation split.")] = None,
    checkpoint: CheckpointOpt = None,
    out_path: Annotated[Optional[Path], typer.Option(
        "--out", help="HTML file to write; an explicit path that exists is refused. Default: "
                      "report.html (report-2.html... if it exists).")] = None,
    options: dict = None,
):
    """Write one self-contained HTML report (opens from disk, no network) of what the model
    learned: each character shaded by its surprisal with the model's top-5 guesses, every
    unit's activation over the text, the units that follow line position, quotes, brackets
    and more, the units behind a selected stretch of text, and gate saturation."""
    from ..api import load
    from ..files import atomic_write, output_path
    from ..report import build_report
    from ..text.sources import read_text

    with Guard():
        given = split_by_owner(options, (InspectConfig, ReadConfig))
        config = InspectConfig.from_given(**given[InspectConfig])
        reading = ReadConfig.from_given(**given[ReadConfig])
        target = output_path(out_path, Path("report.html"), "--out")
        lm = load(path=checkpoint, device=config.device)
        if text:
            split = lm.encode(texts=[read_text(p, reading.encoding) for p in text])
            source = ", ".join(p.name for p in text)
        else:
            split = lm.validation_split()
            source = "validation split"
        page, data = build_report(lm, split.tokens, config, source)
        atomic_write(target, page.encode("utf-8"))
        size = target.stat().st_size
        err.print(f"wrote {target} ({size / 1e6:.1f} MB): {data['chars']:,} characters, "
                  f"{data['bpc']:.4f} bits per character", markup=False)
        if data["interpretable"]:
            table = Table(title="units that follow the text (open the report for more)",
                          title_justify="left")
            for col in ("property", "layer", "series", "unit", "r"):
                table.add_column(col, justify="left" if col in ("property", "series") else "right")
            for u in data["interpretable"][:8]:
                table.add_row(u["property"], str(u["layer"] + 1), u["series"], str(u["unit"]),
                              f"{u['r']:+.2f}")
            err.print(table)
