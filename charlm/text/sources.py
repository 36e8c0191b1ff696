"""Reading the user's text files: which files, their bytes a chunk at a time, and checks.

Files are mapped (mmap) and read in chunks of about CHUNK_BYTES whose pages are released once
passed, so passes over a corpus of any size keep memory flat. Text is UTF-8 unless
``--encoding`` names another encoding (``ReadConfig``); a file in another encoding is first
decoded, a chunk at a time, into a temporary UTF-8 copy, so everything after reading works on
UTF-8 bytes alike.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import mmap
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CharLMError
from ..options import Options, option

CHUNK_BYTES = 8 << 20
CORPUS_FORMAT = "charlm-corpus"  # the "format" of a prepared corpus's meta.json
UTF8 = "utf-8"


def known_encoding(flag: str, value) -> None:
    try:
        codecs.lookup(value)
    except (LookupError, TypeError):
        raise CharLMError(f"{flag} {value!r}: not an encoding Python knows (e.g. utf-8, "
                          f"latin-1, cp1252, utf-16)") from None


def is_utf8(encoding: str | None) -> bool:
    return encoding is None or codecs.lookup(encoding).name == UTF8


@dataclass(frozen=True)
class ReadConfig(Options):
    """How text files are read (every command that reads text takes it)."""

    encoding: str = option(
        UTF8, "Encoding of the text files, e.g. latin-1 or cp1252 (many older corpora) or "
              "utf-16.", check=known_encoding)


def not_utf8(path: Path, offset: int) -> CharLMError:
    """The error for a file that is not UTF-8 and was read as UTF-8."""
    return CharLMError(f"{path}: not UTF-8 (invalid byte at offset {offset:,}); if it is in "
                       f"another encoding, give it with --encoding (e.g. --encoding latin-1)")


def _bad_encoding(path: Path, encoding: str, offset: int) -> CharLMError:
    return CharLMError(f"{path}: not valid {encoding} (at byte offset {offset:,})")


def is_prepared_dir(path: Path) -> bool:
    try:
        meta = json.loads((Path(path) / "meta.json").read_text(encoding="utf-8"))
        return meta.get("format") == CORPUS_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


_CONTROL = bytes(b for b in range(32) if b not in (9, 10, 11, 12, 13))


_CONTROL_CHARS = {c: None for c in _CONTROL.decode("ascii")}


def _looks_like_text(path: Path, encoding: str = UTF8) -> bool:
    """The first 8 KB decode in ``encoding`` and hold no NUL and (almost) no other control
    characters."""
    try:
        with open(path, "rb") as f:
            head = f.read(8192)
    except OSError:
        return False
    if not head:
        return False
    try:  # a character cut at the 8 KB boundary is not an error
        text = codecs.getincrementaldecoder(encoding)().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    if "\0" in text:
        return False
    controls = len(text) - len(text.translate(_CONTROL_CHARS))
    return controls <= len(text) // 100


def collect_files(paths: list[Path], warn: Callable[[str], None] | None = None,
                  encoding: str = UTF8) -> list[Path]:
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
                    if _looks_like_text(f, encoding):
                        found.append(f)
                    else:
                        skipped.append(f"skipping {f}: not {encoding} text")
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


def _transcoded(path: Path, source, encoding: str):
    """A temporary file (deleted when closed) holding ``source`` (a binary file) decoded from
    ``encoding`` and written as UTF-8, a chunk at a time."""
    decoder = codecs.getincrementaldecoder(encoding)()
    out = tempfile.TemporaryFile()
    offset = 0
    try:
        while True:
            block = source.read(CHUNK_BYTES)
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                raise _bad_encoding(path, encoding, max(offset - pending + exc.start, 0)) \
                    from None
            try:
                out.write(text.encode(UTF8))
            except UnicodeEncodeError:  # e.g. a lone surrogate of a damaged UTF-16 file
                raise _bad_encoding(path, encoding, offset) from None
            offset += len(block)
            if not block:
                break
        out.flush()
        out.seek(0)
        return out
    except BaseException:
        out.close()
        raise


class Source:
    """A source file opened as UTF-8 bytes (mmap for anything non-empty): the file itself, or
    for another ``encoding`` its temporary UTF-8 copy. ``path`` is always the user's file."""

    def __init__(self, path: Path, encoding: str = UTF8):
        self.path = path
        try:
            self._file = open(path, "rb")
        except OSError as exc:
            raise CharLMError(f"{path}: cannot read: {exc.strerror}") from None
        self.disk_bytes = os.fstat(self._file.fileno()).st_size
        if not is_utf8(encoding):
            with self._file:
                self._file = _transcoded(path, self._file, encoding)
        size = os.fstat(self._file.fileno()).st_size
        self.data = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""

    def __len__(self) -> int:
        return len(self.data)

    def decode(self, start: int, end: int) -> str:
        try:
            return self.data[start:end].decode(UTF8)
        except UnicodeDecodeError as exc:
            raise not_utf8(self.path, start + exc.start) from None

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


def lines_of(stream, path: Path, encoding: str = UTF8) -> Iterator[str]:
    """The lines of a binary ``stream`` (``path`` names it in errors) in ``encoding``, read a
    line at a time: ended at "\\n" alone (a Latin-1 text may hold U+0085, which other line
    rules split at), a "\\r" before it dropped, a UTF-8 byte-order mark at the start dropped.
    Closes the stream at the end."""
    ascii_lines = "\n".encode(encoding) == b"\n"
    try:
        if ascii_lines:  # the byte offset of a bad line can be named
            offset = 0
            for raw in stream:
                try:
                    line = raw.decode(encoding)
                except UnicodeDecodeError as exc:
                    raise _decode_error(path, encoding, offset + exc.start) from None
                if offset == 0:
                    line = without_bom(line, encoding)
                offset += len(raw)
                yield _line(line)
        else:
            text = io.TextIOWrapper(stream, encoding=encoding, newline="\n")
            try:
                for line in text:
                    yield _line(line)
            except UnicodeDecodeError:
                raise CharLMError(f"{path}: not valid {encoding}") from None
    finally:
        stream.close()


def _line(line: str) -> str:
    line = line[:-1] if line.endswith("\n") else line
    return line[:-1] if line.endswith("\r") else line


def _decode_error(path: Path, encoding: str, offset: int) -> CharLMError:
    return not_utf8(path, offset) if is_utf8(encoding) else _bad_encoding(path, encoding,
                                                                          offset)


def decode_bytes(data: bytes, path: Path, encoding: str = UTF8) -> str:
    """``data`` (the contents of ``path``) decoded, or the one-line error naming the file, the
    byte offset and, for UTF-8, the option."""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise _decode_error(path, encoding, exc.start) from None
    return without_bom(text, encoding)


def without_bom(text: str, encoding: str) -> str:
    """``text`` without a UTF-8 byte-order mark at its start (spreadsheets and Notepad write
    one): it is no text."""
    return text[1:] if text.startswith("\ufeff") and is_utf8(encoding) else text


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


def read_text(path: Path, encoding: str = UTF8) -> str:
    """A whole text file in ``encoding``, with a clear error naming the file (and the byte
    offset if it does not decode)."""
    path = Path(path)
    if not path.exists():
        raise CharLMError(f"{path}: no such file or directory")
    if path.is_dir():
        raise CharLMError(f"{path}: is a directory, expected a text file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CharLMError(f"{path}: cannot read: {exc.strerror}") from None
    text = decode_bytes(data, path, encoding)
    if not text.strip():
        raise CharLMError(f"{path}: holds no text" + (" (only whitespace)" if text else ""))
    return text
