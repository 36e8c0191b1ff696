"""Writing files without losing what was there: atomic replacement and free names."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, whole.

    The data goes to a temporary file in the same directory (``.<name>.<8 characters>.tmp``),
    is fsync'ed, then renamed over ``path``; a crash leaves the old file or the new one.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        try:
            os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual mode
        except OSError:
            pass  # a filesystem without modes (FAT, some network mounts)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename itself is still atomic


def first_free(path: Path, taken: Callable[[Path], bool] = Path.exists,
               keep_extension: bool = True) -> Path:
    """``path`` if it is not taken, else ``name-2.ext``, ``name-3.ext``... (``name.ext-2``...
    without ``keep_extension``, for directories), the first that is not."""
    path = Path(path)
    stem, ext = (path.stem, path.suffix) if keep_extension else (path.name, "")
    candidate, n = path, 1
    while taken(candidate):
        n += 1
        candidate = path.with_name(f"{stem}-{n}{ext}")
    return candidate


def output_path(given: Path | None, default: Path, flag: str) -> Path:
    """Where a command writes its output file: ``given``, refused if it exists (nothing a
    user has is overwritten), else ``default`` or, if that exists, its first free numbered
    name (``first_free``)."""
    from .errors import CharLMError

    if given is not None:
        given = Path(given)
        if given.exists():
            raise CharLMError(f"{flag} {given} exists; choose another path or remove it")
        if not given.parent.is_dir():
            raise CharLMError(f"{flag} {given}: no directory {given.parent}")
        return given
    return first_free(Path(default))
