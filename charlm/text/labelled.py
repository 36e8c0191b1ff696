"""Labelled texts as users have them: one text and one label per example.

Layouts (``--format``; ``auto`` tells them apart where that is unambiguous):

    folders         a directory whose sub-directories are the labels, one example per file
                    (the aclImdb layout: train/pos/*.txt, train/neg/*.txt), or several
                    directories given, each a label (train/pos train/neg); a sub-directory
                    named unsup (aclImdb's unlabelled reviews) is passed over
    files           files whose names are the labels (without the extension), one example per
                    non-empty line (the names layout: names/Russian.txt, names/Greek.txt); a
                    directory of such files, or the files themselves
    csv, tsv        a header row, then one example per row; the columns --text-column and
                    --label-column (default "text" and "label"); CSV fields may be quoted
                    (an unclosed quote is an error), TSV fields are read as they stand
                    (a tab ends a field, a line ends a row, quotation marks are text)
    jsonl           one JSON object per line with those two keys
    labelled-lines  the label is each line's first field: fastText's "__label__pos great film"
                    (the label is "pos") or "1 great film"

Every file is read in ``--encoding`` (UTF-8 by default; a file that is not gets one line naming
it, the byte offset and the option). Lines end at "\\n" only (a Latin-1 file may hold U+0085,
which other line rules would split at), a "\\r" before it is dropped, and each text is
stripped of the whitespace around it. Empty texts are skipped and counted.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CharLMError
from ..options import option
from .sources import ReadConfig, decode_bytes

FORMATS = ("auto", "folders", "files", "csv", "tsv", "jsonl", "labelled-lines")
BY_EXTENSION = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
FASTTEXT = "__label__"
UNLABELLED = ("unsup",)  # sub-directories that hold unlabelled examples (aclImdb's train/)
csv.field_size_limit(1 << 30)  # a whole review (or book) in one field
SNIFF_LINES = 200      # lines of a plain file looked at to tell labelled lines from a list
MAX_SNIFFED_LABELS = 20  # labelled lines have at most this many distinct first fields there...
LABELS_PER_LINE = 5      # ...and at least this many lines per distinct one


@dataclass(frozen=True)
class LabelledConfig(ReadConfig):
    """How labelled data is read (``encoding`` included)."""

    format: str = option("auto", "Layout of the data: folders (a sub-directory per label, a "
                                 "file per example), files (a file per label, a line per "
                                 "example), csv, tsv, jsonl, labelled-lines (the label first "
                                 "on each line, e.g. __label__pos or 1); auto tells them apart "
                                 "where it can.", choices=FORMATS)
    text_column: str = option("text", "The text's column (csv, tsv) or key (jsonl).")
    label_column: str = option("label", "The label's column (csv, tsv) or key (jsonl).")


@dataclass
class Examples:
    """Texts with their labels (names), and what reading them found."""

    texts: list[str]
    labels: list[str]
    sources: list[Path] = field(default_factory=list)  # the files read
    empty: int = 0                                      # empty texts skipped
    format: str = ""
    skipped: list[Path] = field(default_factory=list)  # directories of unlabelled examples

    def __len__(self) -> int:
        return len(self.texts)

    def counts(self) -> Counter:
        return Counter(self.labels)


def label_order(labels) -> tuple[str, ...]:
    """The label names in a stable order: by number if every name is an integer, else by
    name."""
    names = set(labels)
    if all(re.fullmatch(r"-?\d+", n) for n in names):
        return tuple(sorted(names, key=lambda n: (int(n), n)))
    return tuple(sorted(names))


def _lines(path: Path, encoding: str) -> list[str]:
    """The file's lines, ended at \\n alone, \\r before it dropped."""
    lines = _text(path, encoding).split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # what follows the last line end is no line
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _text(path: Path, encoding: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CharLMError(f"{path}: cannot read: {exc.strerror}") from None
    return decode_bytes(data, path, encoding)


def _files_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))


def _subdirs(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def _expand(paths: list[Path]) -> list[Path]:
    """Files given, and the files directly inside directories given."""
    files = []
    for p in paths:
        if not p.exists():
            raise CharLMError(f"{p}: no such file or directory")
        files.extend(_files_in(p) if p.is_dir() else [p])
    return files


def _looks_labelled(lines: list[str]) -> bool:
    """Whether a plain file's lines start with a label: fastText's __label__, an integer, or
    few distinct first fields, each on many lines."""
    sample = [line.strip() for line in lines if line.strip()][:SNIFF_LINES]
    if not sample:
        return False
    if all(line.startswith(FASTTEXT) for line in sample):
        return True
    fields = [line.split(None, 1) for line in sample]
    if any(len(f) < 2 for f in fields):
        return False
    if all(re.fullmatch(r"-?\d+", f[0]) for f in fields):
        return True
    distinct = len({f[0] for f in fields})
    return distinct <= MAX_SNIFFED_LABELS and distinct * LABELS_PER_LINE <= len(sample)


def detect_format(paths: list[Path], encoding: str) -> str:
    """The layout of ``paths`` where it is unambiguous, else a one-line error asking for
    --format."""
    if not paths:
        raise CharLMError("no data given")
    dirs = [p for p in paths if p.is_dir()]
    if len(dirs) == len(paths):
        nested = [bool(_subdirs(d)) for d in dirs]
        if all(nested) or (len(dirs) >= 2 and not any(nested)):
            return "folders"
    files = _expand(paths)
    if not files:
        raise CharLMError(f"{paths[0]}: holds no files")
    kinds = {BY_EXTENSION.get(f.suffix.lower()) for f in files}
    if kinds - {None}:
        if len(kinds) > 1:
            raise CharLMError("the data mixes files of several formats (by their extensions); "
                              "give one format at a time, or --format")
        return kinds.pop()
    labelled = {f: _looks_labelled(_lines(f, encoding)) for f in files}
    if all(labelled.values()):
        return "labelled-lines"
    if not any(labelled.values()):
        return "files"
    some = next(f for f, v in labelled.items() if v)
    other = next(f for f, v in labelled.items() if not v)
    raise CharLMError(f"cannot tell the layout of the data ({some} looks like labelled lines, "
                      f"{other} like one text per line under its file's name); give --format")


class _Reader:
    def __init__(self, config: LabelledConfig):
        self.config = config
        self.texts: list[str] = []
        self.labels: list[str] = []
        self.sources: list[Path] = []
        self.skipped: list[Path] = []  # directories of unlabelled examples passed over
        self.empty = 0

    def add(self, text: str, label: str) -> None:
        text = text.strip()
        if not text:
            self.empty += 1
            return
        self.texts.append(text)
        self.labels.append(label)

    # ----- the layouts -----
    def folders(self, paths: list[Path]) -> None:
        for d in paths:
            if not d.is_dir():
                raise CharLMError(f"{d}: --format folders needs directories (a sub-directory "
                                  f"per label, or a directory per label)")
            subdirs = [s for s in _subdirs(d) if s.name not in UNLABELLED]
            for skipped in sorted(set(_subdirs(d)) - set(subdirs)):
                self.skipped.append(skipped)
            for sub in subdirs or [d]:
                for f in _files_in(sub):
                    self.sources.append(f)
                    self.add(_text(f, self.config.encoding), sub.name)

    def files(self, paths: list[Path]) -> None:
        for f in _expand(paths):
            self.sources.append(f)
            for line in _lines(f, self.config.encoding):
                self.add(line, f.stem)

    def labelled_lines(self, paths: list[Path]) -> None:
        for f in _expand(paths):
            self.sources.append(f)
            for number, line in enumerate(_lines(f, self.config.encoding), 1):
                if not line.strip():
                    continue
                parts = line.strip().split(None, 1)
                label = parts[0]
                if label.startswith(FASTTEXT):
                    label = label[len(FASTTEXT):]
                    if len(parts) > 1 and parts[1].startswith(FASTTEXT):
                        raise CharLMError(f"{f}, line {number}: several labels; charlm "
                                          f"classify takes one label per text")
                if not label:
                    raise CharLMError(f"{f}, line {number}: an empty label")
                self.add(parts[1] if len(parts) > 1 else "", label)

    def table(self, paths: list[Path], delimiter: str) -> None:
        c = self.config
        for f in _expand(paths):
            self.sources.append(f)
            # CSV as spreadsheets write it (quoted fields, an unclosed quote an error); TSV as
            # data sets ship it, unquoted: a text may begin with a quotation mark.
            quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
            rows = csv.DictReader(io.StringIO(_text(f, c.encoding), newline=""),
                                  delimiter=delimiter, quoting=quoting, strict=True)
            try:
                columns = rows.fieldnames or []
            except csv.Error as exc:
                raise CharLMError(f"{f}, line 1: {exc}") from None
            for name, flag in ((c.text_column, "--text-column"),
                               (c.label_column, "--label-column")):
                if name not in columns:
                    shown = ", ".join(repr(x) for x in columns[:8]) or "none"
                    raise CharLMError(f"{f}: no column {name!r} (its columns: {shown}); "
                                      f"choose one with {flag}")
            try:
                for row in rows:
                    self._row(f, rows.line_num, row.get(c.text_column),
                              row.get(c.label_column))
            except csv.Error as exc:
                raise CharLMError(f"{f}, line {rows.line_num}: {exc}") from None

    def jsonl(self, paths: list[Path]) -> None:
        c = self.config
        for f in _expand(paths):
            self.sources.append(f)
            for number, line in enumerate(_lines(f, c.encoding), 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    raise CharLMError(f"{f}, line {number}: not a JSON object") from None
                if not isinstance(obj, dict):
                    raise CharLMError(f"{f}, line {number}: not a JSON object")
                for key, flag in ((c.text_column, "--text-column"),
                                  (c.label_column, "--label-column")):
                    if key not in obj:
                        raise CharLMError(f"{f}, line {number}: no key {key!r}; choose the key "
                                          f"with {flag}")
                self._row(f, number, obj[c.text_column], obj[c.label_column])

    def _row(self, f: Path, number: int, text, label) -> None:
        if label is None or (isinstance(label, str) and not label.strip()):
            raise CharLMError(f"{f}, line {number}: no label")
        if not isinstance(label, str):
            label = json.dumps(label)
        if text is not None and not isinstance(text, str):
            raise CharLMError(f"{f}, line {number}: the text is not a string")
        self.add(text or "", label.strip())


def read_labelled(paths: list[Path] | Path, config: LabelledConfig | None = None) -> Examples:
    """The examples in ``paths`` (see the module doc for the layouts)."""
    config = config or LabelledConfig()
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    for p in paths:
        if not p.exists():
            raise CharLMError(f"{p}: no such file or directory")
    layout = config.format if config.format != "auto" else detect_format(paths, config.encoding)
    reader = _Reader(config)
    if layout == "folders":
        reader.folders(paths)
    elif layout == "files":
        reader.files(paths)
    elif layout == "labelled-lines":
        reader.labelled_lines(paths)
    elif layout in ("csv", "tsv"):
        reader.table(paths, "," if layout == "csv" else "\t")
    else:
        reader.jsonl(paths)
    shown = ", ".join(str(p) for p in paths[:2]) + (", ..." if len(paths) > 2 else "")
    if not reader.texts:
        raise CharLMError(f"no examples in {shown}" + (f" ({reader.empty:,} empty texts "
                                                         f"skipped)" if reader.empty else ""))
    return Examples(reader.texts, reader.labels, reader.sources, reader.empty, layout,
                    reader.skipped)


def check_trainable(examples: Examples, where: str) -> None:
    """Refuse data a classifier cannot learn from: a single label."""
    labels = examples.counts()
    if len(labels) < 2:
        raise CharLMError(f"{where} holds a single label ({next(iter(labels))!r}, "
                          f"{len(examples):,} examples): a classifier needs at least two")
