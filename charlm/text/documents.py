"""Where documents begin and end: one rule, for the corpus a model trains on and the text it
is evaluated on.

A file is one document, or ``--doc-separator`` cuts it into several: the pieces between
separators, with the line breaks next to a separator trimmed. Pieces (or files) holding nothing
but whitespace are dropped. The rule works on bytes, so a mapped file of any size and a string in
memory (encoded to UTF-8) are cut in exactly the same places.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CharLMError
from .sources import byte_arrays

_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True  # what bytes.strip() removes
_SMALL = 4096  # pieces shorter than this are checked for blankness in one go


@dataclass(frozen=True)
class DocRange:
    """One document: a byte range [start, end) of a source file."""

    path: Path
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def parse_separator(sep: str | None) -> str | None:
    r"""Interpret backslash escapes so ``--doc-separator '\n\n'`` means two newlines."""
    if sep is None or sep == "":
        return None
    try:
        value = sep.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError:
        raise CharLMError(f"--doc-separator {sep!r}: bad backslash escape (use e.g. '\\n' or "
                          f"'\\t')") from None
    return value or None


def _separator_hits(data, sep: bytes) -> list[int]:
    if len(sep) == 1:  # vectorised, a chunk at a time
        hits, offset = [], 0
        for arr in byte_arrays(data, 0, len(data)):
            hits.extend((np.flatnonzero(arr == sep[0]) + offset).tolist())
            offset += len(arr)
            del arr
        return hits
    hits, pos = [], data.find(sep, 0)
    while pos != -1:
        hits.append(pos)
        pos = data.find(sep, pos + len(sep))
    return hits


def _blank(data, a: int, b: int) -> bool:
    if b - a < _SMALL:
        return not bytes(data[a:b]).strip()
    for arr in byte_arrays(data, a, b):
        blank = bool(_WHITESPACE[arr].all())
        del arr
        if not blank:
            return False
    return True


def document_ranges(data, sep: str | None) -> list[tuple[int, int]]:
    """The byte ranges [start, end) of the documents in ``data`` (bytes, or a mapped file)."""
    n = len(data)
    sep = sep or None  # an empty separator cuts nothing
    if sep is None:
        pieces = [(0, n)]
    else:
        sep_b = sep.encode("utf-8")
        pieces, prev = [], 0
        for h in _separator_hits(data, sep_b):
            pieces.append((prev, h))
            prev = h + len(sep_b)
        pieces.append((prev, n))
    ranges = []
    for a, b in pieces:
        while sep is not None and a < b and data[a] in (10, 13):
            a += 1
        while sep is not None and b > a and data[b - 1] in (10, 13):
            b -= 1
        if b > a and not _blank(data, a, b):
            ranges.append((a, b))
    return ranges


def split_documents(text: str, sep: str | None) -> list[str]:
    """The documents of a text in memory, cut by the same rule as a corpus file."""
    data = text.encode("utf-8")
    return [data[a:b].decode("utf-8") for a, b in document_ranges(data, sep)]
