"""The training loop, for any model and task: optimizer, schedule, clipping, non-finite steps,
evaluation and save cadence, stopping rules, exact resume and events.

Nothing here knows what the model reads or predicts: the task (``training.task``) supplies the
batches, their loss and the validation figure. The trainer never prints; it reports through a
callback ``report(event, data)`` so the CLI owns presentation and tests can watch events.
Events: ``start``, ``step``, ``eval``, ``save``, ``skip`` (a non-finite step), ``warning``
(something went wrong that the run goes on without, e.g. curves.png), ``end``.

The run's files are kept by ``training.run_dir``. With several processes (``training.world``,
started by torchrun) each trains on its own share of the data through the model wrapped in
DistributedDataParallel (gradients averaged; the loss scaled so that the average is the
gradient of the loss over all ranks' targets, as one process with all the data would have it),
their figures are summed in ``World``, every decision that rests on the clock is the main
process's, and only the main process writes.

What the loop needs of a model: a ``torch.nn.Module`` with ``kind`` (its name in checkpoints,
see ``charlm.models``), ``config`` (an Options dataclass), the classmethod
``count_parameters(config)``, a ``device`` property and, for ``--precision bf16``,
``compute_in(dtype)`` (a context in which it computes in that dtype).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .. import __version__
from ..checkpoint import Checkpoint, load_checkpoint
from ..devices import COMPUTE_DTYPES, check_fits, resolve_device, resolve_precision
from ..errors import CharLMError, TooLargeToCount
from .config import TrainConfig
from .optim import lr_factor, make_optimizer, unfrozen_from, uses_layer_groups
from .run_dir import BEST, CURVES, LAST, RunDirectory
from .task import Task
from .world import World

Report = Callable[[str, dict], None]

# Under --max-time, validation is held to a share of the budget: a validation during training
# runs only while validating has taken at most VALIDATION_SHARE of the run's time so far (the
# others due are skipped), and the final one scores as much of the validation data as
# FINAL_VALIDATION_SHARE of the budget allows (at least the sample scored during training).
VALIDATION_SHARE = 0.05
FINAL_VALIDATION_SHARE = 0.05
PLOT_SECONDS = 60.0  # curves.png is drawn at an evaluation at most this often (and at the end)
# Sections of a run's config that its setup adds and a resumed run keeps: the model a run
# started from (--init-from), a linear probe's fit.
RECORDED = ("init_from", "probe")
EVAL_SPEEDUP_GUESS = 2.0  # validation's symbols/s over training's, before one is timed (2-3.5x
                          # measured: bench/RESULTS.md section 4)


def rank_seed(seed: int, rank: int) -> int:
    """The random seed of a rank other than the main one (the main keeps the run's seed)."""
    return (seed * 1_000_003 + rank * 7_919) % 2**63


def fresh_model(model_cls: type, model_config, config: TrainConfig) -> nn.Module:
    """A new model for a run: refused before anything is allocated if it cannot fit on the
    device, then initialised from the run's seed and moved there."""
    device = resolve_device(config.device)
    resolve_precision(config.precision, device)  # refuse bf16 where it cannot run, first
    try:
        check_fits(model_cls.count_parameters(model_config), device)
    except TooLargeToCount as exc:
        check_fits(exc.at_least, device, exact=False)
    torch.manual_seed(config.seed)
    return model_cls(model_config).to(device)


@dataclass
class Position:
    """Where training stands; all of it is saved for resuming."""

    step: int = 0            # optimizer steps attempted (skipped non-finite steps included)
    epoch: int = 0
    batch: int = 0           # next batch of the epoch
    elapsed: float = 0.0     # wall-clock seconds of the run so far (setup, steps, validation
                             # and saves; before charlm 0.3 steps only), across resumes
    setup: float = 0.0       # of which setting the run up took (before its first step)
    costs: dict | None = None  # RunCosts as measured so far, for a resumed run's budget
    targets: int = 0         # targets trained on (this process)
    best: dict | None = None  # the best validation record so far
    bad_steps: int = 0       # consecutive non-finite steps
    skipped: int = 0         # non-finite steps in total

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Position:
        """A saved position; a field it lacks (saved by an earlier charlm) has its default."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class RunCosts:
    """What steps, validations and saves have cost so far, for fitting the end of a run into
    --max-time (saved with the position, so a resumed run starts from them)."""

    steps: int = 0
    targets: int = 0
    step_seconds: float = 0.0
    validation_rate: float | None = None  # targets scored per second, the last validation's
    validation_seconds: float = 0.0       # spent validating
    save_seconds: float = 0.5             # the slowest save so far (a guess before the first)
    plot_seconds: float = 1.0             # the slowest curves.png so far (a guess, likewise)

    def trained(self, targets: int, seconds: float) -> None:
        self.steps += 1
        self.targets += targets
        self.step_seconds += seconds

    def training_rate(self) -> float:
        return self.targets / self.step_seconds if self.step_seconds else 0.0

    def step_seconds_each(self) -> float:
        return self.step_seconds / self.steps if self.steps else 0.0

    @classmethod
    def from_dict(cls, d: dict) -> RunCosts:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def validated(self, targets: int, seconds: float) -> None:
        self.validation_seconds += seconds
        if targets and seconds > 0:
            self.validation_rate = targets / seconds


class Trainer:
    """Trains ``model`` (on its device already) on ``task`` into the run directory
    ``run_dir``."""

    def __init__(self, run_dir: Path | RunDirectory, model: nn.Module, task: Task,
                 config: TrainConfig, report: Report | None = None, world: World | None = None,
                 preset: str | None = None, choice: dict | None = None):
        self.world = world or World.current()
        self.files = run_dir if isinstance(run_dir, RunDirectory) else \
            RunDirectory(run_dir, writes=self.world.is_main)
        self.model, self.task = model, task
        self.device = resolve_device(config.device)
        # The run records what "auto" chose, for resuming.
        self.config = replace(config, precision=resolve_precision(config.precision, self.device))
        self.report = report or (lambda event, data: None)
        self.preset = preset  # the preset the run was built from, if any
        self.choice = choice  # how settings were chosen for a time budget (charlm.budget)
        self.recorded: dict = {}  # more sections for the run's config (RECORDED)
        self.stop_requested = False
        self.optimizer = make_optimizer(model, self.config)
        self.pos = Position()
        self.clock = time.perf_counter  # what --max-time is measured by (tests replace it)
        self.costs = RunCosts()
        self._progress_reached = 0.0
        self._plotted_at, self._plot_failed = 0.0, False
        task.start(model, self.world)
        self._ddp, self._ddp_lowest = None, None
        if self.world.size > 1:
            # The same initial weights everywhere (DDP broadcasts rank 0's too), then each
            # rank its own random stream for dropout; rank 0's is the one process's.
            if not self.world.is_main:
                torch.manual_seed(rank_seed(self.config.seed, self.world.rank))

    def _wrap(self, lowest: int) -> None:
        """Wrap the model in DistributedDataParallel (at the first step, and again when
        gradual unfreezing thaws a group below ``lowest``'s: DDP reduces exactly the
        parameters that required a gradient when it was made)."""
        self._ddp = DistributedDataParallel(
            self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            # a learned initial state is used only by the ranks whose chunk starts a document
            find_unused_parameters=bool(getattr(self.model.config, "learn_init_state", False)))
        self._ddp_lowest = lowest

    @property
    def forward_model(self) -> nn.Module:
        """What a training step runs: the model, or its DDP wrapper with several processes."""
        return self._ddp if self._ddp is not None else self.model

    # ----- bookkeeping -------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.files.path

    @property
    def vocab(self):
        return self.task.vocab

    @property
    def compute_dtype(self) -> torch.dtype | None:
        return COMPUTE_DTYPES[self.config.precision]

    @property
    def total_steps(self) -> int | None:
        c = self.config
        limits = []
        if c.max_steps:
            limits.append(c.max_steps)
        if c.epochs:
            limits.append(max(1, math.ceil(min(c.epochs * self.task.batches_per_epoch,
                                               2.0**62))))
        return min(limits) if limits else None

    def progress(self) -> float:
        """How far the run is, 0..1, never going back: by steps, or by the clock with
        --max-time over the time training gets, from the first step (after the run's setup) to
        early enough for the final validation and save to fit in the budget."""
        p = self._progress_reached
        if self.total_steps:
            p = max(p, self.pos.step / self.total_steps)
        if self.config.max_time:
            end = self.config.max_time - self.end_reserve() - self.costs.step_seconds_each()
            p = max(p, (self.pos.elapsed - self.pos.setup) / max(end - self.pos.setup, 1e-9))
        self._progress_reached = p
        return p

    def end_reserve(self) -> float:
        """Seconds the end of the run needs after the last step: the final validation and the
        last saves, as measured so far in this run (estimated before they are), at most half the
        budget."""
        seconds = self.validation_seconds(final=True) + 2 * self.costs.save_seconds + (
            self.costs.plot_seconds if self.config.plot else 0.0)
        return min(seconds, 0.5 * (self.config.max_time or math.inf))

    def validation_rate(self) -> float:
        """Targets a validation scores per second: measured, else guessed from training."""
        return self.costs.validation_rate or EVAL_SPEEDUP_GUESS * self.costs.training_rate()

    def validation_size(self, final: bool) -> int:
        """Targets a validation scores: the task's sample during training; at the end all, or
        under --max-time what its share of the budget allows (at least the sample)."""
        sample = self.task.validation_size(final=False)
        if not final:
            return sample
        size = self.task.validation_size(final=True)
        if self.config.max_time:
            fits = int(FINAL_VALIDATION_SHARE * self.config.max_time * self.validation_rate())
            size = min(size, max(fits, sample))
        return size

    def validation_seconds(self, final: bool) -> float:
        size = self.validation_size(final)
        rate = self.validation_rate()
        return size / rate if size and rate else 0.0

    def validation_due(self) -> bool:
        """Whether a validation during training may run now (see VALIDATION_SHARE)."""
        if not self.config.max_time:
            return True
        seconds = self.validation_seconds(final=False)
        return (self.costs.validation_seconds + seconds
                <= VALIDATION_SHARE * (self.pos.elapsed + seconds)) \
            and self.leaves_room_for(seconds + 2 * self.costs.save_seconds)

    def leaves_room_for(self, seconds: float) -> bool:
        """Whether work of ``seconds`` now still leaves the end of the run inside --max-time
        (always, without one)."""
        if not self.config.max_time:
            return True
        return self.pos.elapsed + seconds + self.end_reserve() <= self.config.max_time

    def finished(self) -> bool:
        if self.total_steps is None and not self.config.max_time:
            return self.pos.epoch >= 1  # nothing said: one epoch
        return self.progress() >= 1.0

    def best_figure(self) -> float | None:
        return self.task.selection_figure(self.pos.best) if self.pos.best else None

    def run_config(self) -> dict:
        return {
            "charlm_version": __version__,
            "kind": self.model.kind,
            "preset": self.preset,
            **({"auto": self.choice} if self.choice else {}),
            "model": self.model.config.to_dict(),
            "train": {**self.config.to_dict(), **self.task.config.to_dict()},
            **self.task.data_config(),
            **self.task.describe(),
            **self.recorded,
        }

    def trainer_state(self) -> dict:
        """Everything a resume needs; with several processes (a collective: every rank calls
        it) the task's state of all ranks and every rank's random state."""
        state = {"loop": self.pos.to_dict(), "task": self.task.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "rng": torch.get_rng_state()}
        cuda = self.device.type == "cuda"
        if cuda:
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if self.world.size > 1:
            state["world_size"] = self.world.size
            state["rng_ranks"] = self.world.gather(torch.get_rng_state())
            if cuda:
                state["cuda_rng_ranks"] = self.world.gather(
                    torch.cuda.get_rng_state(self.device).cpu())
        return state

    def load_trainer_state(self, state: dict) -> None:
        self.task.load_state_dict(state["task"])
        self.pos = Position.from_dict(state["loop"])
        if isinstance(self.pos.costs, dict):
            self.costs = RunCosts.from_dict(self.pos.costs)
        self.optimizer.load_state_dict(state["optimizer"])
        rank, size = self.world.rank, self.world.size
        if state.get("world_size", 1) == size:  # each rank goes on with its own stream
            rng = state["rng_ranks"][rank] if size > 1 else state["rng"]
            cuda_rng = state["cuda_rng_ranks"][rank] if size > 1 and "cuda_rng_ranks" in state \
                else state.get("cuda_rng")
        elif rank == 0:  # another number of processes: the lanes are shared anew (the task),
            rng, cuda_rng = state["rng"], state.get("cuda_rng")  # the streams cannot be
        else:
            rng = cuda_rng = None
        if rng is not None:
            torch.set_rng_state(rng)
        else:  # ... so the other ranks take new ones: a resume, not a bitwise continuation
            torch.manual_seed(rank_seed(self.config.seed + self.pos.step, rank))
        if cuda_rng is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(cuda_rng, self.device)

    def save(self, which: str) -> Path:
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            raise CharLMError(f"training stopped at step {self.pos.step}: the weights are no "
                              f"longer finite numbers; the last good checkpoint is kept; try a "
                              f"lower --lr")
        t0 = self.clock()
        self.pos.costs = asdict(self.costs)
        info = {"step": self.pos.step, "epoch": self.pos.epoch, "best_val": self.best_figure(),
                "elapsed": self.pos.elapsed, "time": time.time()}
        path = self.files.save(which, self.pos.step, self.model, self.vocab, self.run_config(),
                               info, self.trainer_state() if which == LAST else None)
        self.costs.save_seconds = max(self.costs.save_seconds, self.clock() - t0)
        self.report("save", {"path": str(path), "which": which, "step": self.pos.step})
        return path

    def log(self, record: dict) -> None:
        self.files.log(record, self.pos.step)

    def write_run_files(self) -> None:
        self.files.write_run_files(self.run_config(), self.vocab)

    @classmethod
    def resume(cls, run_dir: Path, make_task: Callable[[Checkpoint], Task],
               overrides: dict, report: Report | None = None,
               world: World | None = None) -> Trainer:
        """Rebuild a trainer from ``run_dir/last.safetensors``; ``make_task(checkpoint)`` gives
        the task back. ``overrides`` may change only the options declared resumable (weights,
        optimizer and carried state are float32 whatever the precision; a resume is bitwise
        equal to an uninterrupted run only with the same precision)."""
        world = world or World.current()
        files = RunDirectory(run_dir, writes=world.is_main)
        files.acquire()  # first: the checkpoint read below is the one this run continues
        try:
            trainer = cls._resumed(files, make_task, overrides, report, world)
        except BaseException:
            files.release()
            raise
        # Lines logged after the checkpoint was written are replayed by the resumed run.
        files.keep_metrics_up_to(trainer.pos.step)
        return trainer

    @classmethod
    def _resumed(cls, files: RunDirectory, make_task, overrides: dict, report: Report | None,
                 world: World) -> Trainer:
        path = files / LAST
        ckpt = load_checkpoint(path, with_trainer=True)
        if ckpt.trainer_state is None:
            raise CharLMError(f"{files.path}: checkpoint has no trainer state to resume from")
        try:
            config = TrainConfig.from_dict(ckpt.run_config["train"])
        except (KeyError, TypeError) as exc:
            raise CharLMError(f"{path}: the run's training config is damaged "
                              f"({type(exc).__name__}: {exc})") from None
        config = config.resumed_with(**overrides)
        try:
            device = resolve_device(config.device)
        except CharLMError as exc:  # e.g. a run started on a GPU, resumed on a CPU machine
            raise CharLMError(f"{exc} (the run was started with --device {config.device}); "
                              f"give --device cpu or auto to continue it here") from None
        task = make_task(ckpt)
        trainer = cls(files, ckpt.model.to(device), task, config, report, world,
                      preset=ckpt.run_config.get("preset"), choice=ckpt.run_config.get("auto"))
        trainer.recorded = {k: ckpt.run_config[k] for k in RECORDED if k in ckpt.run_config}
        try:
            trainer.load_trainer_state(ckpt.trainer_state)
        except CharLMError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise CharLMError(f"{path}: the trainer state is damaged "
                              f"({type(exc).__name__}: {first})") from None
        trainer.check_not_finished()
        return trainer

    # ----- the loop ----------------------------------------------------------------------------
    def validate(self, final: bool = False) -> dict | None:
        t0 = self.clock()
        size = self.validation_size(final)
        record = self.task.validate(self.model, final=final,
                                    limit=size if final and self.config.max_time else None)
        if record is None:
            return None
        self.costs.validated(size, self.clock() - t0)
        figure, before = self.task.selection_figure(record), self.best_figure()
        best = math.isfinite(figure) and (before is None or (
            figure > before if self.task.higher_is_better else figure < before))
        if best:
            self.pos.best = dict(record)
        record = {"step": self.pos.step, **record, "best": best,
                  "time": round(self.pos.elapsed, 3)}
        self.log(record)
        self.report("eval", record)
        if best:
            if not self._has_last():
                self.save(LAST)  # so a run never has a best checkpoint but nothing to resume
            self.save(BEST)
        if not final:
            self.draw_curves(final=False)
        return record

    def draw_curves(self, final: bool) -> None:
        """curves.png of the run (``--plot``): at the end, and at an evaluation when the last
        was drawn PLOT_SECONDS ago or more. A figure that cannot be written is reported once
        and the run goes on."""
        if not (self.config.plot and self.files.writes) or self._plot_failed \
                or self.pos.step == 0:
            return
        if not final and self.pos.elapsed - self._plotted_at < PLOT_SECONDS:
            return
        t0 = self.clock()
        try:
            self.files.draw_curves()
            self.costs.plot_seconds = max(self.costs.plot_seconds, self.clock() - t0)
        except (OSError, CharLMError, ImportError, ValueError) as exc:
            # Drawn no more; its cost leaves the end reserve (costs are shared by all ranks,
            # so every rank's stopping decision stays the same).
            self._plot_failed, self.costs.plot_seconds = True, 0.0
            goes_on = "" if final else "; training goes on"
            self.report("warning", {"message": f"could not draw {self.files / CURVES}: "
                                               f"{exc}{goes_on}"})
        self._plotted_at = self.pos.elapsed

    def train_step(self) -> dict:
        c, pos = self.config, self.pos
        # Warmup never takes more than a tenth of a run of known length.
        warmup = min(c.warmup_steps, self.total_steps // 10) if self.total_steps else None
        progress = self.progress()
        lr = c.lr * lr_factor(c, pos.step, progress, warmup)
        lowest = unfrozen_from(c, self.model, progress, pos.epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
            if uses_layer_groups(c):  # gradual unfreezing: groups below ``lowest`` wait
                for p in group["params"]:
                    p.requires_grad_(group["layer"] >= lowest)
        if self.world.size > 1 and lowest != self._ddp_lowest:
            self._wrap(lowest)
        dtype = self.compute_dtype
        with self.model.compute_in(dtype) if dtype is not None else nullcontext():
            total, count = self.task.train_loss(self.forward_model, pos.epoch, pos.batch)
        if self.world.size > 1:
            # DDP averages the ranks' gradients: each scales its sum by the targets of all
            # ranks (times their number), so the average is the gradient of the mean loss.
            summed, count = self.world.sum(float(total.detach()), count)
            count = int(count)
            loss = total * (self.world.size / max(count, 1))
            loss_value = summed / max(count, 1)
        else:
            loss = total / max(count, 1)
            loss_value = None
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = c.clip_norm if c.clip_norm > 0 else float("inf")
        if c.clip_value > 0:
            # The norm before any clipping: what is logged, and what tells a step whose
            # gradient overflowed (clipping by value would hide an infinite element).
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
            torch.nn.utils.clip_grad_value_(params, c.clip_value)
            if c.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, max_norm)
        else:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)  # norm before clipping
        loss_value = float(loss.detach()) if loss_value is None else loss_value
        norm_value = float(grad_norm)
        # The same on every rank: the loss is summed over them, the gradients averaged.
        finite = math.isfinite(loss_value) and math.isfinite(norm_value)
        if finite:
            self.optimizer.step()
            pos.bad_steps = 0
        else:
            self.optimizer.zero_grad(set_to_none=True)
            pos.bad_steps += 1
            pos.skipped += 1
        self.task.end_step(finite)
        pos.step += 1
        pos.targets += count
        pos.batch += 1
        if pos.batch >= self.task.batches_per_epoch:
            pos.batch = 0
            pos.epoch += 1
        return {"step": pos.step, "loss": loss_value, "lr": lr, "grad_norm": norm_value,
                "targets": count, "finite": finite}

    def _has_last(self) -> bool:
        """Whether the run has a last checkpoint, as the main process sees it (saving one is
        a collective: every rank must decide alike)."""
        return self.world.from_main((self.files / LAST).exists())

    def _agree_on_time(self) -> None:
        """Every rank takes the main process's clock and costs, so that every decision that
        rests on them (the schedule's progress, stopping, validating, saving) is the same on
        all ranks and none waits for a collective the others never enter."""
        if self.world.size > 1:
            self.pos.elapsed, self.pos.setup, self.costs = self.world.from_main(
                (self.pos.elapsed, self.pos.setup, self.costs))

    def check_not_finished(self) -> None:
        if self.pos.step > 0 and self.finished():
            raise CharLMError(f"nothing to do: the run is at step {self.pos.step}, already past "
                              f"its stopping rule; give a larger --max-steps, --epochs or "
                              f"--max-time")

    def run(self) -> dict:
        """Train until a stopping rule or a stop request; returns a summary."""
        self.check_not_finished()
        self.files.acquire()
        try:
            if self.world.any(self.pos.step == 0 and self.world.is_main
                              and self.files.holds_run()):
                raise CharLMError(f"{self.run_dir} already holds a run (written since this one "
                                  f"was set up); continue it with --resume {self.run_dir}")
            return self._run()
        finally:
            self.files.release()

    def _run(self) -> dict:
        if self.pos.step == 0:  # a new run: lines a run killed before its first save logged
            self.files.forget_metrics()
        self.write_run_files()
        self.model.train()
        self.report("start", {"step": self.pos.step, "preset": self.preset,
                              "choice": self.choice,
                              "total_steps": self.total_steps,
                              "max_time": self.config.max_time, "device": str(self.device),
                              "processes": self.world.size,
                              "parameters": sum(p.numel() for p in self.model.parameters()),
                              **self.task.describe()})
        c = self.config
        rate_key = f"{self.task.count_name}_per_s"
        status = "done"
        last_saved = self.pos.step
        evaluated_at = None
        clock = self.clock()

        def tick() -> None:  # the wall clock since the last tick, into the run's elapsed time
            nonlocal clock
            now = self.clock()
            self.pos.elapsed += now - clock
            clock = now
            self._agree_on_time()
        self._agree_on_time()
        while not self.finished():
            if self.world.any(self.stop_requested):
                status = "interrupted"
                break
            t0 = self.clock()
            out = self.train_step()
            dt = max(self.clock() - t0, 1e-9)
            self.costs.trained(out["targets"], dt)
            tick()
            record = {"step": out["step"], "loss": out["loss"], "lr": out["lr"],
                      "grad_norm": out["grad_norm"], rate_key: out["targets"] / dt,
                      "time": round(self.pos.elapsed, 3)}
            if not out["finite"]:
                record["skipped"] = True
                self.report("skip", {"step": out["step"], "bad_steps": self.pos.bad_steps})
                if self.pos.bad_steps >= c.max_bad_steps:
                    self.log(record)
                    n = c.max_bad_steps
                    raise CharLMError(
                        f"training stopped: {n} non-finite step{'s' if n > 1 else ''} in a row "
                        f"at step {out['step']} (loss or gradient norm not a finite number); "
                        f"{self.files.kept_checkpoint()}; start a new run with a lower --lr")
            self.log(record)
            self.report("step", {**record, "progress": self.progress(),
                                 "epoch": self.pos.epoch, "total_steps": self.total_steps})
            # A validation or save due when the budget has no room for it is left to the end.
            if self.pos.step % c.eval_every == 0 and not self.finished() \
                    and self.validation_due():
                self.validate()
                evaluated_at = self.pos.step
                tick()
            if self.pos.step % c.save_every == 0 and self.leaves_room_for(self.costs.save_seconds):
                self.save(LAST)
                last_saved = self.pos.step
                tick()
        if status == "done" and (evaluated_at != self.pos.step
                                 or self.validation_size(False) < self.validation_size(True)):
            self.validate(final=True)  # the final figure (see validation_size)
            tick()
        if last_saved != self.pos.step or not self._has_last():
            self.save(LAST)
        if not (self.files / BEST).exists():
            self.save(BEST)  # no validation split: the final weights are the best we know
        self.draw_curves(final=True)
        tick()
        summary = {"status": status, "step": self.pos.step, "epoch": self.pos.epoch,
                   "elapsed": self.pos.elapsed, "best": self.pos.best,
                   "run_dir": str(self.run_dir)}
        self.report("end", summary)
        return summary
