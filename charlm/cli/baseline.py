"""``charlm baseline``: the memoryless and hidden-Markov models to set beside a recurrent one."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..lm_runs import WINDOW_OPTIONS
from ..models.hmm import HMMConfig
from ..models.ngram import NgramConfig
from ..options import resumable_flags
from ..text.corpus import PrepareConfig
from ..training.em import EMConfig
from .app import group
from .common import Guard, err, progress_bar, warn
from .params import with_options
from .training_view import TrainView, run_trainer

baseline_app = group("baseline", "Baselines scored the same way as the recurrent models: a "
                                 "Kneser-Ney n-gram, a fixed-window feed-forward net, a hidden "
                                 "Markov model. Each writes a run directory that eval, sample, "
                                 "inspect and compare read.")

CorpusArg = Annotated[Optional[list[Path]], typer.Argument(
    help="Text files or directories (or a prepared corpus directory), prepared as `charlm "
         "train` prepares them. Default: the bundled Tiny Shakespeare.")]
OutOpt = Annotated[Optional[Path], typer.Option(
    "--out", help="Run directory. Default: ./checkpoints/<corpus name> (a numbered name if "
                  "taken).")]


def _corpus(corpus: list[Path] | None) -> list[Path]:
    from ..api import bundled_corpus

    return corpus or [bundled_corpus()]


def _prepare_given(options: dict) -> dict:
    return {k: options.pop(k) for k in list(options) if k in PrepareConfig.declared()}


def _val_text(best: dict | None) -> str:
    if not best:
        return "no validation split"
    return f"val {best['val_loss']:.4f} nats/symbol ({best['val_bpc']:.4f} bits/char)"


@baseline_app.command("ngram")
@with_options(NgramConfig, PrepareConfig)
def ngram(corpus: CorpusArg = None, out_dir: OutOpt = None, options: dict = None):
    """Count a character n-gram model with interpolated modified Kneser-Ney smoothing."""
    from ..baseline_runs import count_ngram_run

    with Guard():
        prepare_given = _prepare_given(options)
        stop_bar, update = progress_bar("preparing corpus")
        try:
            summary = count_ngram_run(_corpus(corpus), out_dir, prepare_given, options,
                                      progress=update, warn=warn)
        finally:
            stop_bar()
        err.print(f"done: order {summary['order']}, {summary['ngrams']:,} n-grams counted in "
                  f"{summary['count_seconds']:.1f} s, {_val_text(summary['best'])}, saved in "
                  f"{summary['run_dir']}/", markup=False)


@baseline_app.command("hmm")
@with_options(HMMConfig, EMConfig, PrepareConfig)
def hmm(corpus: CorpusArg = None, out_dir: OutOpt = None, options: dict = None):
    """Fit a discrete hidden Markov model by EM (forward-backward), validating after every
    pass and keeping the best."""
    from ..baseline_runs import fit_hmm_run

    stop = []

    def report(event: str, data: dict):
        if event == "start":
            err.print(f"fitting a {data['states']}-state HMM into {data['run_dir']}/ (at most "
                      f"{data['max_iterations']} EM passes"
                      + (f" or {data['max_time']:g} s" if data["max_time"] else "") + ")",
                      markup=False)
        elif event == "iteration":
            val = f"  val {data['val_bpc']:.4f} bits/char" if "val_bpc" in data else ""
            err.print(f"pass {data['step']:>3}  train {data['loss']:.4f} nats/symbol{val}"
                      f"{'  (best)' if data['best'] else ''}  {data['time']:.0f} s",
                      markup=False)

    def request_stop(signum, frame):
        if stop:
            raise KeyboardInterrupt
        stop.append(signum)
        err.print("stopping after this pass (Ctrl-C again to abort)")

    with Guard():
        prepare_given = _prepare_given(options)
        stop_bar, update = progress_bar("preparing corpus")
        old = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            summary = fit_hmm_run(_corpus(corpus), out_dir, prepare_given, options, report,
                                  progress=update, warn=warn, stop_requested=lambda: bool(stop))
        finally:
            stop_bar()
            for s, handler in old.items():
                signal.signal(s, handler)
        err.print(f"done: {summary['iterations']} EM passes in {summary['seconds']:.0f} s, best "
                  f"{_val_text(summary['best'])}, saved in {summary['run_dir']}/", markup=False)
        if stop:
            raise typer.Exit(128 + stop[0])


def _window_start(data: dict) -> str:
    from .lm import _start_line

    return _start_line({**data, "preset": None})


@baseline_app.command("window")
@with_options(*WINDOW_OPTIONS, PrepareConfig)
def window(
    corpus: CorpusArg = None,
    out_dir: OutOpt = None,
    resume: Annotated[Optional[Path], typer.Option(
        help=f"Continue the run in this directory from its last checkpoint. Only "
             f"{', '.join(resumable_flags(WINDOW_OPTIONS))} may change.")] = None,
    options: dict = None,
):
    """Train a fixed-window feed-forward language model (embeddings of the last K symbols,
    a hidden layer, a softmax) with the same loop, options and resume as `charlm train`."""
    from ..api import build_trainer
    from .lm import _eval_line

    view = TrainView(_window_start, _eval_line)
    with Guard():
        stop_bar, update = progress_bar("preparing corpus")
        try:
            trainer = build_trainer(corpus=corpus, out=out_dir, resume=resume, report=view,
                                    prepare_progress=update, warn=warn, kind="window-lm",
                                    **options)
        finally:
            stop_bar()
        summary = run_trainer(trainer, view, "charlm baseline window")
        err.print(f"done: {summary['step']:,} steps in {summary['elapsed']:.0f} s, best "
                  f"{_val_text(summary['best'])}, saved in {summary['run_dir']}/", markup=False)
