"""n-gram counting at scale: `charlm baseline ngram --order N` on 25, 50 and 100 MB of real
text (Python source from this machine's own installation: every machine has one; the files
that are pure ASCII, so the alphabet is a text's usual ~100 symbols and not the 2,000+ that a
few files' other scripts would bring), wall clock and peak memory, end to end as users run it
(the corpus is prepared first, as `charlm baseline` does, then counted, validated on its last
10% and saved).

    python bench/ngram_scale.py [--sizes 25 50 100] [--order 6]

Each size runs in a child process; its peak RSS is read from the kernel (ru_maxrss). Counting
reads the text in chunks and keeps the distinct grams, so memory grows with those, not with
the text: the ratio to the 25 MB figure is printed. Run it alone.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_text(path: Path, megabytes: int) -> int:
    """The first ``megabytes`` MB of the Python installation's .py files, in path order."""
    target = megabytes << 20
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        for src in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")) + \
                sorted(Path(sysconfig.get_paths()["purelib"]).rglob("*.py")):
            try:
                text = src.read_text(encoding="ascii")
            except (UnicodeDecodeError, OSError):
                continue
            out.write(text)
            written += len(text.encode("utf-8"))
            if written >= target:
                break
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100])
    parser.add_argument("--order", type=int, default=6)
    args = parser.parse_args()
    first_rss = None
    with tempfile.TemporaryDirectory() as tmp:
        for mb in args.sizes:
            text = Path(tmp) / f"code{mb}.txt"
            size = make_text(text, mb)
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "charlm", "baseline", "ngram", str(text),
                                "--order", str(args.order), "--out", str(Path(tmp) / f"run{mb}")],
                               capture_output=True, text=True, cwd=tmp,
                               env={"CHARLM_CACHE_DIR": str(Path(tmp) / "cache"),
                                    "PATH": "/usr/bin:/bin"})
            seconds = time.perf_counter() - t0
            if r.returncode:
                raise SystemExit(r.stderr)
            rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            rss_mb = max(rss, before) / 1024  # ru_maxrss: KB on Linux, the largest child so far
            first_rss = first_rss or rss_mb
            ckpt = sum(f.stat().st_size for f in (Path(tmp) / f"run{mb}").glob("*.safetensors"))
            print(f"{size / 2**20:6.1f} MB  order {args.order}: {seconds:6.1f} s end to end, "
                  f"peak RSS {rss_mb:6.0f} MB ({rss_mb / first_rss:.2f}x the first), "
                  f"checkpoints {ckpt / 1e6:.0f} MB", flush=True)
            print("   " + r.stderr.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
