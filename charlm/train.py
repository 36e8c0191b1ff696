"""The training loop: truncated BPTT over lanes, clipping, schedule, evaluation, checkpoints.

The trainer never prints. It reports through a callback ``report(event, data)`` so the CLI owns
presentation and tests can watch events. Events: ``start``, ``step``, ``eval``, ``save``,
``skip`` (a non-finite step), ``end``.

A run directory holds:

    config.json        model, training and corpus settings (for people; checkpoints carry their own)
    vocab.json         the vocab (tokenizer.json for BPE)
    last.safetensors   latest weights + trainer state for --resume
    best.safetensors   weights with the best validation loss so far
    metrics.jsonl      one JSON object per step / evaluation
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from . import __version__
from .batching import LaneLayout
from .checkpoint import atomic_write, load_checkpoint, save_checkpoint
from .config import DEVICES, TrainConfig
from .corpus import PreparedCorpus
from .errors import CharLMError
from .evaluate import evaluate
from .model import COMPUTE_DTYPES, CharRNN, ModelConfig, loss_sum
from .runlock import RunLock

Report = Callable[[str, dict], None]
LAST, BEST, CONFIG, METRICS = "last.safetensors", "best.safetensors", "config.json", "metrics.jsonl"


def resolve_device(name: str) -> torch.device:
    if name not in DEVICES:
        raise CharLMError(f"--device must be one of {', '.join(DEVICES)}, not {name!r}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CharLMError("--device cuda: no CUDA device is available")
    if name == "mps" and not (getattr(torch.backends, "mps", None)
                              and torch.backends.mps.is_available()):
        raise CharLMError("--device mps: no MPS device is available")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 products in hardware (on CPU: AVX512-BF16 or AMX);
    elsewhere bf16 is emulated and slower than float32."""
    if device.type != "cpu":
        return False  # GPUs: not measured yet, so float32
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def device_memory(device: torch.device) -> int | None:
    """Bytes of memory on ``device`` (None where it cannot be told)."""
    try:
        if device.type == "cuda":
            return torch.cuda.get_device_properties(device).total_memory
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError, RuntimeError):
        return None


def check_fits(config: ModelConfig, device: torch.device) -> None:
    """Refuse, before allocating anything, a model whose weights, gradients and two optimizer
    moments (4 float32 copies) would not fit in the device's memory."""
    n = config.num_parameters()
    need, have = 16 * n, device_memory(device)
    if have is not None and need > have:
        raise CharLMError(f"a model of {n:,} parameters needs about {need / 2**30:,.1f} GiB to "
                          f"train (weights, gradients, optimizer state) but the {device.type} "
                          f"has {have / 2**30:,.1f} GiB; use a smaller --hidden, --layers or "
                          f"--embed")


def make_optimizer(model: CharRNN, cfg: TrainConfig) -> torch.optim.Optimizer:
    # Weight decay applies to weight matrices only; biases and a learned initial state are
    # left alone.
    def decays(name, p):
        return p.dim() >= 2 and not name.startswith("init_state")
    decay = [p for n, p in model.named_parameters() if decays(n, p)]
    no_decay = [p for n, p in model.named_parameters() if not decays(n, p)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99))
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=(0.9, 0.99))
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=0.99, momentum=cfg.momentum)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def lr_factor(cfg: TrainConfig, step: int, progress: float, warmup: int | None = None) -> float:
    """Linear warmup over ``warmup`` steps (default ``cfg.warmup_steps``), then decay over the
    run's progress (0..1)."""
    warmup = cfg.warmup_steps if warmup is None else warmup
    warm = min(1.0, (step + 1) / warmup) if warmup else 1.0
    p = min(max(progress, 0.0), 1.0)
    floor = cfg.min_lr_ratio
    if cfg.schedule == "cosine":
        decay = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))
    elif cfg.schedule == "linear":
        decay = 1 - (1 - floor) * p
    else:
        decay = 1.0
    return warm * decay


@dataclass
class Position:
    """Where training stands; all of it is saved for resuming."""

    step: int = 0            # optimizer steps attempted (skipped non-finite steps included)
    epoch: int = 0
    chunk: int = 0           # next chunk of the epoch
    elapsed: float = 0.0     # seconds of training so far, across resumes
    symbols: int = 0         # targets trained on
    best_val: float = math.inf
    best_bpc: float = math.inf
    bad_steps: int = 0       # consecutive non-finite steps
    skipped: int = 0         # non-finite steps in total


class Trainer:
    """Trains one run directory from a prepared corpus."""

    def __init__(self, run_dir: Path, corpus: PreparedCorpus, model_config: ModelConfig,
                 config: TrainConfig, report: Report | None = None):
        self.run_dir = Path(run_dir)
        self.corpus = corpus
        self.vocab = corpus.vocab
        self.config = config
        self.report = report or (lambda event, data: None)
        self.device = resolve_device(config.device)
        self.stop_requested = False
        self.lock = RunLock(self.run_dir)  # taken by run() (by resume() before it writes)
        self.preset: str | None = None  # the preset the run was built from, if any
        if model_config.vocab_size != self.vocab.size:
            raise CharLMError(f"model vocab size {model_config.vocab_size} does not match the "
                              f"corpus vocab ({self.vocab.size})")
        self.train_split = corpus.split("train")
        self.val_split = corpus.split("val") if corpus.has_split("val") else None
        if self.train_split.symbols < config.bptt_len + 1:
            raise CharLMError(
                f"training text is shorter than one chunk: {self.train_split.symbols} symbols, "
                f"--bptt {config.bptt_len} needs at least {config.bptt_len + 1}; use a longer "
                f"corpus or a smaller --bptt")
        lanes = min(config.batch_size, max(1, self.train_split.symbols // config.bptt_len))
        self.layout = LaneLayout(self.train_split.tokens, self.train_split.doc_starts, lanes,
                                 config.bptt_len, self.vocab.eod_id)
        if config.precision == "auto":  # the run records what "auto" chose, for resuming
            chosen = "bf16" if native_bf16(self.device) else "fp32"
            config = self.config = replace(config, precision=chosen)
        if config.precision == "bf16" and self.device.type not in ("cpu", "cuda"):
            raise CharLMError(f"--precision bf16 is not supported on {self.device.type}; "
                              f"use --precision fp32 (or auto)")
        check_fits(model_config, self.device)
        torch.manual_seed(config.seed)
        self.model = CharRNN(model_config).to(self.device)
        self.optimizer = make_optimizer(self.model, config)
        self.pos = Position()
        self.lane_state = self.model.initial_state(self.layout.num_lanes)

    # ----- bookkeeping -------------------------------------------------------------------
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
            limits.append(max(1, math.ceil(min(c.epochs * self.layout.chunks_per_epoch,
                                               2.0**62))))
        return min(limits) if limits else None

    def progress(self) -> float:
        p = 0.0
        if self.total_steps:
            p = max(p, self.pos.step / self.total_steps)
        if self.config.max_time:
            p = max(p, self.pos.elapsed / self.config.max_time)
        return p

    def finished(self) -> bool:
        if self.total_steps is None and not self.config.max_time:
            return self.pos.epoch >= 1  # nothing said: one epoch
        return self.progress() >= 1.0

    def run_config(self) -> dict:
        meta = self.corpus.meta
        return {
            "charlm_version": __version__,
            "preset": self.preset,
            "model": self.model.config.to_dict(),
            "train": self.config.to_dict(),
            "corpus": {
                "path": str(self.corpus.path.resolve()),
                "vocab": meta["vocab"],
                "doc_separator": meta.get("doc_separator"),
                "val_fraction": meta.get("val_fraction"),
                "sources": meta.get("sources", []),
                "splits": {k: {kk: v[kk] for kk in ("symbols", "documents", "chars")}
                           for k, v in meta["splits"].items()},
            },
            "lanes": self.layout.num_lanes,
            "chunks_per_epoch": self.layout.chunks_per_epoch,
        }

    def trainer_state(self) -> dict:
        p = self.pos
        state = {
            "step": p.step, "epoch": p.epoch, "chunk": p.chunk, "elapsed": p.elapsed,
            "symbols": p.symbols, "best_val": p.best_val if math.isfinite(p.best_val) else None,
            "best_bpc": p.best_bpc if math.isfinite(p.best_bpc) else None,
            "bad_steps": p.bad_steps, "skipped": p.skipped,
            "lanes": self.layout.num_lanes, "bptt_len": self.config.bptt_len,
            "lane_state": tuple(s.detach().cpu() for s in self.lane_state),
            "optimizer": self.optimizer.state_dict(),
            "rng": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_trainer_state(self, state: dict) -> None:
        if state["lanes"] != self.layout.num_lanes or state["bptt_len"] != self.config.bptt_len:
            raise CharLMError("cannot resume: the lane layout differs from the checkpoint's "
                              "(--batch-size and --bptt cannot change on resume)")
        self.pos = Position(step=state["step"], epoch=state["epoch"], chunk=state["chunk"],
                            elapsed=state["elapsed"], symbols=state["symbols"],
                            best_val=math.inf if state["best_val"] is None else state["best_val"],
                            best_bpc=math.inf if state.get("best_bpc") is None
                            else state["best_bpc"],
                            bad_steps=state["bad_steps"], skipped=state["skipped"])
        self.lane_state = tuple(s.to(self.device) for s in state["lane_state"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)

    def save(self, which: str) -> Path:
        path = self.run_dir / which
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            raise CharLMError(f"training stopped at step {self.pos.step}: the weights are no "
                              f"longer finite numbers; the last good checkpoint is kept; try a "
                              f"lower --lr")
        info = {"step": self.pos.step, "epoch": self.pos.epoch,
                "best_val": self.pos.best_val if math.isfinite(self.pos.best_val) else None,
                "elapsed": self.pos.elapsed, "time": time.time()}
        if which == LAST:
            self._sync_metrics()  # the log on disk reaches at least the checkpoint's step
        try:
            save_checkpoint(path, self.model, self.vocab, self.run_config(), info,
                            self.trainer_state() if which == LAST else None)
        except OSError as exc:  # disk full, permissions...: the write went to a temp file
            kept = "the previous one is kept" if path.exists() else "nothing was written"
            raise CharLMError(f"could not save {path} at step {self.pos.step} "
                              f"({exc.strerror or exc}); {kept}") from None
        self.report("save", {"path": str(path), "which": which, "step": self.pos.step})
        return path

    def log(self, record: dict) -> None:
        path = self.run_dir / METRICS
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise CharLMError(f"could not write {path} at step {self.pos.step} "
                              f"({exc.strerror or exc}); {self.kept_checkpoint()}") from None

    def _sync_metrics(self) -> None:
        try:
            fd = os.open(self.run_dir / METRICS, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def kept_checkpoint(self) -> str:
        """What a user still has on disk, for error messages."""
        path = self.run_dir / LAST
        try:
            step = load_checkpoint(path).info.get("step")
        except CharLMError:
            return "no checkpoint has been written yet"
        return f"the last checkpoint ({path}, step {step}) is kept"

    def write_run_files(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.run_dir / CONFIG,
                     json.dumps(self.run_config(), indent=2, ensure_ascii=False).encode())
        name = "vocab.json" if self.vocab.kind == "char" else "tokenizer.json"
        atomic_write(self.run_dir / name, self.vocab.to_json().encode())

    @classmethod
    def resume(cls, run_dir: Path, corpus: PreparedCorpus, overrides: dict,
               report: Report | None = None) -> Trainer:
        """Rebuild a trainer from ``run_dir/last.safetensors``; ``overrides`` may change only
        the stopping, evaluation and saving options, the device and the precision (weights,
        optimizer and carried state are float32 whatever the precision; a resume is bitwise
        equal to an uninterrupted run only with the same precision)."""
        lock = RunLock(Path(run_dir))
        lock.acquire()  # first: the checkpoint read below is the one this run continues
        try:
            trainer = cls._resumed(run_dir, corpus, overrides, report)
        except BaseException:
            lock.release()
            raise
        trainer.lock = lock
        # Lines logged after the checkpoint was written are replayed by the resumed run; a
        # line cut short by a crash is dropped with them.
        metrics = Path(run_dir) / METRICS
        if metrics.exists():
            kept = []
            for line in metrics.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and record.get("step", 0) <= trainer.pos.step:
                    kept.append(line)
            atomic_write(metrics, "".join(line + "\n" for line in kept).encode())
        return trainer

    @classmethod
    def _resumed(cls, run_dir: Path, corpus: PreparedCorpus, overrides: dict,
                 report: Report | None) -> Trainer:
        ckpt = load_checkpoint(Path(run_dir) / LAST, with_trainer=True)
        if ckpt.trainer_state is None:
            raise CharLMError(f"{run_dir}: checkpoint has no trainer state to resume from")
        try:
            config = TrainConfig.from_dict(ckpt.run_config["train"])
        except (KeyError, TypeError) as exc:
            raise CharLMError(f"{run_dir}/{LAST}: the run's training config is damaged "
                              f"({type(exc).__name__}: {exc})") from None
        if any(overrides.get(k) is not None for k in ("max_steps", "epochs", "max_time")):
            # A stopping rule given on resume replaces the saved one as a whole.
            config = replace(config, max_steps=None, epochs=None, max_time=None)
        config = config.with_options(**overrides)
        try:
            resolve_device(config.device)
        except CharLMError as exc:  # e.g. a run started on a GPU, resumed on a CPU machine
            raise CharLMError(f"{exc} (the run was started with --device {config.device}); "
                              f"give --device cpu or auto to continue it here") from None
        trainer = cls(run_dir, corpus, ckpt.model.config, config, report)
        trainer.preset = ckpt.run_config.get("preset")
        trainer.model.load_state_dict(ckpt.model.state_dict())
        try:
            trainer.load_trainer_state(ckpt.trainer_state)
        except CharLMError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise CharLMError(f"{run_dir}/{LAST}: the trainer state is damaged "
                              f"({type(exc).__name__}: {first})") from None
        trainer.check_not_finished()
        return trainer

    # ----- the loop ------------------------------------------------------------------------
    def validate(self) -> dict | None:
        if self.val_split is None:
            return None
        c = self.config
        result = evaluate(self.model, self.vocab, self.val_split, lanes=c.eval_lanes,
                          bptt_len=256, burn_in=c.eval_burn_in, device=self.device)
        best = result["loss_nats"] < self.pos.best_val
        if best:
            self.pos.best_val = result["loss_nats"]
            self.pos.best_bpc = result["bpc"]
        record = {"step": self.pos.step, "val_loss": result["loss_nats"], "val_bpc": result["bpc"],
                  "best": best, "time": round(self.pos.elapsed, 3)}
        self.log(record)
        self.report("eval", record)
        if best:
            if not (self.run_dir / LAST).exists():
                self.save(LAST)  # so a run never has a best checkpoint but nothing to resume
            self.save(BEST)
        return result

    def train_step(self) -> dict:
        c, pos = self.config, self.pos
        batch = self.layout.batch(pos.chunk)
        x = torch.from_numpy(batch.inputs).to(self.device, non_blocking=True)
        y = torch.from_numpy(batch.targets).to(self.device, non_blocking=True)
        reset = torch.from_numpy(batch.reset).to(self.device, non_blocking=True)
        # Warmup never takes more than a tenth of a run of known length.
        warmup = min(c.warmup_steps, self.total_steps // 10) if self.total_steps else None
        lr = c.lr * lr_factor(c, pos.step, self.progress(), warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self.model.compute_in(self.compute_dtype):
            logits, state = self.model(x, self.lane_state, reset)
        total, count = loss_sum(logits, y)
        loss = total / max(count, 1)
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
        loss_value, norm_value = float(loss.detach()), float(grad_norm)
        finite = math.isfinite(loss_value) and math.isfinite(norm_value)
        if finite:
            self.optimizer.step()
            pos.bad_steps = 0
        else:
            self.optimizer.zero_grad(set_to_none=True)
            pos.bad_steps += 1
            pos.skipped += 1
        self.lane_state = CharRNN.detach_state(state) if finite else self.lane_state
        pos.step += 1
        pos.symbols += count
        pos.chunk += 1
        if pos.chunk >= self.layout.chunks_per_epoch:
            pos.chunk = 0
            pos.epoch += 1
        return {"step": pos.step, "loss": loss_value, "lr": lr, "grad_norm": norm_value,
                "symbols": count, "finite": finite}

    def check_not_finished(self) -> None:
        if self.pos.step > 0 and self.finished():
            raise CharLMError(f"nothing to do: the run is at step {self.pos.step}, already past "
                              f"its stopping rule; give a larger --max-steps, --epochs or "
                              f"--max-time")

    def run(self) -> dict:
        """Train until a stopping rule or a stop request; returns a summary."""
        self.check_not_finished()
        self.lock.acquire()
        try:
            if self.pos.step == 0 and any((self.run_dir / f).exists() for f in (LAST, BEST)):
                raise CharLMError(f"{self.run_dir} already holds a run (written since this one "
                                  f"was set up); continue it with --resume {self.run_dir}")
            return self._run()
        finally:
            self.lock.release()

    def _run(self) -> dict:
        if self.pos.step == 0:  # a new run: lines a run killed before its first save logged
            (self.run_dir / METRICS).unlink(missing_ok=True)
        self.write_run_files()
        self.model.train()
        self.report("start", {"step": self.pos.step, "preset": self.preset,
                              "total_steps": self.total_steps,
                              "max_time": self.config.max_time, "device": str(self.device),
                              "parameters": sum(p.numel() for p in self.model.parameters()),
                              "lanes": self.layout.num_lanes,
                              "chunks_per_epoch": self.layout.chunks_per_epoch})
        c = self.config
        status = "done"
        last_saved = self.pos.step
        evaluated_at = None
        while not self.finished():
            if self.stop_requested:
                status = "interrupted"
                break
            t0 = time.perf_counter()
            out = self.train_step()
            dt = time.perf_counter() - t0
            self.pos.elapsed += dt
            record = {"step": out["step"], "loss": out["loss"], "lr": out["lr"],
                      "grad_norm": out["grad_norm"], "symbols_per_s": out["symbols"] / dt,
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
                        f"{self.kept_checkpoint()}; start a new run with a lower --lr")
            self.log(record)
            self.report("step", {**record, "progress": self.progress(),
                                 "epoch": self.pos.epoch, "total_steps": self.total_steps})
            if self.pos.step % c.eval_every == 0:
                self.validate()
                evaluated_at = self.pos.step
            if self.pos.step % c.save_every == 0:
                self.save(LAST)
                last_saved = self.pos.step
        if status == "done" and evaluated_at != self.pos.step:
            self.validate()
        if last_saved != self.pos.step or not (self.run_dir / LAST).exists():
            self.save(LAST)
        if not (self.run_dir / BEST).exists():
            self.save(BEST)  # no validation split: the final weights are the best we know
        summary = {"status": status, "step": self.pos.step, "epoch": self.pos.epoch,
                   "elapsed": self.pos.elapsed,
                   "best_val": self.pos.best_val if math.isfinite(self.pos.best_val) else None,
                   "best_bpc": self.pos.best_bpc if math.isfinite(self.pos.best_bpc) else None,
                   "run_dir": str(self.run_dir)}
        self.report("end", summary)
        return summary
