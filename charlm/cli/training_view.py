"""What every training command shows and does while a trainer runs: the progress bar, the
validation lines, and Ctrl-C / SIGTERM (save at the end of the step, then exit 130 / 143)."""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Callable

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from ..training.launch import LAUNCHED_BY
from ..training.world import launched_ranks
from .common import err


def start_words(data: dict) -> str:
    """How a training command's first line begins, from the start event: a new run or one
    resumed, and where it trains (the device, or the processes and the main one's device)."""
    n = data.get("processes", 1)
    where = data["device"] if n == 1 else f"{n} processes (the main one on {data['device']})"
    step = data.get("step", 0)
    return f"resuming at step {step:,} on {where}" if step else f"training on {where}"


def fmt_rate(x: float) -> str:
    return f"{x / 1000:.1f}k" if x >= 1000 else f"{x:.0f}"


class TrainView:
    """Renders trainer events: a progress bar on stderr, validation lines, save notices.
    ``start_line(data)`` words the start event; ``eval_line(data)`` gives a validation's line
    and its short figure for the bar; ``rate_unit`` names what the rate counts."""

    def __init__(self, start_line: Callable[[dict], str],
                 eval_line: Callable[[dict], tuple[str, str]], rate_unit: str = "chars"):
        self.start_line, self.eval_line = start_line, eval_line
        self.progress = Progress(
            TextColumn("step {task.fields[step]}"), BarColumn(), TaskProgressColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("val {task.fields[val]}"),
            TextColumn(f"{{task.fields[rate]}} {rate_unit}/s"), TextColumn("ETA"),
            TimeRemainingColumn(), console=err, transient=False)
        self.task = None
        self.smooth = None
        self.rate = None
        self.val = "-"

    def __call__(self, event: str, data: dict):
        if event == "start":
            err.print(self.start_line(data), markup=False)
            self.progress.start()
            self.task = self.progress.add_task("train", total=1000, step=data["step"], loss="-",
                                               val="-", rate="-")
        elif event == "step":
            loss = data["loss"]
            if math.isfinite(loss):
                self.smooth = loss if self.smooth is None else 0.95 * self.smooth + 0.05 * loss
            r = next(v for k, v in data.items() if k.endswith("_per_s"))
            self.rate = r if self.rate is None else 0.9 * self.rate + 0.1 * r
            self.progress.update(self.task, completed=min(data["progress"], 1.0) * 1000,
                                 step=f"{data['step']:,}", loss=f"{self.smooth:.3f}"
                                 if self.smooth is not None else "-",
                                 val=self.val, rate=fmt_rate(self.rate))
        elif event == "eval":
            line, self.val = self.eval_line(data)
            star = " (best)" if data["best"] else ""
            self.progress.console.print(f"step {data['step']:>6,}  {line}{star}", markup=False)
            if self.task is not None:
                self.progress.update(self.task, val=self.val)
        elif event == "skip":
            self.progress.console.print(f"step {data['step']}: non-finite loss or gradient, "
                                        f"step skipped ({data['bad_steps']} in a row)")
        elif event == "warning":
            self.progress.console.print(f"warning: {data['message']}", markup=False)
        elif event == "end":
            self.stop()

    def stop(self):
        if self.task is not None:
            self.progress.stop()


def launched_as(command: str) -> str:
    """``command`` (``charlm ...``) as this process was started: under torchrun, by it."""
    ranks = launched_ranks()
    if ranks == 1:
        return command
    if os.environ.get(LAUNCHED_BY) == str(ranks):
        return f"{command} --nproc {ranks}"
    if os.environ.get("LOCAL_WORLD_SIZE") == str(ranks):  # one machine
        return f"torchrun --standalone --nproc_per_node {ranks} -m {command}"
    return f"torchrun (as started, on every machine) -m {command}"


def run_trainer(trainer, view: TrainView, resume_command: str = "charlm train") -> dict:
    """``trainer.run()`` with Ctrl-C and SIGTERM asking it to save at the end of the step; an
    interrupted run says how to continue it and exits with 128 + the signal."""
    stopped_by = []

    def request_stop(signum, frame):
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
    if summary["status"] == "interrupted":
        run_dir = summary["run_dir"]
        err.print(f"interrupted at step {summary['step']:,}: saved {run_dir}/last.safetensors; "
                  f"continue with: {launched_as(resume_command)} --resume {run_dir}",
                  markup=False)
        raise typer.Exit(128 + (stopped_by[0] if stopped_by else signal.SIGINT))
    return summary
