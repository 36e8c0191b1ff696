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
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CharLMError
from ..options import fraction, option
from .documents import DocRange, document_ranges, parse_separator, split_documents
from .sources import (CORPUS_FORMAT, ReadConfig, Source, byte_arrays, char_boundary,
                      collect_files, file_sha256, is_prepared_dir, is_utf8)
from .vocab import BPEVocab, CharVocab, Vocab, codepoints

FORMAT_VERSION = 1
VAL_SEED = 1234  # fixed: the same corpus always gives the same split

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


@dataclass(frozen=True)
class PrepareConfig(ReadConfig):
    """How text becomes a prepared corpus (how its files are read, ``encoding``, included)."""

    vocab: str = option("char", "Vocabulary: 'char' (one symbol per character) or 'bpe' "
                                "(byte-level BPE tokens trained on the corpus).",
                        choices=("char", "bpe"))
    vocab_size: int = option(1024, f"BPE vocabulary size, special symbols included "
                                   f"({BPEVocab.min_size} to {BPEVocab.max_size}). Only with "
                                   f"--vocab bpe.")
    val_fraction: float = option(0.1, "Share of the text held out for validation: whole "
                                      "documents when there are several, else the last part of "
                                      "the text. 0 = none.", check=fraction)
    doc_separator: str | None = option(
        None, r"Split files into documents at this string (escapes allowed: '\n' = one "
              r"document per line, '\n\n' = per blank line).", parse=parse_separator,
        default_help="each file is one document")

    def check(self) -> None:
        if self.vocab == "bpe" and self.vocab_size < BPEVocab.min_size:
            raise CharLMError(f"--vocab-size {self.vocab_size} is too small for byte-level BPE: "
                              f"it needs at least {BPEVocab.min_size} (256 bytes + "
                              f"{len(BPEVocab.specials)} special symbols)")
        if self.vocab == "bpe" and self.vocab_size > BPEVocab.max_size:
            raise CharLMError(f"--vocab-size {self.vocab_size} is too large (at most "
                              f"{BPEVocab.max_size})")

    @classmethod
    def from_given(cls, **given) -> PrepareConfig:
        if given.get("vocab_size") is not None and given.get("vocab", cls.default("vocab")) \
                == "char":
            raise CharLMError("--vocab-size applies only to --vocab bpe")
        return super().from_given(**given)


def split_train_val(docs: list[DocRange], chars: list[int], val_fraction: float,
                    sources: dict[Path, Source]) -> tuple[list[DocRange], list[DocRange]]:
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
        cut = char_boundary(src.data, last.end - need, last.end)
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
        if meta.get("format") != CORPUS_FORMAT or meta.get("version") != FORMAT_VERSION:
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
                 sources: dict[Path, Source], progress: Progress | None,
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
            for text in src.texts(doc.start, doc.end, prefer_newline=True):
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


def _count_chars(src: Source, doc: DocRange) -> int:
    """Characters in a validated UTF-8 range: the bytes that are not continuation bytes."""
    n = 0
    for arr in byte_arrays(src.data, doc.start, doc.end):
        n += int(np.count_nonzero((arr & 0xC0) != 0x80))
        del arr
    return n


def _build_vocab(config: PrepareConfig, docs: list[DocRange],
                 sources: dict[Path, Source]) -> Vocab:
    if config.vocab == "char":
        counts = np.zeros(0x110000, dtype=np.int64)
        for doc in docs:
            for text in sources[doc.path].texts(doc.start, doc.end):
                cps = codepoints(text)
                counts[: int(cps.max()) + 1] += np.bincount(cps)
        return CharVocab.from_counts(counts)

    def texts():
        for doc in docs:
            for text in sources[doc.path].texts(doc.start, doc.end, prefer_newline=True):
                # Feed lines in moderate pieces: the trainer counts words per piece.
                yield from text.splitlines(keepends=True)
    return BPEVocab.train(texts(), config.vocab_size)


def prepare(paths: list[Path], out: Path, config: PrepareConfig | None = None,
            progress: Progress | None = None, warn: Callable[[str], None] | None = None,
            hashes: dict[Path, str] | None = None, vocab: Vocab | None = None) -> PreparedCorpus:
    """Prepare a corpus into directory ``out`` (which must not hold anything yet), with a vocab
    built from its training split, or ``vocab`` (a model's, to train it further on this text:
    characters it lacks become UNK).

    The result is written to a temporary sibling directory and renamed into place at the end, so
    an interrupted prepare never leaves a half-written corpus behind.
    """
    config = config or PrepareConfig()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CharLMError(f"{out} already exists and is not empty; choose another --out")
    files = collect_files(paths, warn, config.encoding)
    hashes = dict(hashes or {})
    sources: dict[Path, Source] = {}
    try:
        docs: list[DocRange] = []
        per_file: dict[Path, int] = {}
        for path in files:
            if path in sources:
                continue
            src = Source(path, config.encoding)
            sources[path] = src
            if is_utf8(config.encoding):  # a transcoded copy is UTF-8 by construction
                src.check_utf8()
            if path not in hashes:
                hashes[path] = file_sha256(path)
            found = [DocRange(path, a, b)
                     for a, b in document_ranges(src.data, config.doc_separator)]
            per_file[path] = len(found)
            docs.extend(found)
        if not docs:
            names = ", ".join(str(f) for f in files[:3])
            raise CharLMError(f"corpus is empty: no text in {names}"
                              + (" (only whitespace)" if any(len(s) for s in sources.values())
                                 else ""))
        chars = [_count_chars(sources[d.path], d) for d in docs]
        train_docs, val_docs = split_train_val(docs, chars, config.val_fraction, sources)
        if not train_docs:
            raise CharLMError("corpus is too small to hold both a training and a validation split")
        if vocab is None:
            vocab = _build_vocab(config, train_docs, sources)

        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            (tmp / vocab.file_name).write_text(vocab.to_json(), encoding="utf-8")
            total = sum(d.nbytes for d in docs)
            done = [0]
            splits = {
                "train": _write_split(tmp, "train", vocab, train_docs, sources, progress, done,
                                      total),
                "val": _write_split(tmp, "val", vocab, val_docs, sources, progress, done, total),
            }
            meta = {
                "format": CORPUS_FORMAT,
                "version": FORMAT_VERSION,
                "vocab": {"kind": vocab.kind, "size": vocab.size, "file": vocab.file_name},
                "dtype": vocab.dtype.name,
                "doc_separator": config.doc_separator,
                "val_fraction": config.val_fraction,
                "encoding": config.encoding,
                "sources": [{"path": str(p.resolve()), "bytes": sources[p].disk_bytes,
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


def prepare_cached(paths: list[Path], config: PrepareConfig | None = None,
                   progress: Progress | None = None,
                   warn: Callable[[str], None] | None = None,
                   vocab: Vocab | None = None) -> PreparedCorpus:
    """Prepare once per distinct content and options (and given ``vocab``); later calls reuse
    the cached result."""
    config = config or PrepareConfig()
    files = collect_files(paths, warn, config.encoding)
    hashes = {f: file_sha256(f) for f in files}
    # (UTF-8 is left out of the key, so corpora cached before --encoding existed are found.)
    encoding = {} if is_utf8(config.encoding) else {"encoding": config.encoding}
    if vocab is not None:
        encoding["given_vocab"] = hashlib.sha256(vocab.to_json().encode()).hexdigest()
    key = hashlib.sha256(json.dumps({
        "version": FORMAT_VERSION, "files": [hashes[f] for f in files], "vocab": config.vocab,
        "vocab_size": config.vocab_size if config.vocab == "bpe" else None,
        "val_fraction": config.val_fraction, "doc_separator": config.doc_separator,
        **encoding}, sort_keys=True).encode()).hexdigest()[:16]
    stem = files[0].stem if len(files) == 1 else Path(paths[0]).name
    out = cache_root() / "corpora" / f"{stem}-{config.vocab}-{key}"
    if (out / "meta.json").exists():
        try:
            return PreparedCorpus.open(out)
        except CharLMError:
            shutil.rmtree(out, ignore_errors=True)  # a damaged cache entry is rebuilt
    # The files are already expanded: nothing more to warn about.
    return prepare(files, out, config, progress, hashes=hashes, vocab=vocab)


def is_prepared(paths: list[Path]) -> bool:
    """Whether ``paths`` name one prepared corpus directory (rather than text)."""
    return len(paths) == 1 and is_prepared_dir(Path(paths[0]))


def open_or_prepare(paths: list[Path], given: dict | None = None,
                    progress: Progress | None = None,
                    warn: Callable[[str], None] | None = None,
                    vocab: Vocab | None = None) -> PreparedCorpus:
    """Open a prepared corpus directory, or prepare text files (cached by content).

    ``given``: the preparation options given (PrepareConfig fields; None: not given). Given
    for an already prepared corpus they are refused rather than silently ignored. ``vocab``:
    the vocab to encode with (a prepared corpus must have it), rather than one of its own.
    """
    given = {k: v for k, v in (given or {}).items() if v is not None}
    if is_prepared(paths):
        if given:
            named = ", ".join(PrepareConfig.flag(k) for k in given)
            raise CharLMError(f"{paths[0]} is a prepared corpus; {named} apply only to raw text "
                              f"(prepare it again to change them)")
        prepared = PreparedCorpus.open(Path(paths[0]))
        if vocab is not None and prepared.vocab.to_json() != vocab.to_json():
            raise CharLMError(f"{paths[0]} was prepared with another vocab than the model's; "
                              f"give the text files instead")
        return prepared
    if vocab is not None:
        for name in ("vocab", "vocab_size"):
            if name in given:
                raise CharLMError(f"{PrepareConfig.flag(name)} does not apply: the text is "
                                  f"encoded with the model's vocab")
        given = {**given, "vocab": vocab.kind}
        if vocab.kind == "bpe":
            given["vocab_size"] = vocab.size
    return prepare_cached(paths, PrepareConfig.from_given(**given), progress, warn, vocab)


def text_split(vocab: Vocab, texts: list[str], separator: str | None) -> Split:
    """Texts in memory as a split, each cut into documents as a corpus file is."""
    return encode_texts(vocab, [d for t in texts for d in split_documents(t, separator)])
