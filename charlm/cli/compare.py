"""``charlm compare``: several runs on one text, the table, where they differ, the HTML view."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..compare import CompareConfig
from ..errors import CharLMError
from ..evaluate import EvalConfig
from ..options import split_by_owner
from ..text.sources import ReadConfig
from .app import app
from .common import Guard, JsonOpt, err, out
from .params import with_options

CHECKPOINT_SUFFIX = ".safetensors"


def runs_and_texts(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """Run directories and checkpoint files are runs; other files are texts."""
    runs, texts = [], []
    for p in paths:
        if p.is_dir() or p.suffix == CHECKPOINT_SUFFIX:
            runs.append(p)
        elif p.is_file():
            texts.append(p)
        else:
            raise CharLMError(f"{p}: no such run or text file")
    if len(runs) < 2:
        raise CharLMError(f"charlm compare needs at least two runs (run directories or "
                          f"{CHECKPOINT_SUFFIX} files), got {len(runs)}")
    return runs, texts


def run_names(runs: list[Path]) -> list[str]:
    """Each run's directory name (its file's for a checkpoint file), the path where two
    would read the same."""
    names = [p.name if p.is_dir() else f"{p.parent.name}/{p.name}" for p in runs]
    return [str(p) if names.count(n) > 1 else n for p, n in zip(runs, names)]


@app.command()
@with_options(CompareConfig, EvalConfig, ReadConfig)
def compare(
    paths: Annotated[list[Path], typer.Argument(
        help="Two or more runs (run directories or checkpoint files), then optionally text "
             "files to score them on, each cut into documents as the runs' corpora were. "
             "Default text: the first run's validation split.", show_default=False,
        metavar="RUN_OR_TEXT")],
    out_path: Annotated[Path | None, typer.Option(
        "--out", help="HTML file to write; an explicit path that exists is refused. Default: "
                      "compare.html (compare-2.html... if it exists).")] = None,
    as_json: JsonOpt = False,
    options: dict = None,
):
    """Score several language models (recurrent or baselines, any vocab) on the same text:
    bits per character of each, their loss by kind of character (after a newline, inside
    quotes, inside brackets by distance to the opening one, first character of a word, rest
    of a word...), and an HTML view of the text shaded by the difference between two."""
    from ..api import load
    from ..compare import compare as run_compare
    from ..compare import render
    from ..files import atomic_write, output_path
    from ..text.sources import read_text

    with Guard():
        given = split_by_owner(options, (CompareConfig, EvalConfig, ReadConfig))
        config = CompareConfig.from_given(**given[CompareConfig])
        eval_config = EvalConfig.from_given(**given[EvalConfig])
        reading = ReadConfig.from_given(**given[ReadConfig])
        runs, text_files = runs_and_texts(paths)
        target = output_path(out_path, Path("compare.html"), "--out") if config.length else None
        names = run_names(runs)
        lms = [load(path=p, device=eval_config.device) for p in runs]
        texts = [read_text(p, reading.encoding) for p in text_files] or None
        source = ", ".join(p.name for p in text_files) if text_files else \
            f"the validation split of {names[0]}"
        result = run_compare(lms, names, texts, eval_config,
                             progress=lambda name: err.print(f"scoring {name}...",
                                                             markup=False))
        if target is not None:
            atomic_write(target, render(result, config.length, source,
                                        f"charlm compare: {source}").encode("utf-8"))
        if as_json:
            print(json.dumps({"text": source, "html": str(target) if target else None,
                              "runs": result["runs"], "breakdown": result["breakdown"]}))
            return
        _render(result, source)
        if target is not None:
            err.print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB): the first "
                      f"{config.length:,} characters shaded by the difference", markup=False)


def _render(result: dict, source: str) -> None:
    runs = result["runs"]
    table = Table(title=source, title_justify="left")
    for col in ("run", "kind", "bits/char", "nats/symbol", "chars", "unknown"):
        table.add_column(col, justify="left" if col in ("run", "kind") else "right")
    for r in runs:
        f = r["figures"]
        table.add_row(r["name"], r["kind"], f"{f['bpc']:.4f}", f"{f['loss_nats']:.4f}",
                      f"{f['chars']:,}", f"{f['unknown']:,}")
    out.print(table)
    pair = len(runs) == 2
    table = Table(title="bits per character by kind of character (those every run scores)",
                  title_justify="left")
    table.add_column("characters")
    table.add_column("count", justify="right")
    for i, r in enumerate(runs):
        table.add_column(f"{i + 1}. {r['name']}", justify="right")
    if pair:
        table.add_column("2 - 1", justify="right")
    for row in result["breakdown"]:
        if not row["count"]:
            continue
        cells = [f"{b:.3f}" for b in row["bits"]]
        if pair:
            cells.append(f"{row['bits'][1] - row['bits'][0]:+.3f}")
        table.add_row(row["category"], f"{row['count']:,}", *cells)
    out.print(table)
