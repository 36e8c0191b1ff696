"""Corpus preparation at scale: time and peak memory for 100 MB and 1 GB of text.

The text is Tiny Shakespeare's lines shuffled and repeated (a fixed seed) until the size is
reached, written once under --work. Each prepare runs in a fresh child process so its peak RSS
(ru_maxrss) is its own.

    python bench/prepare.py                      # char vocab, 100 MB and 1 GB
    python bench/prepare.py --sizes 100 --bpe    # also time BPE training on 100 MB
    python bench/prepare.py --train-rss          # also: peak RSS of training on the largest
                                                 # prepared corpus vs on Tiny Shakespeare

Training memory: a child process builds the default preset's trainer on the prepared corpus,
runs ``--train-steps`` steps and saves a checkpoint; the same on Tiny Shakespeare; peak RSS of
each.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

from charlm.api import bundled_corpus

CHILD = """
import sys, time, json
from pathlib import Path
from charlm.text.corpus import PrepareConfig, prepare
src, out, kind = sys.argv[1], sys.argv[2], sys.argv[3]
t = time.perf_counter()
c = prepare([Path(src)], Path(out), PrepareConfig(vocab=kind, vocab_size=4096))
import resource
print(json.dumps({"seconds": time.perf_counter() - t,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "symbols": c.meta["splits"]["train"]["symbols"] + c.meta["splits"]["val"]["symbols"]}))
"""

TRAIN_CHILD = """
import sys, json, resource
from pathlib import Path
from charlm.api import build_trainer
corpus, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
trainer = build_trainer(corpus, out=out, max_steps=10**9, device="cpu")
trainer.write_run_files()
for _ in range(steps):
    trainer.train_step()
trainer.save("last.safetensors")
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "train_symbols": trainer.task.train_split.symbols}))
"""


def child(code: str, *args: str) -> dict:
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def make_text(path: Path, megabytes: int) -> None:
    if path.exists() and path.stat().st_size >= megabytes << 20:
        return
    lines = bundled_corpus().read_text(encoding="utf-8").splitlines(keepends=True)
    rng = random.Random(0)
    target = megabytes << 20
    with open(path, "w", encoding="utf-8") as f:
        written = 0
        while written < target:
            rng.shuffle(lines)
            block = "".join(lines)
            f.write(block)
            written += len(block)


def run(src: Path, out: Path, kind: str, keep: bool = False) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    result = child(CHILD, str(src), str(out), kind)
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1024], help="megabytes")
    ap.add_argument("--bpe", action="store_true", help="also prepare the first size with BPE")
    ap.add_argument("--train-rss", action="store_true",
                    help="also measure training memory on the largest prepared corpus")
    ap.add_argument("--train-steps", type=int, default=100)
    ap.add_argument("--work", type=Path, default=Path("/tmp/charlm-bench-prepare"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print("| text | vocab | seconds | MB/s | peak RSS MB |")
    print("| --- | --- | --- | --- | --- |")
    for mb in args.sizes:
        src = args.work / f"text-{mb}mb.txt"
        make_text(src, mb)
        size = src.stat().st_size / 2**20
        keep = args.train_rss and mb == max(args.sizes)
        r = run(src, args.work / "out", "char", keep=keep)
        print(f"| {size:,.0f} MB | char | {r['seconds']:.1f} | {size / r['seconds']:.0f} | "
              f"{r['rss_mb']:.0f} |", flush=True)
    if args.train_rss:
        big = child(TRAIN_CHILD, str(args.work / "out"), str(args.work / "run-big"),
                    str(args.train_steps))
        small = child(TRAIN_CHILD, str(bundled_corpus()), str(args.work / "run-small"),
                      str(args.train_steps))
        for d in ("out", "run-big", "run-small"):
            shutil.rmtree(args.work / d, ignore_errors=True)
        print(f"\ntraining, default preset, {args.train_steps} steps and a checkpoint save:")
        print("| corpus | train symbols | peak RSS MB |")
        print("| --- | --- | --- |")
        print(f"| Tiny Shakespeare | {small['train_symbols']:,} | {small['rss_mb']:.0f} |")
        print(f"| {max(args.sizes):,} MB prepared | {big['train_symbols']:,} | "
              f"{big['rss_mb']:.0f} |")
        print(f"ratio: {big['rss_mb'] / small['rss_mb']:.2f}", flush=True)
    if args.bpe:
        src = args.work / f"text-{args.sizes[0]}mb.txt"
        r = run(src, args.work / "out", "bpe")
        size = src.stat().st_size / 2**20
        print(f"| {size:,.0f} MB | bpe 4096 | {r['seconds']:.1f} | {size / r['seconds']:.0f} | "
              f"{r['rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
