"""One writer per run directory.

``charlm train`` holds an advisory lock on ``RUN/.lock`` while it writes the run. The operating
system drops the lock when the holder exits in any way, ``kill -9`` and power loss included,
so a crashed run never leaves the directory locked: the next ``--resume`` simply takes it. The
lock file itself stays (it holds the last holder's process id, for the message a second
writer gets).

Whoever holds the lock also owns the temporary files of the run's own files: a crash during a
save can leave one behind (``.last.safetensors.XXXXXXXX.tmp``, see ``checkpoint.atomic_write``);
taking the lock removes them, and nothing else. On a filesystem without locks (some network
mounts) a run goes on unlocked.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import CharLMError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

LOCK_NAME = ".lock"


# The files charlm writes into a run directory with checkpoint.atomic_write, whose temporary
# copies are ".<name>.<8 random characters>.tmp".
RUN_FILES = ("last.safetensors", "best.safetensors", "config.json", "vocab.json",
             "tokenizer.json", "metrics.jsonl")
_TEMP = re.compile(r"\.(%s)\.[A-Za-z0-9_]{8}\.tmp" % "|".join(re.escape(n) for n in RUN_FILES))


def _try_lock(fd: int) -> bool | None:
    """True: locked. False: another process holds it. None: this filesystem cannot lock."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except BlockingIOError:
        return False
    except PermissionError:
        return False if fcntl is None else None  # Windows reports a held lock this way
    except OSError:  # ENOLCK, EOPNOTSUPP, ENOSYS: no locks on this mount
        return None
    return True


def stale_temp_files(run_dir: Path) -> list[Path]:
    """Temporary files of charlm's own run files in ``run_dir`` (nothing else matches)."""
    d = Path(run_dir)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if _TEMP.fullmatch(p.name) and p.is_file())


class RunLock:
    """``acquire()`` or a clear error naming the process that holds the run; ``release()``."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> list[Path]:
        """Take the lock and remove temporary files a crashed writer left; returns them."""
        if self.held:
            return []
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        locked = _try_lock(fd)
        if locked is False:
            try:
                holder = os.read(fd, 64).decode("ascii", "replace").strip()
            finally:
                os.close(fd)
            who = f" (process {holder})" if holder.isdigit() else ""
            raise CharLMError(f"{self.run_dir} is in use by another charlm train{who}; wait for "
                              f"it to finish or stop it first")
        # locked is None: the filesystem has no locks; the run goes on without one.
        if fcntl is not None:  # on Windows the locked byte cannot be rewritten
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            except OSError:
                pass  # the pid is only for messages; the lock itself is held
        self._fd = fd
        removed = stale_temp_files(self.run_dir)
        for p in removed:
            try:
                p.unlink()
            except OSError:
                pass
        return removed

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            pass  # never locked (no locks on this filesystem); closing releases it anyway
        finally:
            os.close(fd)

    def __del__(self):
        try:
            self.release()
        except Exception:
            pass
