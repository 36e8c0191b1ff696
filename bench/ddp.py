"""Scaling out: `charlm train` in 1, 2, 4... processes (torchrun, DistributedDataParallel), end to
end from the command line, on the same corpus, model and global batch.

Each run trains the same model for the same steps on the bundled corpus; the figure is the
steady rate (symbols trained per second of wall clock between step WARM and the last step, read
from the run's metrics.jsonl, so process start, corpus preparation and the first steps are left
out), and its ratio to linear scaling (rate with N processes / (N x rate with one)). On a CPU
each process gets cores / N threads, so linear scaling is the ceiling only where one process
could not use all the cores well; on a GPU machine `--device cuda --procs 1` against
`--device cpu --procs 1 2 4 8 16` compares one GPU with its CPU cores.

    python bench/ddp.py                           # 1 and 2 processes, 1x512 LSTM, batch 32
    python bench/ddp.py --procs 1 2 4 --hidden 256 --steps 300
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

WARM = 20  # steps left out at the start of every run


def steady_rate(metrics: Path) -> tuple[int, float]:
    """(steps, seconds of wall clock) from step WARM to the last step of a run. Each step
    trains lanes x BPTT symbols (the runs are shorter than an epoch, so no lane runs dry)."""
    steps = [json.loads(line) for line in metrics.read_text().splitlines()]
    steps = [m for m in steps if "loss" in m]
    first = next(m for m in steps if m["step"] >= WARM)
    return steps[-1]["step"] - first["step"], steps[-1]["time"] - first["time"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--bptt", type=int, default=64)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--corpus", type=Path, default=None, help="Default: the bundled corpus.")
    args = ap.parse_args()

    cores = os.cpu_count() or 1
    widest = max(args.procs)
    # (processes, threads each): the runs asked for, each process with cores / N threads, and
    # one process with the threads each process of the widest run gets (the base of linear).
    plan = [(n, max(1, cores // n)) for n in args.procs]
    base_plan = (1, max(1, cores // widest))
    if base_plan not in plan:
        plan.insert(0, base_plan)
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n, threads in plan:
            out = Path(tmp) / f"run{n}-{threads}"
            cmd = [sys.executable, "-m", "charlm", "train",
                   *([str(args.corpus)] if args.corpus else []),
                   "--preset", "fast", "--cell", "lstm", "--layers", str(args.layers),
                   "--hidden", str(args.hidden), "--batch-size", str(args.batch_size),
                   "--bptt", str(args.bptt), "--dropout", "0", "--max-steps", str(args.steps),
                   "--eval-every", str(10 * args.steps), "--save-every", str(10 * args.steps),
                   "--device", args.device, "--precision", args.precision, "--out", str(out)]
            if n > 1:
                cmd += ["--nproc", str(n)]
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"{n} processes failed:\n{r.stderr[-2000:]}")
            steps, seconds = steady_rate(out / "metrics.jsonl")
            rates[n, threads] = (steps / seconds, steps * args.batch_size * args.bptt / seconds)
            print(f"{n} process{'es' if n > 1 else ''} x {threads} thread"
                  f"{'s' if threads > 1 else ''}: {rates[n, threads][0]:.2f} steps/s, "
                  f"{rates[n, threads][1]:,.0f} chars/s", flush=True)
    whole = rates.get((1, cores), (None, None))[1]
    base = rates[base_plan][1]
    print()
    print(f"| processes | threads each | steps/s | chars/s | against 1 process x {cores} "
          f"threads | of linear (N x 1 process x {base_plan[1]} threads) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (n, threads), (sps, cps) in rates.items():
        against = f"{cps / whole:.2f}x" if whole else "-"
        linear = f"{cps / (n * base):.2f}" if threads == base_plan[1] else "-"
        print(f"| {n} | {threads} | {sps:.2f} | {cps:,.0f} | {against} | {linear} |")
    print(f"\n{args.layers}x{args.hidden} LSTM, {args.batch_size} lanes x {args.bptt} "
          f"(global batch), {args.steps} steps, {args.device}, {args.precision}, {cores} cores")


if __name__ == "__main__":
    main()
