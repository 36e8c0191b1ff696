"""A run directory: the files one training run writes, and the rules that keep them safe.

    config.json        the run's settings, for people (checkpoints carry their own)
    vocab.json         the vocab (tokenizer.json for BPE)
    last.safetensors   latest weights + trainer state for --resume
    best.safetensors   weights with the best validation figure so far
    metrics.jsonl      one JSON object per step / evaluation
    curves.png         the training curves drawn from metrics.jsonl (``charlm.curves``)
    .lock              held by the process writing the run (see runlock)

Every file is written whole or not at all (``files.atomic_write``); a crash can leave a
temporary copy (``.last.safetensors.XXXXXXXX.tmp``), which the next writer removes on taking
the lock, and nothing else. Only the main process of a run writes (``writes=False`` elsewhere).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..checkpoint import load_checkpoint, save_checkpoint
from ..errors import CharLMError
from ..files import atomic_write, first_free
from ..text.vocab import BPEVocab, CharVocab
from .runlock import LOCK_NAME, RunLock

DEFAULT_RUNS = Path("checkpoints")  # where runs go unless told otherwise
LAST, BEST, CONFIG, METRICS = "last.safetensors", "best.safetensors", "config.json", "metrics.jsonl"
CURVES = "curves.png"
RUN_FILES = (LAST, BEST, CONFIG, CharVocab.file_name, BPEVocab.file_name, METRICS, CURVES)
# atomic_write's temporary copies of the run files: ".<name>.<8 random characters>.tmp"
_TEMP = re.compile(r"\.(%s)\.[A-Za-z0-9_]{8}\.tmp" % "|".join(re.escape(n) for n in RUN_FILES))


def stale_temp_files(run_dir: Path) -> list[Path]:
    """Temporary files of charlm's own run files in ``run_dir`` (nothing else matches)."""
    d = Path(run_dir)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if _TEMP.fullmatch(p.name) and p.is_file())


def new_run_path(name: str) -> Path:
    """``./checkpoints/name``, or ``name-2``, ``name-3``... the first that holds nothing."""
    return first_free(DEFAULT_RUNS / name, lambda p: p.exists() and any(p.iterdir()),
                      keep_extension=False)


def run_kind(run_dir: Path) -> str | None:
    """The model kind of a run directory: what its config.json names, else its checkpoint's
    metadata (runs written before kinds existed are language models); None if neither can be
    read."""
    try:
        config = json.loads((Path(run_dir) / CONFIG).read_text(encoding="utf-8"))
        if isinstance(config, dict):
            return config.get("kind", "rnn-lm")
    except (OSError, ValueError):
        pass
    from safetensors import safe_open

    for name in (BEST, LAST):
        try:
            with safe_open(str(Path(run_dir) / name), framework="pt") as f:
                meta = f.metadata() or {}
            return meta.get("kind", "rnn-lm")
        except Exception:  # a damaged file: the next, or none
            continue
    return None


def new_run_dir(name: str | None, out: Path | None) -> Path:
    """Where a new run goes: ``out``, checked to hold no run and no file charlm did not write,
    or ``./checkpoints/<name>`` (numbered if taken)."""
    if out is None:
        return new_run_path(name or "run")
    run = RunDirectory(out)
    if run.path.exists() and not run.path.is_dir():
        raise CharLMError(f"--out {run.path} exists and is not a directory")
    if run.holds_run():
        raise CharLMError(f"--out {run.path} already holds a run; continue it with "
                          f"--resume {run.path} or choose another --out")
    foreign = run.foreign_files()
    if foreign:
        raise CharLMError(f"--out {run.path} holds files charlm did not write "
                          f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); "
                          f"choose a new or empty directory")
    return run.path


def find_checkpoint(path: Path | str | None = None, which: str = "best",
                    kind: str | tuple[str, ...] = "rnn-lm") -> Path:
    """The checkpoint file of a run directory (``which``: best, else last; or last, else best),
    a checkpoint file itself, or with no path the most recently trained run of ``kind`` (or
    of one of several kinds) under ./checkpoints/."""
    if path is None:
        kinds = (kind,) if isinstance(kind, str) else kind
        runs = []
        if DEFAULT_RUNS.is_dir():
            for d in DEFAULT_RUNS.iterdir():
                files = [d / f for f in (LAST, BEST) if (d / f).is_file()]
                if files and run_kind(d) in kinds:
                    runs.append((max(f.stat().st_mtime for f in files), d))
        if not runs:
            command = "charlm train" if "rnn-lm" in kinds else "charlm classify train"
            what = "language model" if "rnn-lm" in kinds else kinds[0]
            raise CharLMError(f"no trained run of a {what} under ./{DEFAULT_RUNS}/; train one "
                              f"with '{command}' or pass --checkpoint DIR")
        path = max(runs)[1]
    path = Path(path)
    if path.is_dir():
        order = (BEST, LAST) if which == "best" else (LAST, BEST)
        for name in order:
            if (path / name).is_file():
                return path / name
        raise CharLMError(f"{path}: not a charlm run (no {BEST} or {LAST})")
    if not path.exists():
        raise CharLMError(f"{path}: checkpoint not found")
    return path


class RunDirectory:
    def __init__(self, path: Path, writes: bool = True):
        self.path = Path(path)
        self.writes = writes
        self.lock = RunLock(self.path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def holds_run(self) -> bool:
        return (self.path / LAST).exists() or (self.path / BEST).exists()

    def foreign_files(self) -> list[str]:
        """Names that a charlm run killed before its first checkpoint would not have left here
        (a new run may replace only those). curves.png is not among them: a run draws it
        only after its first checkpoint, so one here is somebody else's."""
        if not self.path.is_dir():
            return []
        ours = (set(RUN_FILES) - {CURVES}) | {LOCK_NAME} | {
            p.name for p in stale_temp_files(self.path)}
        foreign = []
        for p in sorted(self.path.iterdir()):
            if p.name == CONFIG:
                try:
                    mine = "charlm_version" in json.loads(p.read_text(encoding="utf-8"))
                except (OSError, ValueError, TypeError):
                    mine = False
                if not mine:
                    foreign.append(p.name)
            elif p.name not in ours:
                foreign.append(p.name)
        return foreign

    # ----- the writer's lock --------------------------------------------------------------------
    def acquire(self) -> list[Path]:
        """Take the lock (the main process only) and remove temporary files a crashed writer
        left; returns them."""
        if not self.writes:
            return []
        self.lock.acquire()
        removed = stale_temp_files(self.path)
        for p in removed:
            try:
                p.unlink()
            except OSError:
                pass
        return removed

    def release(self) -> None:
        self.lock.release()

    # ----- files ---------------------------------------------------------------------------------
    def write_run_files(self, run_config: dict, vocab) -> None:
        if not self.writes:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path / CONFIG,
                     json.dumps(run_config, indent=2, ensure_ascii=False).encode())
        atomic_write(self.path / vocab.file_name, vocab.to_json().encode())

    def save(self, which: str, step: int, model, vocab, run_config: dict, info: dict,
             trainer_state: dict | None) -> Path:
        path = self.path / which
        if not self.writes:
            return path
        if which == LAST:
            self.sync_metrics()  # the log on disk reaches at least the checkpoint's step
        try:
            save_checkpoint(path, model, vocab, run_config, info, trainer_state)
        except OSError as exc:  # disk full, permissions...: the write went to a temp file
            kept = "the previous one is kept" if path.exists() else "nothing was written"
            raise CharLMError(f"could not save {path} at step {step} "
                              f"({exc.strerror or exc}); {kept}") from None
        return path

    def log(self, record: dict, step: int) -> None:
        if not self.writes:
            return
        path = self.path / METRICS
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise CharLMError(f"could not write {path} at step {step} "
                              f"({exc.strerror or exc}); {self.kept_checkpoint()}") from None

    def draw_curves(self) -> None:
        """Draw metrics.jsonl into curves.png."""
        if not self.writes:
            return
        from ..curves import read_curves, write_curves

        write_curves([read_curves(self.path)], self.path / CURVES, title=str(self.path))

    def sync_metrics(self) -> None:
        try:
            fd = os.open(self.path / METRICS, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def forget_metrics(self) -> None:
        """A new run: lines that a run killed before its first save logged go."""
        if self.writes:
            (self.path / METRICS).unlink(missing_ok=True)

    def keep_metrics_up_to(self, step: int) -> None:
        """A resumed run replays the steps after its checkpoint: their lines go (a line cut
        short by a crash with them)."""
        metrics = self.path / METRICS
        if not self.writes or not metrics.exists():
            return
        kept = []
        for line in metrics.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("step", 0) <= step:
                kept.append(line)
        atomic_write(metrics, "".join(line + "\n" for line in kept).encode())

    def kept_checkpoint(self) -> str:
        """What a user still has on disk, for error messages."""
        path = self.path / LAST
        try:
            step = load_checkpoint(path).info.get("step")
        except CharLMError:
            return "no checkpoint has been written yet"
        return f"the last checkpoint ({path}, step {step}) is kept"
