"""Baseline runs: the memoryless and hidden-Markov contrasts, as run directories like any other.

    charlm baseline ngram   corpus ─► prepared (as `charlm train` prepares it) ─► counts
                            (models/ngram) ─► validation ─► best.safetensors
    charlm baseline hmm     corpus ─► prepared ─► EM passes (training/em), each followed by a
                            validation; the best pass ─► best.safetensors, the latest ─►
                            last.safetensors
    charlm baseline window  the loop itself (lm_runs.new_run with the window model)

Every run directory holds config.json, the vocab, metrics.jsonl and a checkpoint of its model's
kind, so `charlm eval`, `sample`, `inspect`, `plot` and `compare` read it as they read a
recurrent model's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from . import __version__
from .errors import CharLMError
from .evaluate import evaluate
from .lm_runs import _new_run_dir, check_within_text
from .models.hmm import HiddenMarkovLM, HMMConfig
from .models.ngram import NgramConfig, NgramLM
from .text.corpus import PreparedCorpus, Progress, open_or_prepare
from .training.em import EMConfig, train_em
from .training.lm_task import VAL_SAMPLE, corpus_record
from .training.run_dir import BEST, LAST, RunDirectory

Report = Callable[[str, dict], None]


@contextmanager
def _baseline_run(corpus: list[Path], out: Path | None, prepare_given: dict,
                  progress: Progress | None, warn, reads_back: tuple[str, int] | None = None):
    """The prepared corpus and a new run directory, locked while the run writes it;
    ``reads_back`` (flag, symbols): how far back the model reads, checked against the text
    first."""
    prepared = open_or_prepare(corpus, prepare_given, progress, warn)
    if prepared.split("train").symbols < 1:
        raise CharLMError("the training split holds no text")
    if reads_back is not None:
        check_within_text(*reads_back, prepared)
    files = RunDirectory(_new_run_dir(corpus, out, prepare_given.get("encoding")))
    files.path.mkdir(parents=True, exist_ok=True)
    files.acquire()
    try:
        if files.holds_run():
            raise CharLMError(f"{files.path} already holds a run")
        files.forget_metrics()
        yield prepared, files
    finally:
        files.release()


def _run_config(model, prepared: PreparedCorpus, train: dict) -> dict:
    return {"charlm_version": __version__, "kind": model.kind, "preset": None,
            "model": model.config.to_dict(), "train": train, **corpus_record(prepared)}


def _validate(model, prepared: PreparedCorpus, limit: int | None = None) -> dict | None:
    if not prepared.has_split("val"):
        return None
    result = evaluate(model, prepared.vocab, prepared.split("val"), limit=limit)
    record = {"val_loss": result["loss_nats"], "val_bpc": result["bpc"]}
    if result["symbols"] < prepared.split("val").symbols:
        record["val_symbols"] = result["symbols"]
    return record


def count_ngram_run(corpus: list[Path], out: Path | None, prepare_given: dict, options: dict,
                    report: Report | None = None, progress: Progress | None = None,
                    warn=None) -> dict:
    """Count an n-gram model of the corpus's training split into a new run directory."""
    report = report or (lambda event, data: None)
    config = NgramConfig.from_given(**options)  # the order checked before any corpus is read
    t0 = time.perf_counter()
    with _baseline_run(corpus, out, prepare_given, progress, warn,
                       ("--order", config.order)) as (prepared, files):
        report("start", {"run_dir": str(files.path), "order": config.order})
        model = NgramLM.count(prepared.split("train").tokens, prepared.vocab, config.order)
        counted = time.perf_counter() - t0
        record = _validate(model, prepared)
        run_config = _run_config(model, prepared, {"order": config.order})
        files.write_run_files(run_config, prepared.vocab)
        elapsed = time.perf_counter() - t0
        files.log({"step": 0, **(record or {}), "best": record is not None,
                   "time": round(elapsed, 3)}, 0)
        files.save(BEST, 0, model, prepared.vocab, run_config,
                   {"step": 0, "elapsed": elapsed, "count_seconds": counted,
                    "best_val": record and record["val_loss"], "time": time.time()}, None)
        summary = {"run_dir": str(files.path), "best": record, "seconds": elapsed,
                   "count_seconds": counted, "ngrams": sum(model.config.ngrams),
                   "order": config.order}
    report("end", summary)
    return summary


def fit_hmm_run(corpus: list[Path], out: Path | None, prepare_given: dict, options: dict,
                report: Report | None = None, progress: Progress | None = None, warn=None,
                stop_requested: Callable[[], bool] = lambda: False) -> dict:
    """Fit an HMM by EM on the corpus's training split into a new run directory: a
    validation after every pass (on a fixed sample of a long split, all of it at the end),
    the best pass kept. ``--max-time`` bounds the whole, validations included: no pass starts
    that the time left cannot hold."""
    report = report or (lambda event, data: None)
    model_options = {k: v for k, v in options.items() if k in HMMConfig.declared()}
    em = EMConfig.from_given(**{k: v for k, v in options.items() if k in EMConfig.declared()})
    t0 = time.perf_counter()
    with _baseline_run(corpus, out, prepare_given, progress, warn) as (prepared, files):
        vocab = prepared.vocab
        model = HiddenMarkovLM(HMMConfig.for_vocab(vocab, **model_options))
        run_config = _run_config(model, prepared, em.to_dict())
        files.write_run_files(run_config, vocab)
        report("start", {"run_dir": str(files.path), "states": model.config.states,
                         "max_iterations": em.max_iterations, "max_time": em.max_time})
        best, status, slowest, record = None, "done", 0.0, None

        def save(which: str, record: dict) -> None:
            files.save(which, record["step"], model, vocab, run_config,
                       {"step": record["step"], "elapsed": record["time"],
                        "best_val": best and best.get("val_loss"), "time": time.time()}, None)
        cycle_began = time.perf_counter()
        for step in train_em(model, prepared.split("train"), em):
            val = _validate(model, prepared, limit=VAL_SAMPLE)
            figure = val["val_loss"] if val else None
            is_best = figure is not None and (best is None or figure < best["val_loss"])
            record = {"step": step["iteration"], "loss": step["train_loss"], **(val or {}),
                      "best": is_best, "time": round(time.perf_counter() - t0, 3)}
            if is_best:
                best = dict(record)
            files.log(record, record["step"])
            if is_best or val is None:
                save(BEST, record)
            save(LAST, record)
            report("iteration", record)
            now = time.perf_counter()  # the longest cycle so far: a pass, its validation
            slowest, cycle_began = max(slowest, now - cycle_began), now  # and saves
            if stop_requested():
                status = "interrupted"
                break
            if em.max_time and time.perf_counter() - t0 + slowest > em.max_time:
                break
        if record is None:
            raise CharLMError("no EM pass fitted in --max-time; give a larger --max-time")
        summary = {"run_dir": str(files.path), "status": status, "iterations": record["step"],
                   "best": best, "seconds": time.perf_counter() - t0,
                   "states": model.config.states}
    report("end", summary)
    return summary
