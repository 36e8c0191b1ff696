"""Corpus preparation: text files -> documents -> ids in flat arrays on disk, read back by memmap.

A prepared corpus is a directory:

    meta.json          vocab kind and size, dtype, splits, document counts, source hashes
    vocab.json         the char vocab        (or tokenizer.json for BPE, in the library's format)
    train.bin          the training split: ids, raw, in the smallest dtype that fits the vocab
    train.docs.npy     positions in train.bin where each document starts (int64)
    val.bin, val.docs.npy

Each split is one stream in which every document is preceded by EOD and the stream ends with
EOD:   EOD d1 d1 d1 EOD d2 d2 EOD d3 EOD.  An EOD *input* starts a document (the recurrent state
is reset there); an EOD *target* is the model predicting that the document has ended.

Files are read through mmap and encoded a chunk at a time, so memory stays flat in corpus size.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CharLMError
from .vocab import BPEVocab, CharVocab, Vocab, codepoints

FORMAT = "charlm-corpus"
FORMAT_VERSION = 1
CHUNK_BYTES = 8 << 20
VAL_SEED = 1234  # fixed: the same corpus always gives the same split

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


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


def is_prepared_dir(path: Path) -> bool:
    try:
        return json.loads((path / "meta.json").read_text(encoding="utf-8")).get("format") == FORMAT
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


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(CHUNK_BYTES):
                h.update(block)
    except OSError as exc:
        raise CharLMError(f"{path}: cannot read: {exc.strerror}") from None
    return h.hexdigest()


class _Source:
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

    def close(self) -> None:
        if isinstance(self.data, mmap.mmap):
            try:
                self.data.close()
            except BufferError:  # a view is still alive (an error mid-pass): left to the GC
                pass
        self._file.close()


def _char_boundary(data, pos: int, end: int) -> int:
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


def _chunks(data, start: int, end: int, prefer_newline: bool = False) -> Iterator[tuple[int, int]]:
    """Byte ranges of about CHUNK_BYTES covering [start, end), cut at character boundaries.
    Each range's pages are released from memory once the caller moves on."""
    pos = start
    while pos < end:
        cut = min(pos + CHUNK_BYTES, end)
        if cut < end:
            if prefer_newline:
                nl = data.rfind(b"\n", pos, cut)
                if nl > pos:
                    cut = nl + 1
            cut = _char_boundary(data, cut, end)
        yield pos, cut
        _release(data, pos, cut)
        pos = cut


def _bytes(src: _Source, start: int, end: int) -> Iterator[np.ndarray]:
    """The bytes of [start, end) as uint8 arrays of about CHUNK_BYTES (views, no copies)."""
    for a, b in _chunks(src.data, start, end):
        yield np.frombuffer(src.data, dtype=np.uint8, count=b - a, offset=a)


def _decode(src: _Source, start: int, end: int) -> str:
    try:
        return src.data[start:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CharLMError(
            f"{src.path}: invalid UTF-8 at byte offset {start + exc.start}") from None


def iter_text(src: _Source, doc: DocRange, prefer_newline: bool = False) -> Iterator[str]:
    for a, b in _chunks(src.data, doc.start, doc.end, prefer_newline):
        yield _decode(src, a, b)


_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True


def _split_documents(src: _Source, sep: str | None) -> list[DocRange]:
    """Document byte ranges of one file: the whole file, or pieces between separators.

    Pieces are trimmed of the line breaks next to the separator and whitespace-only pieces dropped.
    """
    n = len(src)
    if sep is None:
        ranges = [(0, n)]
    else:
        sep_b = sep.encode("utf-8")
        starts = []
        if len(sep_b) == 1:
            hits = []
            offset = 0
            for arr in _bytes(src, 0, n):
                hits.extend((np.flatnonzero(arr == sep_b[0]) + offset).tolist())
                offset += len(arr)
                del arr
        else:
            hits, pos = [], src.data.find(sep_b, 0)
            while pos != -1:
                hits.append(pos)
                pos = src.data.find(sep_b, pos + len(sep_b))
        prev = 0
        for h in hits:
            starts.append((prev, h))
            prev = h + len(sep_b)
        starts.append((prev, n))
        ranges = []
        for a, b in starts:
            while a < b and src.data[a] in (10, 13):
                a += 1
            while b > a and src.data[b - 1] in (10, 13):
                b -= 1
            ranges.append((a, b))
    docs = []
    for a, b in ranges:
        if b <= a:
            continue
        if b - a < 4096:
            blank = not bytes(src.data[a:b]).strip()
        else:
            blank = True
            for arr in _bytes(src, a, b):
                blank = bool(_WHITESPACE[arr].all())
                del arr
                if not blank:
                    break
        if not blank:
            docs.append(DocRange(src.path, a, b))
    return docs


def _count_chars(src: _Source, doc: DocRange) -> int:
    """Characters in a validated UTF-8 range: the bytes that are not continuation bytes."""
    n = 0
    for arr in _bytes(src, doc.start, doc.end):
        n += int(np.count_nonzero((arr & 0xC0) != 0x80))
        del arr
    return n


def split_train_val(docs: list[DocRange], chars: list[int], val_fraction: float,
                    sources: dict[Path, _Source]) -> tuple[list[DocRange], list[DocRange]]:
    """Choose the validation documents.

    With several documents, validation is whole documents picked in a fixed pseudo-random order
    (seed VAL_SEED) until they hold ``val_fraction`` of the characters, skipping any that would
    overshoot by half. If that cannot come close (a few huge documents), or there is only one
    document, validation is the last ``val_fraction`` of the text instead: the tail of the last
    document(s), cut at a character boundary, as nanoGPT's shakespeare_char does.
    """
    if val_fraction <= 0:
        return list(docs), []
    total = sum(chars)
    target = val_fraction * total
    if len(docs) >= 2:
        order = np.random.default_rng(VAL_SEED).permutation(len(docs))
        picked, got = set(), 0
        for i in order.tolist():
            if got >= target:
                break
            if got + chars[i] <= 1.5 * target and len(picked) < len(docs) - 1:
                picked.add(i)
                got += chars[i]
        if got >= 0.5 * target and picked:
            return ([d for i, d in enumerate(docs) if i not in picked],
                    [d for i, d in enumerate(docs) if i in picked])
    # The tail of the text: walk back from the end until enough bytes are taken.
    total_bytes = sum(d.nbytes for d in docs)
    need = int(round(val_fraction * total_bytes))
    train, val = list(docs), []
    while train and need > 0:
        last = train.pop()
        if last.nbytes <= need:
            val.insert(0, last)
            need -= last.nbytes
            continue
        src = sources[last.path]
        cut = _char_boundary(src.data, last.end - need, last.end)
        if cut > last.start:
            train.append(DocRange(last.path, last.start, cut))
        if cut < last.end:
            val.insert(0, DocRange(last.path, cut, last.end))
        need = 0
    return train, val


@dataclass
class Split:
    """One split: its id stream (memmap or array), document starts, and character count."""

    name: str
    tokens: np.ndarray
    doc_starts: np.ndarray
    chars: int
    unknown: int = 0

    @property
    def symbols(self) -> int:
        """Targets in the stream: everything after the first EOD."""
        return max(len(self.tokens) - 1, 0)

    @property
    def documents(self) -> int:
        return len(self.doc_starts)


def split_documents(text: str, sep: str | None) -> list[str]:
    """Documents of one text, as ``prepare`` cuts a file: by ``sep``, line breaks next to the
    separator trimmed, blank pieces dropped."""
    if not sep:
        return [text]
    return [d for d in (piece.strip("\r\n") for piece in text.split(sep)) if d.strip()]


def encode_texts(vocab: Vocab, texts: list[str], name: str = "text") -> Split:
    """An in-memory split from a few texts, one document each (for eval and tests)."""
    parts, starts, pos, unknown = [], [], 0, 0
    eod = np.asarray([vocab.eod_id], dtype=vocab.dtype)
    for ids in vocab.encode_many(texts):
        starts.append(pos)
        parts += [eod, ids]
        pos += 1 + len(ids)
        if vocab.unk_id is not None:
            unknown += int(np.count_nonzero(ids == vocab.unk_id))
    parts.append(eod)
    return Split(name, np.concatenate(parts), np.asarray(starts, dtype=np.int64),
                 chars=sum(len(t) for t in texts), unknown=unknown)


@dataclass
class PreparedCorpus:
    """A prepared corpus directory, opened for reading."""

    path: Path
    meta: dict
    vocab: Vocab
    _splits: dict = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path) -> PreparedCorpus:
        path = Path(path)
        meta_file = path / "meta.json"
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CharLMError(f"{path}: not a prepared corpus (no meta.json)") from None
        except (OSError, ValueError) as exc:
            raise CharLMError(f"{meta_file}: unreadable corpus metadata: {exc}") from None
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise CharLMError(f"{path}: unsupported corpus format {meta.get('format')!r} "
                              f"version {meta.get('version')!r}; prepare it again")
        try:
            vocab_text = (path / meta["vocab"]["file"]).read_text(encoding="utf-8")
        except (OSError, KeyError) as exc:
            raise CharLMError(f"{path}: vocab file missing: {exc}") from None
        vocab = Vocab.from_json(meta["vocab"]["kind"], vocab_text)
        if vocab.size != meta["vocab"]["size"]:
            raise CharLMError(f"{path}: vocab size {vocab.size} does not match metadata "
                              f"({meta['vocab']['size']})")
        return cls(path, meta, vocab)

    def has_split(self, name: str) -> bool:
        return name in self.meta["splits"] and self.meta["splits"][name]["documents"] > 0

    def split(self, name: str) -> Split:
        if name not in self._splits:
            if name not in self.meta["splits"]:
                raise CharLMError(f"{self.path}: no {name!r} split")
            info = self.meta["splits"][name]
            tokens = np.memmap(self.path / info["file"], dtype=np.dtype(self.meta["dtype"]),
                               mode="r")
            if len(tokens) != info["symbols"] + 1:
                raise CharLMError(f"{self.path / info['file']}: expected {info['symbols'] + 1} "
                                  f"ids, found {len(tokens)}; prepare the corpus again")
            starts = np.load(self.path / info["docs_file"], allow_pickle=False)
            self._splits[name] = Split(name, tokens, starts, info["chars"], info.get("unknown", 0))
        return self._splits[name]


def _write_split(out: Path, name: str, vocab: Vocab, docs: list[DocRange],
                 sources: dict[Path, _Source], progress: Progress | None,
                 done: list[int], total: int) -> dict:
    """Encode documents into ``name.bin``; returns the split's metadata."""
    dtype = vocab.dtype
    eod = np.asarray([vocab.eod_id], dtype=dtype).tobytes()
    starts, pos, chars, unknown = [], 0, 0, 0
    with open(out / f"{name}.bin", "wb") as f:
        for doc in docs:
            starts.append(pos)
            f.write(eod)
            pos += 1
            src = sources[doc.path]
            for text in iter_text(src, doc, prefer_newline=True):
                ids = vocab.encode(text)
                f.write(ids.tobytes())
                pos += len(ids)
                chars += len(text)
                if vocab.unk_id is not None:
                    unknown += int(np.count_nonzero(ids == vocab.unk_id))
                done[0] += len(text.encode("utf-8")) if progress else 0
                if progress:
                    progress(done[0], total)
        f.write(eod)
        f.flush()
        os.fsync(f.fileno())
    np.save(out / f"{name}.docs.npy", np.asarray(starts, dtype=np.int64))
    return {"file": f"{name}.bin", "docs_file": f"{name}.docs.npy", "symbols": pos,
            "documents": len(docs), "chars": chars, "unknown": unknown}


def prepare(paths: list[Path], out: Path, vocab_kind: str = "char", vocab_size: int = 1024,
            val_fraction: float = 0.1, doc_separator: str | None = None,
            progress: Progress | None = None, hashes: dict[Path, str] | None = None,
            warn: Callable[[str], None] | None = None) -> PreparedCorpus:
    """Prepare a corpus into directory ``out`` (which must not hold anything yet).

    The result is written to a temporary sibling directory and renamed into place at the end, so
    an interrupted prepare never leaves a half-written corpus behind.
    """
    if vocab_kind not in ("char", "bpe"):
        raise CharLMError(f"--vocab must be 'char' or 'bpe', not {vocab_kind!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise CharLMError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if vocab_kind == "bpe" and vocab_size < BPEVocab.min_size:
        raise CharLMError(f"--vocab-size {vocab_size} is too small for byte-level BPE: it needs "
                          f"at least {BPEVocab.min_size} (256 bytes + 2 special symbols)")
    if vocab_kind == "bpe" and vocab_size > BPEVocab.max_size:
        raise CharLMError(f"--vocab-size {vocab_size} is too large (at most "
                          f"{BPEVocab.max_size})")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CharLMError(f"{out} already exists and is not empty; choose another --out")
    files = collect_files(paths, warn)
    hashes = dict(hashes or {})
    sources: dict[Path, _Source] = {}
    try:
        docs: list[DocRange] = []
        per_file: dict[Path, int] = {}
        for path in files:
            if path in sources:
                continue
            src = _Source(path)
            sources[path] = src
            for a, b in _chunks(src.data, 0, len(src)):
                _decode(src, a, b)  # validates UTF-8, naming file and byte offset on failure
            if path not in hashes:
                hashes[path] = file_sha256(path)
            found = _split_documents(src, doc_separator)
            per_file[path] = len(found)
            docs.extend(found)
        if not docs:
            names = ", ".join(str(f) for f in files[:3])
            raise CharLMError(f"corpus is empty: no text in {names}"
                              + (" (only whitespace)" if any(len(s) for s in sources.values())
                                 else ""))
        chars = [_count_chars(sources[d.path], d) for d in docs]
        train_docs, val_docs = split_train_val(docs, chars, val_fraction, sources)
        if not train_docs:
            raise CharLMError("corpus is too small to hold both a training and a validation split")

        if vocab_kind == "char":
            counts = np.zeros(0x110000, dtype=np.int64)
            for doc in train_docs:
                for text in iter_text(sources[doc.path], doc):
                    cps = codepoints(text)
                    counts[: int(cps.max()) + 1] += np.bincount(cps)
            vocab: Vocab = CharVocab.from_counts(counts)
        else:
            def texts():
                for doc in train_docs:
                    for text in iter_text(sources[doc.path], doc, prefer_newline=True):
                        # Feed lines in moderate pieces: the trainer counts words per piece.
                        yield from text.splitlines(keepends=True)
            vocab = BPEVocab.train(texts(), vocab_size)

        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            vocab_file = "vocab.json" if vocab_kind == "char" else "tokenizer.json"
            (tmp / vocab_file).write_text(vocab.to_json(), encoding="utf-8")
            total = sum(d.nbytes for d in docs)
            done = [0]
            splits = {
                "train": _write_split(tmp, "train", vocab, train_docs, sources, progress, done,
                                      total),
                "val": _write_split(tmp, "val", vocab, val_docs, sources, progress, done, total),
            }
            meta = {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "vocab": {"kind": vocab_kind, "size": vocab.size, "file": vocab_file},
                "dtype": vocab.dtype.name,
                "doc_separator": doc_separator,
                "val_fraction": val_fraction,
                "sources": [{"path": str(p.resolve()), "bytes": len(sources[p]),
                             "sha256": hashes[p], "documents": per_file[p]} for p in per_file],
                "splits": splits,
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False),
                                           encoding="utf-8")
            if out.exists():
                out.rmdir()  # checked empty above
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        for src in sources.values():
            src.close()
    return PreparedCorpus.open(out)


def cache_root() -> Path:
    env = os.environ.get("CHARLM_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "charlm"


def prepare_cached(paths: list[Path], vocab_kind: str = "char", vocab_size: int = 1024,
                   val_fraction: float = 0.1, doc_separator: str | None = None,
                   progress: Progress | None = None,
                   warn: Callable[[str], None] | None = None) -> PreparedCorpus:
    """Prepare once per distinct content and options; later calls reuse the cached result."""
    files = collect_files(paths, warn)
    hashes = {f: file_sha256(f) for f in files}
    key = hashlib.sha256(json.dumps({
        "version": FORMAT_VERSION, "files": [hashes[f] for f in files], "vocab": vocab_kind,
        "vocab_size": vocab_size if vocab_kind == "bpe" else None,
        "val_fraction": val_fraction, "doc_separator": doc_separator,
    }, sort_keys=True).encode()).hexdigest()[:16]
    stem = files[0].stem if len(files) == 1 else Path(paths[0]).name
    out = cache_root() / "corpora" / f"{stem}-{vocab_kind}-{key}"
    if (out / "meta.json").exists():
        try:
            return PreparedCorpus.open(out)
        except CharLMError:
            shutil.rmtree(out, ignore_errors=True)  # a damaged cache entry is rebuilt
    return prepare(files, out, vocab_kind, vocab_size, val_fraction, doc_separator, progress,
                   hashes)  # files are already expanded: nothing more to warn about


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
