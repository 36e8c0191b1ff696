"""One writer per run directory.

``charlm train`` holds a lock on ``RUN/.lock`` while it writes the run, through the ``filelock``
package (a lock the operating system holds: ``flock`` on Unix, ``msvcrt.locking`` on Windows).
The operating system drops it when the holder exits in any way, ``kill -9`` and power loss
included, so a crashed run never leaves the directory locked: the next ``--resume`` simply
takes it. The holder writes its process id into the lock file (filelock never truncates a held
lock file), so a second writer is told which process holds the run.

On a filesystem without locks (some network mounts) a run goes on unlocked: filelock's
fallback there is a lock file whose mere existence locks, which a crash would leave behind,
so it is turned off.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import filelock

from ..errors import CharLMError

LOCK_NAME = ".lock"
# What a filesystem without locks answers; anything else (a .lock that is a directory, no
# permission...) is an error the user sees.
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}


def _write_pid(fd: int) -> None:
    """Called by filelock with the lock held: the holder's process id, for the message a
    second writer gets."""
    try:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:
        pass  # the pid is only for messages (on Windows the locked byte cannot be written)


class RunLock:
    """``acquire()`` or a clear error naming the process that holds the run; ``release()``."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._lock: filelock.BaseFileLock | None = None
        self.held = False

    def acquire(self) -> None:
        if self.held:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(self.path, timeout=0, fallback_to_soft=False,
                                 on_acquired=_write_pid)
        try:
            lock.acquire()
        except filelock.Timeout:
            try:
                holder = self.path.read_text(encoding="ascii", errors="replace").strip()
            except OSError:
                holder = ""
            who = f" (process {holder})" if holder.isdigit() else ""
            raise CharLMError(f"{self.run_dir} is in use by another charlm train{who}; wait for "
                              f"it to finish or stop it first") from None
        except OSError as exc:
            if exc.errno not in _NO_LOCKS:
                raise
            lock = None  # no locks on this mount: go on unlocked
        self._lock, self.held = lock, True

    def release(self) -> None:
        lock, self._lock, self.held = self._lock, None, False
        if lock is not None:
            lock.release()
