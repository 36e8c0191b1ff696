"""The corpora of the budget sweep, each cut into a training text and a held-out text.

    tinyshakespeare  ../shared/corpora/tinyshakespeare.txt (1.1 MB)
    novels           the six novels in ../shared/corpora/novels (4.2 MB), decoded from
                     Windows-1252 and with CRLF line ends made LF, one after another
    austen           one novel below 1 MB: Pride and Prejudice (pg1342, 0.7 MB), decoded the
                     same way, the book alone (between Project Gutenberg's START and END lines,
                     so that the held-out text is the novel's end, not the licence)
    gatsby           a short novel the same way: The Great Gatsby (pg64317, 0.3 MB)
    frankenstein     another the same way: Frankenstein (pg84, 0.4 MB)
    stdlib           the running Python's standard library source (.py files outside test
                     directories, ~12 MB), one file after another in path order; files that
                     are not UTF-8 are left out

The held-out text is the last 10% of each corpus (cut at a line start); the training text is
the rest. Files are written once under ``bench/.corpora`` (ignored by git) and reused.

    python bench/corpora.py           # builds them and prints their sizes
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SHARED = BENCH.parent.parent / "shared" / "corpora"
CACHE = BENCH / ".corpora"
HELD_OUT = 0.1
CORPORA = ("tinyshakespeare", "novels", "stdlib", "austen", "gatsby", "frankenstein")
SINGLE_NOVELS = {"austen": "pg1342.txt", "gatsby": "pg64317.txt", "frankenstein": "pg84.txt"}


def _novel(path: Path) -> str:
    return path.read_bytes().decode("cp1252").replace("\r\n", "\n")


def _text(name: str) -> str:
    if name == "tinyshakespeare":
        return (SHARED / "tinyshakespeare.txt").read_text(encoding="utf-8")
    if name == "novels":
        return "".join(_novel(p) for p in sorted((SHARED / "novels").glob("pg*.txt")))
    if name in SINGLE_NOVELS:
        text = _novel(SHARED / "novels" / SINGLE_NOVELS[name])
        start = text.index("\n", text.index("*** START OF")) + 1
        return text[start:text.rindex("\n", 0, text.index("*** END OF")) + 1]
    if name == "stdlib":
        root = Path(sysconfig.get_paths()["stdlib"])
        parts = []
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).parts
            if any(p in ("site-packages", "dist-packages", "test", "tests") for p in rel):
                continue
            try:
                parts.append(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, OSError):
                continue
        return "".join(parts)
    raise SystemExit(f"unknown corpus {name!r}; one of {', '.join(CORPORA)}")


def corpus(name: str) -> tuple[Path, Path]:
    """(training file, held-out file) of corpus ``name``, built on first use."""
    train, held = CACHE / f"{name}.train.txt", CACHE / f"{name}.heldout.txt"
    if not (train.exists() and held.exists()):
        text = _text(name)
        cut = text.rfind("\n", 0, int(len(text) * (1 - HELD_OUT))) + 1
        CACHE.mkdir(exist_ok=True)
        train.write_text(text[:cut], encoding="utf-8")
        held.write_text(text[cut:], encoding="utf-8")
    return train, held


if __name__ == "__main__":
    for name in CORPORA:
        train, held = corpus(name)
        print(f"{name:16s} train {len(train.read_text(encoding='utf-8')):>11,} chars   "
              f"held out {len(held.read_text(encoding='utf-8')):>10,} chars")
