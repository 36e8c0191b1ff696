"""Reading the user's text files: which files, their bytes a chunk at a time, and checks.

Files are mapped (mmap) and read in chunks of about CHUNK_BYTES whose pages are released once
passed, so passes over a corpus of any size keep memory flat.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..errors import CharLMError

CHUNK_BYTES = 8 << 20
CORPUS_FORMAT = "charlm-corpus"  # the "format" of a prepared corpus's meta.json


def is_prepared_dir(path: Path) -> bool:
    try:
        meta = json.loads((Path(path) / "meta.json").read_text(encoding="utf-8"))
        return meta.get("format") == CORPUS_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


_CONTROL = bytes(b for b in range(32) if b not in (9, 10, 11, 12, 13))


def _looks_like_text(path: Path) -> bool:
    """The first 8 KB decode as UTF-8 and hold (almost) no control characters."""
    try:
        with open(path, "rb") as f:
            head = f.read(8192)
    except OSError:
        return False
    if not head or b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the 8 KB boundary
            return False
    controls = len(head) - len(head.translate(None, _CONTROL))
    return controls <= len(head) // 100


def collect_files(paths: list[Path], warn: Callable[[str], None] | None = None) -> list[Path]:
    """Expand directories into the text files below them, in a stable order.

    Inside directories, hidden files, files that do not look like text and prepared corpus
    directories are skipped (each skip is reported through ``warn``). Files named explicitly
    are always taken, so a bad one fails loudly.
    """
    if not paths:
        raise CharLMError("no corpus given")
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise CharLMError(f"{p}: no such file or directory")
        if p.is_dir():
            found, skipped = [], []
            for root, dirs, names in os.walk(p):
                if Path(root) != p and is_prepared_dir(Path(root)):
                    dirs[:] = []
                    skipped.append(f"skipping {root}: a prepared corpus, not text")
                    continue
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    f = Path(root) / name
                    if name.startswith(".") or not f.is_file():
                        continue
                    if _looks_like_text(f):
                        found.append(f)
                    else:
                        skipped.append(f"skipping {f}: not UTF-8 text")
            if not found:
                extra = f" ({len(skipped)} non-text entries skipped)" if skipped else ""
                raise CharLMError(f"{p}: directory holds no text files{extra}")
            for message in skipped if warn else ():
                warn(message)
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise CharLMError(f"{p}: not a regular file or directory")
    return files


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(CHUNK_BYTES):
                h.update(block)
    except OSError as exc:
        raise CharLMError(f"{path}: cannot read: {exc.strerror}") from None
    return h.hexdigest()


class Source:
    """A source file opened as bytes (mmap for anything non-empty)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self._file = open(path, "rb")
        except OSError as exc:
            raise CharLMError(f"{path}: cannot read: {exc.strerror}") from None
        size = os.fstat(self._file.fileno()).st_size
        self.data = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""

    def __len__(self) -> int:
        return len(self.data)

    def decode(self, start: int, end: int) -> str:
        try:
            return self.data[start:end].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CharLMError(
                f"{self.path}: invalid UTF-8 at byte offset {start + exc.start}") from None

    def check_utf8(self) -> None:
        """Refuse a file that is not UTF-8, naming it and the byte offset."""
        for a, b in chunks(self.data, 0, len(self)):
            self.decode(a, b)

    def texts(self, start: int, end: int, prefer_newline: bool = False) -> Iterator[str]:
        """The text of bytes [start, end), a chunk at a time."""
        for a, b in chunks(self.data, start, end, prefer_newline):
            yield self.decode(a, b)

    def close(self) -> None:
        if isinstance(self.data, mmap.mmap):
            try:
                self.data.close()
            except BufferError:  # a view is still alive (an error mid-pass): left to the GC
                pass
        self._file.close()


def char_boundary(data, pos: int, end: int) -> int:
    """Move ``pos`` forward past UTF-8 continuation bytes so a cut never splits a character."""
    while pos < end and (data[pos] & 0xC0) == 0x80:
        pos += 1
    return pos


def _release(data, start: int, end: int) -> None:
    """Drop a read range of a mapped file from this process's resident memory (the pages stay
    in the OS cache), so passes over a large file keep RSS at about one chunk."""
    if isinstance(data, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED") and end > start:
        first = start - start % mmap.PAGESIZE
        data.madvise(mmap.MADV_DONTNEED, first, end - first)


def chunks(data, start: int, end: int, prefer_newline: bool = False) -> Iterator[tuple[int, int]]:
    """Byte ranges of about CHUNK_BYTES covering [start, end) of ``data`` (bytes or a mapped
    file), cut at character boundaries. Each range's pages are released from memory once the
    caller moves on."""
    pos = start
    while pos < end:
        cut = min(pos + CHUNK_BYTES, end)
        if cut < end:
            if prefer_newline:
                nl = data.rfind(b"\n", pos, cut)
                if nl > pos:
                    cut = nl + 1
            cut = char_boundary(data, cut, end)
        yield pos, cut
        _release(data, pos, cut)
        pos = cut


def byte_arrays(data, start: int, end: int) -> Iterator[np.ndarray]:
    """The bytes of [start, end) as uint8 arrays of about CHUNK_BYTES (views, no copies)."""
    for a, b in chunks(data, start, end):
        yield np.frombuffer(data, dtype=np.uint8, count=b - a, offset=a)


def read_text(path: Path) -> str:
    """A whole UTF-8 text file, with a clear error naming the file (and byte offset if bad)."""
    path = Path(path)
    if not path.exists():
        raise CharLMError(f"{path}: no such file or directory")
    if path.is_dir():
        raise CharLMError(f"{path}: is a directory, expected a text file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CharLMError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CharLMError(f"{path}: invalid UTF-8 at byte offset {exc.start}") from None
    if not text.strip():
        raise CharLMError(f"{path}: holds no text" + (" (only whitespace)" if text else ""))
    return text
