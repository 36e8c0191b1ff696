"""One writer per run directory.

``charlm train`` holds an advisory lock on ``RUN/.lock`` while it writes the run. The operating
system drops the lock when the holder exits in any way, ``kill -9`` and power loss included,
so a crashed run never leaves the directory locked: the next ``--resume`` simply takes it. The
lock file itself stays (it holds the last holder's process id, for the message a second
writer gets).

Whoever holds the lock also owns the directory's temporary files: a crash during a save can
leave one behind (``.NAME.XXXX.tmp``, see ``checkpoint.atomic_write``); taking the lock
removes them.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CharLMError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

LOCK_NAME = ".lock"


def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:  # BlockingIOError on POSIX, PermissionError on Windows
        return False
    return True


def stale_temp_files(run_dir: Path) -> list[Path]:
    return sorted(p for p in Path(run_dir).glob(".*.tmp") if p.is_file())


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
        if not _try_lock(fd):
            try:
                holder = os.read(fd, 64).decode("ascii", "replace").strip()
            finally:
                os.close(fd)
            who = f" (process {holder})" if holder.isdigit() else ""
            raise CharLMError(f"{self.run_dir} is in use by another charlm train{who}; wait for "
                              f"it to finish or stop it first")
        if fcntl is not None:  # on Windows the locked byte cannot be rewritten
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
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
        finally:
            os.close(fd)

    def __del__(self):
        try:
            self.release()
        except Exception:
            pass
