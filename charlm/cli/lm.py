"""The language-model commands: prepare, train, eval, sample."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..errors import CharLMError
from ..evaluate import EvalConfig
from ..lm_runs import TRAIN_OPTIONS
from ..options import resumable_flags, split_by_owner
from ..budget import describe_rule
from ..training.config import DEFAULT_BUDGET
from ..presets import DEFAULT_PRESET, PRESET_NOTES, PRESETS
from ..sample import SampleConfig
from ..text.corpus import PrepareConfig
from ..text.sources import ReadConfig
from .app import app
from .common import (CheckpointOpt, Guard, JsonOpt, NprocOpt, Streamed, err, in_processes,
                     out, progress_bar, warn)
from .params import with_options
from .training_view import TrainView, fmt_rate, run_trainer, start_words

# ----- prepare ---------------------------------------------------------------------------------


@app.command()
@with_options(PrepareConfig)
def prepare(
    corpus: Annotated[list[Path], typer.Argument(
        help="Text files or directories of them (each file is a document).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write the prepared corpus "
                                                        "to (must not exist or be empty).")],
    options: dict,
):
    """Encode a corpus once into flat id arrays plus metadata, for training by memmap."""
    from ..api import prepare as do_prepare

    with Guard():
        stop_bar, update = progress_bar("encoding")
        try:
            prepared = do_prepare(corpus=corpus, out=out_dir, progress=update, warn=warn,
                                  **options)
        finally:
            stop_bar()
        meta = prepared.meta
        table = Table(title=f"prepared {out_dir}", title_justify="left")
        for col in ("split", "documents", "characters", "symbols", "unknown"):
            table.add_column(col, justify="right" if col != "split" else "left")
        for name, s in meta["splits"].items():
            table.add_row(name, f"{s['documents']:,}", f"{s['chars']:,}", f"{s['symbols']:,}",
                          f"{s['unknown']:,}")
        err.print(table)
        err.print(f"vocab: {meta['vocab']['kind']}, {meta['vocab']['size']} symbols "
                  f"({meta['dtype']} ids)")


# ----- train -----------------------------------------------------------------------------------
def _describe_choice(choice: dict) -> str:
    c = choice["settings"]
    default = " (the default budget; --max-time sets it)" if choice.get("default_budget") else ""
    return (f"chosen for {choice['budget']:g} s{default} on this text ({c['num_layers']}x"
            f"{c['hidden_dim']} {c['cell'].upper()}, dropout {c['dropout']:g}, weight drop "
            f"{c['weight_drop']:g}: measured at {fmt_rate(choice['symbols_per_s'][choice['model']])}"
            f" symbols/s, it will read the text about {choice['passes']:g} times)")


def _start_line(data: dict) -> str:
    total = data["total_steps"]
    budget = f"{total:,} steps" if total else ""
    if data.get("max_time"):
        budget += (" or " if budget else "") + f"{data['max_time']:g} s"
    preset = f"preset {data['preset']}, " if data.get("preset") else ""
    if data.get("choice"):
        preset = _describe_choice(data["choice"]) + ", "
    return (f"{start_words(data)}: {preset}{data['parameters']:,} parameters, "
            f"{data['lanes']} lanes, {data['chunks_per_epoch']:,} chunks per epoch"
            + (f", {budget}" if budget else ""))


def _eval_line(data: dict) -> tuple[str, str]:
    return (f"val {data['val_loss']:.4f} nats/symbol  {data['val_bpc']:.4f} bits/char",
            f"{data['val_loss']:.3f}")


@app.command()
@with_options(*TRAIN_OPTIONS, PrepareConfig, presets=PRESETS)
def train(
    corpus: Annotated[Optional[list[Path]], typer.Argument(
        help="Text files or directories (or a prepared corpus directory). "
             "Default: the bundled Tiny Shakespeare.")] = None,
    preset: Annotated[Optional[str], typer.Option(
        help=f"Model size and training budget: "
             f"{'; '.join(f'{n}: {PRESET_NOTES[n]}' for n in PRESETS)}. Options given below "
             f"override the preset's values. Default: with no size option (--layers, --hidden, "
             f"--embed), settings chosen for the budget (--max-time, else "
             f"{DEFAULT_BUDGET:g} s unless --max-steps or --epochs is given) and the text "
             f"from a few seconds of measured speed ({describe_rule()}); else "
             f"{DEFAULT_PRESET}.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option(
        "--out", help="Run directory. Default: ./checkpoints/<corpus name> (a numbered name "
                      "if taken).")] = None,
    resume: Annotated[Optional[Path], typer.Option(
        help=f"Continue the run in this directory from its last checkpoint. Only "
             f"{', '.join(resumable_flags(TRAIN_OPTIONS))} may change.")] = None,
    init_from: Annotated[Optional[Path], typer.Option(
        help="Start from this language model's run (its vocab, cell, sizes and weights) and "
             "go on training it on the text given, into a new run: e.g. a Shakespeare model "
             "on your poems. Characters it never saw are read as unknown.")] = None,
    nproc: NprocOpt = 1,
    options: dict = None,
):
    """Train a model (preparing the corpus first, cached by content) and save it in a run directory."""
    from ..api import build_trainer

    view = TrainView(_start_line, _eval_line)
    with Guard():
        in_processes(nproc)
        stop_bar, update = progress_bar("preparing corpus")
        try:
            trainer = build_trainer(corpus=corpus, out=out_dir, preset=preset, resume=resume,
                                    report=view, prepare_progress=update, warn=warn,
                                    init_from=init_from, **options)
        finally:
            stop_bar()

        summary = run_trainer(trainer, view)
        run_dir = summary["run_dir"]
        best = summary["best"]
        scored = f" on {best['val_symbols']:,} symbols" if best and "val_symbols" in best else ""
        best_text = (f"best val {best['val_loss']:.4f} nats/symbol ({best['val_bpc']:.4f} "
                     f"bits/char){scored}, " if best else "")
        steps = f"{summary['step']:,} step{'s' if summary['step'] != 1 else ''}"
        err.print(f"done: {steps} in {summary['elapsed']:.0f} s, {best_text}"
                  f"saved in {run_dir}/")


# ----- eval ------------------------------------------------------------------------------------
@app.command("eval")
@with_options(EvalConfig, ReadConfig)
def eval_command(
    text: Annotated[Optional[list[Path]], typer.Argument(
        help="Held-out text files, each cut into documents as the run's corpus was. "
             "Default: the run's validation split.")] = None,
    checkpoint: CheckpointOpt = None,
    as_json: JsonOpt = False,
    options: dict = None,
):
    """Report loss (nats per symbol), perplexity and bits per character on held-out text."""
    from ..api import load
    from ..text.sources import read_text

    with Guard():
        given = split_by_owner(options, (EvalConfig, ReadConfig))
        config = EvalConfig.from_given(**given[EvalConfig])
        reading = ReadConfig.from_given(**given[ReadConfig])
        lm = load(path=checkpoint, device=config.device)
        if text:
            split = lm.encode(texts=[read_text(p, reading.encoding) for p in text])
            source = ", ".join(str(p) for p in text)
        else:
            split = lm.validation_split()
            source = "validation split"
        result = lm.evaluate(text=split, lanes=config.lanes, precision=config.precision)
        result.pop("total_nats", None)
        if split.unknown:
            warn(f"{split.unknown:,} character(s) the model never saw were not scored")
        if as_json:
            print(json.dumps({"checkpoint": str(lm.path), "text": source, **result}))
            return
        err.print(f"checkpoint: {lm.path}", markup=False)
        table = Table(title=source, title_justify="left")
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_row("loss (nats/symbol)", f"{result['loss_nats']:.4f}")
        table.add_row("perplexity", f"{result['perplexity']:.3f}")
        table.add_row("bits per character", f"{result['bpc']:.4f}")
        table.add_row("characters", f"{result['chars']:,}")
        table.add_row("symbols scored", f"{result['symbols']:,}")
        table.add_row("unknown symbols", f"{result['unknown']:,}")
        out.print(table)


# ----- sample ----------------------------------------------------------------------------------
@app.command()
@with_options(SampleConfig, ReadConfig)
def sample(
    checkpoint: CheckpointOpt = None,
    prime_file: Annotated[Optional[Path], typer.Option(
        "--prime-file", help="Read the prime from this text file (for long primes; in place "
                             "of --prime; --encoding applies).")] = None,
    options: dict = None,
):
    """Generate text, streamed to stdout as it is produced."""
    from ..api import load
    from ..text.sources import read_text

    with Guard():
        given = split_by_owner(options, (SampleConfig, ReadConfig))
        if prime_file is not None:
            if "prime" in given[SampleConfig]:
                raise CharLMError("give the prime as --prime or as --prime-file, not both")
            reading = ReadConfig.from_given(**given[ReadConfig])
            given[SampleConfig]["prime"] = read_text(prime_file, reading.encoding)
        config = SampleConfig.from_given(**given[SampleConfig]).with_seed()
        lm = load(path=checkpoint, device=config.device)
        if config.num_samples == 1:
            pending = [config.prime]  # the prime is written once the model has accepted it
            writer = Streamed(sys.stdout)

            def stream(_: int, piece: str):
                writer.write(pending.pop() + piece if pending else piece)
            lm.generate(config=config, on_text=stream, on_warning=warn, collect=False)
            writer.write((pending.pop() if pending else "") + "\n")
            writer.flush()
        else:
            texts = lm.generate(config=config, on_warning=warn)
            for i, t in enumerate(texts):
                # A header line on stdout keeps piped samples apart.
                sys.stdout.write(f"{'' if i == 0 else chr(10)}=== sample {i + 1} of "
                                 f"{config.num_samples} (seed {config.seed + i}) ===\n"
                                 f"{config.prime}{t}\n")
                sys.stdout.flush()
        if options.get("seed") is None:
            err.print(f"(seed {config.seed}: pass --seed {config.seed} to get this text again)")

