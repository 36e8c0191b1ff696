"""The ``charlm`` command: prepare, train, eval, sample.

stdout carries data (generated text, evaluation results); stderr carries progress, status and
errors. Exit codes: 0 ok, 1 a charlm error (one line, no traceback), 2 a usage error, 130 after
Ctrl-C and 143 after SIGTERM (training: once the checkpoint is safely written).
"""

from __future__ import annotations

import json
import math
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__
from .config import EVAL_PRECISIONS, PRESET_HELP, PRESETS, TrainConfig, check_precision
from .model import ModelConfig
from .errors import CharLMError

app = typer.Typer(
    name="charlm", add_completion=False, no_args_is_help=True, rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Train recurrent character-level language models on your own text, then evaluate and "
         "sample from them.")
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False)
T = TrainConfig()


def _version(value: bool):
    if value:
        print(f"charlm {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None,
):
    pass


def _warn(message: str):
    err.print(f"warning: {message}")


def _fail(message: str, code: int = 1):
    err.print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


class _Guard:
    """Turns charlm errors and OS errors into one line on stderr and exit status 1."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or isinstance(exc, (typer.Exit, SystemExit)):
            return False
        if isinstance(exc, BrokenPipeError):  # e.g. `charlm sample | head`: the reader is done
            _quiet_stdout()
            raise typer.Exit(0)
        if isinstance(exc, CharLMError):
            _fail(str(exc))
        if isinstance(exc, KeyboardInterrupt):
            err.print("interrupted")
            raise typer.Exit(130)
        if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and any(
                s in str(exc) for s in ("can't allocate memory", "out of memory"))):
            _fail("out of memory; try a smaller model or --batch-size")
        if isinstance(exc, OSError):
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            _fail(f"{where}{exc.strerror or exc}")
        return False


# ----- prepare ---------------------------------------------------------------------------------
VocabOpt = Annotated[Optional[str], typer.Option(
    "--vocab", help="Vocabulary: 'char' (one symbol per character) or 'bpe' (byte-level BPE "
                    "tokens trained on the corpus). Default: char.")]
VocabSizeOpt = Annotated[Optional[int], typer.Option(
    "--vocab-size", help="BPE vocabulary size, special symbols included (258 to 1048576). "
                         "Only with --vocab bpe. Default: 1024.")]
ValOpt = Annotated[Optional[float], typer.Option(
    "--val-fraction", help="Share of the text held out for validation: whole documents when "
                           "there are several, else the last part of the text. 0 = none. "
                           "Default: 0.1.")]
SepOpt = Annotated[Optional[str], typer.Option(
    "--doc-separator", help=r"Split files into documents at this string (escapes allowed: "
                            r"'\n' = one document per line, '\n\n' = per blank line). "
                            r"Default: each file is one document.")]


def _progress_bar(label: str):
    """A progress bar that appears only for large inputs; returns (stop, update)."""
    progress = Progress(TextColumn(label), BarColumn(), TaskProgressColumn(),
                        TimeRemainingColumn(), console=err, transient=True)
    task = None

    def update(done: int, total: int):
        nonlocal task
        if total < (16 << 20):  # only large inputs get a bar
            return
        if task is None:
            progress.start()
            task = progress.add_task(label, total=total)
        progress.update(task, completed=done)

    def stop():
        if task is not None:
            progress.stop()
    return stop, update


@app.command()
def prepare(
    corpus: Annotated[list[Path], typer.Argument(
        help="UTF-8 text files or directories of them (each file is a document).")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the prepared corpus to "
                                                    "(must not exist or be empty).")],
    vocab: VocabOpt = None,
    vocab_size: VocabSizeOpt = None,
    val_fraction: ValOpt = None,
    doc_separator: SepOpt = None,
):
    """Encode a corpus once into flat id arrays plus metadata, for training by memmap."""
    from .corpus import parse_separator, prepare as do_prepare

    with _Guard():
        stop_bar, update = _progress_bar("encoding")
        try:
            if (vocab or "char") == "char" and vocab_size is not None:
                raise CharLMError("--vocab-size applies only to --vocab bpe")
            prepared = do_prepare(corpus, out, vocab or "char",
                                  1024 if vocab_size is None else vocab_size,
                                  0.1 if val_fraction is None else val_fraction,
                                  parse_separator(doc_separator), update, warn=_warn)
        finally:
            stop_bar()
        meta = prepared.meta
        table = Table(title=f"prepared {out}", title_justify="left")
        for col in ("split", "documents", "characters", "symbols", "unknown"):
            table.add_column(col, justify="right" if col != "split" else "left")
        for name, s in meta["splits"].items():
            table.add_row(name, f"{s['documents']:,}", f"{s['chars']:,}", f"{s['symbols']:,}",
                          f"{s['unknown']:,}")
        err.print(table)
        err.print(f"vocab: {meta['vocab']['kind']}, {meta['vocab']['size']} symbols "
                  f"({meta['dtype']} ids)")


# ----- train -----------------------------------------------------------------------------------
def _fmt_rate(x: float) -> str:
    return f"{x / 1000:.1f}k" if x >= 1000 else f"{x:.0f}"


class _TrainView:
    """Renders trainer events: a progress bar on stderr, validation lines, save notices."""

    def __init__(self):
        self.progress = Progress(
            TextColumn("step {task.fields[step]}"), BarColumn(), TaskProgressColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("val {task.fields[val]}"),
            TextColumn("{task.fields[rate]} chars/s"), TextColumn("ETA"), TimeRemainingColumn(),
            console=err, transient=False)
        self.task = None
        self.smooth = None
        self.rate = None
        self.val = "-"

    def __call__(self, event: str, data: dict):
        if event == "start":
            total = data["total_steps"]
            budget = f"{total:,} steps" if total else ""
            if data.get("max_time"):
                budget += (" or " if budget else "") + f"{data['max_time']:g} s"
            preset = f"preset {data['preset']}, " if data.get("preset") else ""
            err.print(f"training on {data['device']}: {preset}{data['parameters']:,} parameters, "
                      f"{data['lanes']} lanes, {data['chunks_per_epoch']:,} chunks per epoch"
                      + (f", {budget}" if budget else ""))
            self.progress.start()
            self.task = self.progress.add_task("train", total=1000, step=data["step"], loss="-",
                                               val="-", rate="-")
        elif event == "step":
            loss = data["loss"]
            if math.isfinite(loss):
                self.smooth = loss if self.smooth is None else 0.95 * self.smooth + 0.05 * loss
            r = data["symbols_per_s"]
            self.rate = r if self.rate is None else 0.9 * self.rate + 0.1 * r
            self.progress.update(self.task, completed=min(data["progress"], 1.0) * 1000,
                                 step=f"{data['step']:,}", loss=f"{self.smooth:.3f}"
                                 if self.smooth is not None else "-",
                                 val=self.val, rate=_fmt_rate(self.rate))
        elif event == "eval":
            self.val = f"{data['val_loss']:.3f}"
            star = " (best)" if data["best"] else ""
            self.progress.console.print(
                f"step {data['step']:>6,}  val {data['val_loss']:.4f} nats/symbol  "
                f"{data['val_bpc']:.4f} bits/char{star}")
            if self.task is not None:
                self.progress.update(self.task, val=self.val)
        elif event == "skip":
            self.progress.console.print(f"step {data['step']}: non-finite loss or gradient, "
                                        f"step skipped ({data['bad_steps']} in a row)")
        elif event == "end":
            self.stop()

    def stop(self):
        if self.task is not None:
            self.progress.stop()


def _per_preset(field: str) -> str:
    """'tiny 64, fast 512, ...': a field's value in each preset (the built-in default if unset)."""
    def value(p):
        v = p["model"].get(field, p["train"].get(field))
        if v is None:
            v = getattr(T, field, None)
        if v is None:
            v = ModelConfig.__dataclass_fields__[field].default
        return f"{v:g}" if isinstance(v, float) else str(v)
    return ", ".join(f"{name} {value(p)}" for name, p in PRESETS.items())


@app.command()
def train(
    corpus: Annotated[Optional[list[Path]], typer.Argument(
        help="Text files or directories (or a prepared corpus directory). "
             "Default: the bundled Tiny Shakespeare.")] = None,
    preset: Annotated[Optional[str], typer.Option(
        help=f"Model size and training budget: {PRESET_HELP}. tiny: seconds, for trying "
             f"things; fast: 1x640 LSTM, ~1-3 min on 2 cores; default: 2x256 LSTM, ~3-7 min; "
             f"large: 2x512 LSTM, ~10 min with bf16. Options given below override the "
             f"preset's values. Default: default, or with --max-time and no size option "
             f"(--cell, --layers, --hidden, --embed) the preset made for that budget (fast up "
             f"to 240 s, default up to 480 s, large beyond).")] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Run directory. Default: ./checkpoints/<corpus name> (a numbered name if taken).")]
    = None,
    resume: Annotated[Optional[Path], typer.Option(
        help="Continue the run in this directory from its last checkpoint. Only --max-steps, "
             "--epochs, --max-time, --eval-every, --save-every, --device, --precision and "
             "--max-bad-steps may change.")] = None,
    cell: Annotated[Optional[str], typer.Option(
        help="Recurrent cell: lstm, gru, rnn (Elman, tanh), irnn (ReLU recurrence "
             "started at the identity, zero biases: Le, Jaitly & Hinton 2015), leaky "
             "(leaky-integrator units, h' = g h + (1 - g) tanh(...); see --leak) or jordan "
             "(the state fed back is the previous output distribution, not a hidden layer). "
             "Presets: lstm.")] = None,
    leak: Annotated[Optional[float], typer.Option(
        help="Leaky cell: the share g of the old state each unit keeps per step, in (0, 1). "
             "Default: 0.5.")] = None,
    learn_leak: Annotated[Optional[bool], typer.Option(
        "--learn-leak/--no-learn-leak",
        help="Leaky cell: learn g per unit (starting at --leak). Default: no.")] = None,
    layer_norm: Annotated[Optional[bool], typer.Option(
        "--layer-norm/--no-layer-norm",
        help="Layer normalisation inside the recurrence, before the nonlinearities (Ba, Kiros "
             "& Hinton 2016); runs the layers step by step. Default: no.")] = None,
    recurrent_dropout: Annotated[Optional[float], typer.Option(
        help="Dropout on the recurrent update without memory loss (Semeniuta et al. 2016): "
             "the LSTM's candidate g, the GRU's candidate n, the leaky unit's new value, the "
             "Elman/IRNN recurrent input; one mask per chunk; runs the layers step by step. "
             "Default: 0.")] = None,
    layers: Annotated[Optional[int], typer.Option(
        help=f"Stacked recurrent layers. Presets: {_per_preset('num_layers')}.")] = None,
    hidden: Annotated[Optional[int], typer.Option(
        help=f"Hidden units per layer. Presets: {_per_preset('hidden_dim')}.")] = None,
    embed: Annotated[Optional[int], typer.Option(
        help=f"Embedding size. Presets: {_per_preset('embed_dim')}.")] = None,
    dropout: Annotated[Optional[float], typer.Option(
        help=f"Dropout between layers and before the output layer. Presets: "
             f"{_per_preset('dropout')}.")] = None,
    weight_drop: Annotated[Optional[float], typer.Option(
        help=f"Weight drop (DropConnect, as in AWD-LSTM): while training, drop this share of "
             f"the hidden-to-hidden weights, one mask per chunk for every time step. "
             f"Presets: {_per_preset('weight_drop')}.")] = None,
    tie_weights: Annotated[Optional[bool], typer.Option(
        "--tie-weights/--no-tie-weights",
        help="Share the embedding and output weights (needs --embed = --hidden). "
             "Default: no.")] = None,
    learn_init_state: Annotated[Optional[bool], typer.Option(
        "--learn-init-state/--no-learn-init-state",
        help="Train the initial state h0 (and c0 for lstm) used at every document start, "
             "instead of zeros. Default: no.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        help=f"Parallel lanes per batch. Presets: {_per_preset('batch_size')}.")] = None,
    bptt: Annotated[Optional[int], typer.Option(
        help=f"Truncated BPTT length: time steps per chunk. Presets: {_per_preset('bptt_len')}.")]
    = None,
    lr: Annotated[Optional[float], typer.Option(
        help=f"Peak learning rate. Presets: {_per_preset('lr')}.")] = None,
    optimizer: Annotated[Optional[str], typer.Option(
        help=f"adamw, adam, rmsprop or sgd. Default: {T.optimizer}.")] = None,
    momentum: Annotated[Optional[float], typer.Option(
        help=f"Momentum of sgd and rmsprop. Default: {T.momentum:g}.")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(
        help=f"Weight decay on the weight matrices (with adamw decoupled: each step shrinks "
             f"them by lr x this; with adam, rmsprop and sgd an L2 term in the gradient). "
             f"Presets: {_per_preset('weight_decay')}.")] = None,
    warmup: Annotated[Optional[int], typer.Option(
        help=f"Steps of linear learning-rate warmup. Default: {T.warmup_steps}.")] = None,
    schedule: Annotated[Optional[str], typer.Option(
        help=f"Decay after warmup over the run: cosine, linear or constant. "
             f"Default: {T.schedule}.")] = None,
    clip_norm: Annotated[Optional[float], typer.Option(
        help=f"Clip the gradient's global norm to this (0 = off). Default: {T.clip_norm:g}.")]
    = None,
    clip_value: Annotated[Optional[float], typer.Option(
        help="Clip each gradient element to [-v, v] (0 = off). Default: off.")] = None,
    max_steps: Annotated[Optional[int], typer.Option(
        help=f"Stop after this many steps. Presets: {_per_preset('max_steps')}.")] = None,
    epochs: Annotated[Optional[float], typer.Option(
        help="Stop after this many passes over the training text.")] = None,
    max_time: Annotated[Optional[float], typer.Option(
        help="Stop after this many seconds of training; the LR schedule spans the budget.")]
    = None,
    max_bad_steps: Annotated[Optional[int], typer.Option(
        help=f"A step whose loss or gradient norm is not a finite number is skipped (and "
             f"counted in the log); stop after this many in a row, keeping the last good "
             f"checkpoint. Default: {T.max_bad_steps}.")] = None,
    eval_every: Annotated[Optional[int], typer.Option(
        help=f"Validate every this many steps. Default: {T.eval_every}.")] = None,
    save_every: Annotated[Optional[int], typer.Option(
        help=f"Write the last checkpoint at least every this many steps. "
             f"Default: {T.save_every}.")] = None,
    seed: Annotated[Optional[int], typer.Option(
        help=f"Random seed; the same seed gives the same run on CPU. Default: {T.seed}.")]
    = None,
    device: Annotated[Optional[str], typer.Option(
        help="auto (cuda, then mps, then cpu), cpu, cuda or mps. Default: auto.")] = None,
    precision: Annotated[Optional[str], typer.Option(
        help=f"fp32; bf16: the training forward and backward compute in bfloat16 on casts "
             f"of float32 weights, which the optimizer updates (faster on CPUs with bf16 "
             f"instructions; evaluation and sampling stay float32); auto: bf16 on such CPUs, "
             f"else fp32. Presets: {_per_preset('precision')}.")]
    = None,
    vocab: VocabOpt = None,
    vocab_size: VocabSizeOpt = None,
    val_fraction: ValOpt = None,
    doc_separator: SepOpt = None,
):
    """Train a model (preparing the corpus first, cached by content) and save it in a run directory."""
    from .api import build_trainer
    from .corpus import parse_separator

    view = _TrainView()
    with _Guard():
        stop_bar, update = _progress_bar("preparing corpus")
        try:
            trainer = build_trainer(
                corpus, out, preset, resume, vocab=vocab, vocab_size=vocab_size,
                val_fraction=val_fraction, doc_separator=parse_separator(doc_separator),
                report=view, prepare_progress=update, warn=_warn,
                cell=cell, num_layers=layers, hidden_dim=hidden, embed_dim=embed,
                dropout=dropout, weight_drop=weight_drop, tie_weights=tie_weights,
                learn_init_state=learn_init_state, leak=leak, learn_leak=learn_leak,
                layer_norm=layer_norm, recurrent_dropout=recurrent_dropout,
                batch_size=batch_size, bptt_len=bptt, lr=lr, optimizer=optimizer,
                momentum=momentum,
                weight_decay=weight_decay, warmup_steps=warmup, schedule=schedule,
                clip_norm=clip_norm, clip_value=clip_value, max_bad_steps=max_bad_steps,
                max_steps=max_steps, epochs=epochs, max_time=max_time,
                eval_every=eval_every, save_every=save_every, seed=seed, device=device,
                precision=precision)
        finally:
            stop_bar()

        stopped_by = []

        def request_stop(signum, frame):  # Ctrl-C and SIGTERM: save at the step's end, exit
            if trainer.stop_requested:
                raise KeyboardInterrupt
            trainer.stop_requested = True
            stopped_by.append(signum)
            view.progress.console.print("stopping: saving a checkpoint at the end of this step "
                                        "(press Ctrl-C again to abort without saving)")
        old = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            summary = trainer.run()
        finally:
            view.stop()
            for s, handler in old.items():
                signal.signal(s, handler)
        run_dir = summary["run_dir"]
        best = summary["best_val"]
        best_text = f"best val {best:.4f} nats/symbol ({summary['best_bpc']:.4f} bits/char), " \
            if best is not None else ""
        if summary["status"] == "interrupted":
            err.print(f"interrupted at step {summary['step']:,}: saved {run_dir}/last.safetensors;"
                      f" continue with: charlm train --resume {run_dir}")
            raise typer.Exit(128 + (stopped_by[0] if stopped_by else signal.SIGINT))
        steps = f"{summary['step']:,} step{'s' if summary['step'] != 1 else ''}"
        err.print(f"done: {steps} in {summary['elapsed']:.0f} s, {best_text}"
                  f"saved in {run_dir}/")


# ----- eval ------------------------------------------------------------------------------------
@app.command("eval")
def eval_command(
    text: Annotated[Optional[list[Path]], typer.Argument(
        help="Held-out UTF-8 text files, each read as one document. Default: the run's "
             "validation split.")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(
        help="Run directory (its best checkpoint) or a .safetensors file. Default: the most "
             "recently trained run under ./checkpoints/.")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object instead of a table.")] = False,
    lanes: Annotated[Optional[int], typer.Option(
        help="Parallel lanes the text is cut into (each warms up on the 256 symbols before "
             "its start). Default: 32, or for long texts one per 16k symbols, at most "
             "512.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "cpu",
    precision: Annotated[str, typer.Option(
        help="fp32 (exact) or bf16: the forward computes on bfloat16 casts of the weights, "
             "faster on CPUs with bf16 instructions; figures then move in the third or fourth "
             "decimal.")] = "fp32",
):
    """Report loss (nats per symbol), perplexity and bits per character on held-out text."""
    from .api import load
    from .corpus import read_text

    with _Guard():
        if lanes is not None and lanes < 1:
            raise CharLMError(f"--lanes must be >= 1, got {lanes}")
        check_precision(precision, EVAL_PRECISIONS)
        lm = load(checkpoint, device=device)
        if text:
            split = lm.encode([read_text(p) for p in text])
            source = ", ".join(str(p) for p in text)
        else:
            split = lm.validation_split()
            source = "validation split"
        result = lm.evaluate(split, lanes=lanes, precision=precision)
        result.pop("total_nats", None)
        if split.unknown:
            err.print(f"warning: {split.unknown:,} character(s) the model never saw were not "
                      f"scored")
        if as_json:
            print(json.dumps({"checkpoint": str(lm.path), "text": source, **result}))
            return
        err.print(f"checkpoint: {lm.path}")
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
def sample(
    checkpoint: Annotated[Optional[Path], typer.Option(
        help="Run directory (its best checkpoint) or a .safetensors file. Default: the most "
             "recently trained run under ./checkpoints/.")] = None,
    temp: Annotated[float, typer.Option(
        help="Temperature: below 1 is safer, above 1 wilder; 0 always takes the most likely "
             "symbol (greedy).")] = 0.8,
    prime: Annotated[str, typer.Option(
        help="Text the model reads first and continues; it is printed before the "
             "continuation.")] = "",
    length: Annotated[int, typer.Option(help="Characters to generate per sample.")] = 500,
    seed: Annotated[Optional[int], typer.Option(
        help="Random seed: the same seed gives the same text. Default: random (printed on "
             "stderr).")] = None,
    top_k: Annotated[Optional[int], typer.Option(
        help="Draw only from the k most likely symbols (0 or unset = all).")] = None,
    num_samples: Annotated[int, typer.Option(help="Independent samples to generate.")] = 1,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "cpu",
):
    """Generate text, streamed to stdout as it is produced."""
    import os

    from .api import load
    from .sample import check_options

    with _Guard():
        check_options(temp, length, top_k, num_samples, 0 if seed is None else seed)
        lm = load(checkpoint, device=device)
        chosen_seed = seed is None
        if chosen_seed:
            seed = int.from_bytes(os.urandom(4), "little") % (2**31)

        def warn(message: str):
            err.print(f"warning: {message}")

        if num_samples == 1:
            pending = [prime]  # the prime is written once the model has accepted it

            def stream(_: int, piece: str):
                sys.stdout.write(pending.pop() + piece if pending else piece)
                sys.stdout.flush()
            lm.sample(prime, length, temp, top_k or None, seed, 1, stream, warn, collect=False)
            sys.stdout.write((pending.pop() if pending else "") + "\n")
        else:
            texts = lm.sample(prime, length, temp, top_k or None, seed, num_samples, None, warn)
            for i, t in enumerate(texts):
                # A header line on stdout keeps piped samples apart.
                sys.stdout.write(f"{'' if i == 0 else chr(10)}=== sample {i + 1} of "
                                 f"{num_samples} (seed {seed + i}) ===\n{prime}{t}\n")
                sys.stdout.flush()
        if chosen_seed:
            err.print(f"(seed {seed}: pass --seed {seed} to get this text again)")


# ----- diagnose --------------------------------------------------------------------------------
diagnose_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None,
    help="Look inside a model: how gradients vanish or explode through the recurrence.")
app.add_typer(diagnose_app, name="diagnose")


def _free_name(path: Path) -> Path:
    """``path``, or ``name-2.ext``, ``name-3.ext``... if it is taken."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


@diagnose_app.command("gradients")
def diagnose_gradients(
    text: Annotated[Optional[list[Path]], typer.Argument(
        help="UTF-8 text files to measure on. Default: the bundled Tiny Shakespeare.")] = None,
    checkpoint: Annotated[Optional[list[Path]], typer.Option(
        help="A run directory or .safetensors file to measure (repeatable).")] = None,
    cell: Annotated[Optional[str], typer.Option(
        help="Freshly initialised models of these cells, comma-separated (e.g. rnn,lstm). "
             "Default: rnn,lstm when no --checkpoint is given.")] = None,
    layers: Annotated[int, typer.Option(help="Layers of the fresh models.")] = 1,
    hidden: Annotated[int, typer.Option(help="Hidden units of the fresh models.")] = 128,
    embed: Annotated[int, typer.Option(help="Embedding size of the fresh models.")] = 64,
    max_k: Annotated[int, typer.Option(
        help="Longest distance k (steps) between the state and the loss.")] = 100,
    windows: Annotated[int, typer.Option(
        help="Positions in the text the curve is averaged over.")] = 128,
    plot: Annotated[Optional[Path], typer.Option(
        help="PNG file for the plot. Default: gradients.png (numbered if taken); an "
             "explicit path that exists is refused.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the fresh models and the positions.")] = 0,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object instead of the tables.")] = False,
):
    """Measure how much the loss at step t depends on the recurrent state k steps back, the
    norm of dL_t/ds_(t-k), averaged over many positions of real text; print a table, write a
    log-scale plot (one curve per model), and report the largest weight-gradient norms seen
    without clipping (the exploding side)."""
    import torch

    from .api import bundled_corpus, load
    from .corpus import read_text
    from .diagnose import gradient_profile, plot as write_plot, table_ks
    from .model import CELLS, CharRNN, ModelConfig
    from .vocab import CharVocab

    with _Guard():
        if plot is not None and plot.exists():
            raise CharLMError(f"--plot {plot} exists; choose another path or remove it")
        for name, value in (("--layers", layers), ("--hidden", hidden), ("--embed", embed),
                            ("--max-k", max_k), ("--windows", windows)):
            if value < 1:
                raise CharLMError(f"{name} must be >= 1, got {value}")
        paths = text or [bundled_corpus()]
        raw = "".join(read_text(p) for p in paths)
        cells = [c.strip() for c in cell.split(",") if c.strip()] if cell else []
        if not cells and not checkpoint:
            cells = ["rnn", "lstm"]
        for c in cells:
            if c not in CELLS:
                raise CharLMError(f"--cell must be among {', '.join(CELLS)}, not {c!r}")
        models = {}
        for path in checkpoint or []:
            lm = load(path)
            models[str(path)] = (lm.model, lm.vocab)
        if cells:
            vocab = CharVocab(raw)
            for c in cells:
                torch.manual_seed(seed)
                config = ModelConfig(vocab_size=vocab.size, cell=c, num_layers=layers,
                                     hidden_dim=hidden, embed_dim=embed,
                                     never_predict=(vocab.pad_id,))
                models[f"{c} {layers}x{hidden} (fresh)"] = (CharRNN(config), vocab)
        profiles = {}
        for name, (model, vocab) in models.items():
            tokens = vocab.encode(raw)
            profiles[name] = gradient_profile(model, tokens, max_k=max_k, windows=windows,
                                              seed=seed)
        target = plot if plot is not None else _free_name(Path("gradients.png"))
        source = ", ".join(str(p) for p in paths)
        write_plot(profiles, target,
                   f"gradient through the state, {source if text else 'Tiny Shakespeare'}")
        if as_json:
            print(json.dumps({"text": source, "plot": str(target), "models": profiles}))
            return
        table = Table(title=f"mean ||dL_t / ds_(t-k)|| over {windows} positions")
        table.add_column("k", justify="right")
        for name in profiles:
            table.add_column(name, justify="right")
        for k in table_ks(max_k):
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
        err.print(f"plot: {target}")


def _quiet_stdout():
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main():
    try:
        app()
    except BrokenPipeError:
        _quiet_stdout()
        sys.exit(0)


if __name__ == "__main__":
    main()
