"""What every command shares: the consoles, the error guard, progress bars, shared options."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from ..errors import CharLMError, ProcessError
from ..training.world import is_main_process, launched_ranks

# Of the processes torchrun starts for one run, the main one alone shows progress, results and
# errors (the others would say the same), except an error of a process's own (ProcessError:
# its GPU, its memory), which that process shows, named by its rank.
_speaks = is_main_process()
err = Console(stderr=True, highlight=False, soft_wrap=True, quiet=not _speaks)
out = Console(highlight=False, quiet=not _speaks)
_errors = Console(stderr=True, highlight=False, soft_wrap=True)
_ERROR_PREFIX = "" if _speaks else f"process {os.environ.get('RANK')}: "

# Options several commands share, declared once.
CheckpointOpt = Annotated[Optional[Path], typer.Option(
    "--checkpoint", help="Run directory (its best checkpoint) or a .safetensors file. Default: "
                         "the most recently trained run under ./checkpoints/.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the results as one JSON object.")]
NprocOpt = Annotated[int, typer.Option(
    "--nproc", min=1, help="Train in this many processes on this machine (each its share of "
                           "the data, gradients averaged: torchrun started for you; for "
                           "several machines run torchrun yourself, without --nproc).")]


def in_processes(nproc: int) -> None:
    """With ``--nproc N`` > 1 (and not already one of torchrun's processes), run this very
    command in N processes and exit with their status."""
    from ..training.launch import launch, without_option

    if nproc > 1 and launched_ranks() == 1:
        raise typer.Exit(launch(nproc, without_option(sys.argv[1:], "--nproc")))


class Streamed:
    """Text written as it comes, passed on at most every FLUSH_SECONDS (and at the end): a
    reader sees it appear live, without a write to the terminal or pipe (and a wake-up of
    its reader) for every character, and without a call into the stream for each either."""

    FLUSH_SECONDS = 0.05

    def __init__(self, stream):
        self.stream, self.pending, self.flushed = stream, [], time.monotonic()

    def write(self, text: str) -> None:
        self.pending.append(text)
        now = time.monotonic()
        if now - self.flushed >= self.FLUSH_SECONDS:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        self.stream.write("".join(self.pending))
        self.stream.flush()
        self.pending.clear()
        self.flushed = time.monotonic() if now is None else now


def warn(message: str):
    err.print(f"warning: {message}", markup=False)


def fail(message: str, code: int = 1, own: bool = False):
    """The error as one line and exit ``code``; off the main process only an error of its
    ``own`` is shown."""
    if _speaks or own:
        _errors.print(f"{_ERROR_PREFIX}[bold red]error:[/] {escape(message)}", markup=True,
                      soft_wrap=True)
    raise typer.Exit(code)


def quiet_stdout():
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


class Guard:
    """Turns charlm errors and OS errors into one line on stderr and exit status 1."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or isinstance(exc, (typer.Exit, SystemExit)):
            return False
        if isinstance(exc, BrokenPipeError):  # e.g. `charlm sample | head`: the reader is done
            quiet_stdout()
            raise typer.Exit(0)
        if isinstance(exc, CharLMError):
            fail(str(exc), own=isinstance(exc, ProcessError))
        if isinstance(exc, KeyboardInterrupt):
            err.print("interrupted")
            raise typer.Exit(130)
        if isinstance(exc, torch.distributed.DistError):  # a peer died or hung
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            fail(f"another process of the run stopped or cannot be reached ({first[:200]}); "
                 f"its last checkpoint is kept: continue with --resume")
        if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and any(
                s in str(exc) for s in ("can't allocate memory", "out of memory"))):
            fail("out of memory; try a smaller model or --batch-size", own=True)
        if isinstance(exc, OSError):
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            fail(f"{where}{exc.strerror or exc}")
        return False


def progress_bar(label: str, threshold: int = 16 << 20):
    """A progress bar that appears only for inputs of at least ``threshold`` units; returns
    (stop, update)."""
    progress = Progress(TextColumn(label), BarColumn(), TaskProgressColumn(),
                        TimeRemainingColumn(), console=err, transient=True)
    task = None

    def update(done: int, total: int):
        nonlocal task
        if total < threshold:
            return
        if task is None:
            progress.start()
            task = progress.add_task(label, total=total)
        progress.update(task, completed=done)

    def stop():
        if task is not None:
            progress.stop()
    return stop, update
