"""Crash safety: kill -9 a training run at random moments, resume it each time, and check that it
ends exactly like an uninterrupted run.

One uninterrupted ``charlm train`` is the reference. The same run is then started, killed with
SIGKILL after a random delay (start-up, training steps, validation and checkpoint writes all
get hit), and continued with ``charlm train --resume``, ``--kills`` times. After every kill:

  * the run directory holds a ``last.safetensors`` that loads and evaluates (once one was
    written; a kill before the first save starts the run afresh),
  * temporary files a kill left behind (a save cut short) are gone once the next start is
    under way.

At the end the final weights must equal the reference's bit for bit and the logged losses,
gradient norms and validation figures must be the same.

    python bench/crash.py                 # 25 kills
    python bench/crash.py --save-every 3  # saves so frequent that some kills cut one short
    python bench/crash.py --kills 40 --seed 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import charlm
from charlm.api import bundled_corpus
from charlm.checkpoint import load_checkpoint
from charlm.training.run_dir import stale_temp_files

RUN = ["--preset", "tiny", "--layers", "2", "--hidden", "128", "--embed", "32",
       "--batch-size", "16", "--bptt", "64", "--dropout", "0.1", "--device", "cpu",
       "--seed", "7"]


def read_log(run: Path) -> list[dict]:
    """metrics.jsonl as it is on disk (a line cut short by the kill is skipped)."""
    out = []
    path = run / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def logged(run: Path) -> list[dict]:
    keep = ("step", "loss", "grad_norm", "lr", "val_loss")
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        out.append({k: m[k] for k in keep if k in m})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=25)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    # Default: validation (which writes best.safetensors) every 50 steps, the periodic last
    # checkpoint every 80, so kills land before, between and after the first saves of each
    # kind. --save-every 3 makes saves so frequent that kills cut some of them short.
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--save-every", type=int, default=80)
    ap.add_argument("--max-delay", type=float, default=4.0,
                    help="longest wait (s) after a start before the kill")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    run_options = [*RUN, "--eval-every", args.eval_every, "--save-every", args.save_every]
    with tempfile.TemporaryDirectory(prefix="charlm-crash-") as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "CHARLM_CACHE_DIR": str(tmp / "cache")}
        corpus = bundled_corpus()

        def cmd(*a):
            return [sys.executable, "-m", "charlm", *[str(x) for x in a]]
        t0 = time.perf_counter()
        ref = tmp / "reference"
        subprocess.run(cmd("train", corpus, "--out", ref, *run_options, "--max-steps",
                           args.steps), env=env, check=True, capture_output=True)
        ref_seconds = time.perf_counter() - t0
        print(f"torch {torch.__version__}; reference run: {args.steps} steps in "
              f"{ref_seconds:.1f} s", flush=True)

        run = tmp / "run"
        fresh = cmd("train", corpus, "--out", run, *run_options, "--max-steps", args.steps)
        resume = cmd("train", "--resume", run)
        stats = {"kills": 0, "before first save": 0, "left a temp file": 0,
                 "killed with steps since the last checkpoint (redone on resume)": 0,
                 "checkpoint loaded and evaluated": 0, "temp files cleaned at next start": 0}
        pending: set[Path] = set()  # temp files kills left, not yet removed
        finished_early = False
        while stats["kills"] < args.kills:
            started = (run / "last.safetensors").exists()
            proc = subprocess.Popen(resume if started else fresh, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.2, args.max_delay))
            gone = {p for p in pending if not p.exists()}  # the start under way removed them
            stats["temp files cleaned at next start"] += len(gone)
            pending -= gone
            if proc.poll() is not None:
                finished_early = True
                break
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            stats["kills"] += 1
            logged_steps = [m.get("step", 0) for m in read_log(run)]
            leftovers = set(stale_temp_files(run)) - pending
            pending |= leftovers
            stats["left a temp file"] += bool(leftovers)
            if not (run / "last.safetensors").exists():
                stats["before first save"] += 1
                continue
            lm = charlm.load(run, which="last")
            lm.evaluate("ROMEO: But soft, what light through yonder window breaks?")
            stats["checkpoint loaded and evaluated"] += 1
            step = load_checkpoint(run / "last.safetensors", with_trainer=True) \
                .trainer_state["step"]
            lost = max(logged_steps, default=0) - step
            stats["killed with steps since the last checkpoint (redone on resume)"] += lost > 0
            print(f"kill {stats['kills']:2d}: checkpoint at step {step:4d}, {lost:3d} logged "
                  f"steps after it{', a save was cut short' if leftovers else ''}", flush=True)
        if not finished_early:
            r = subprocess.run(resume, env=env, capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"FAIL: the final resume failed: {r.stderr}")
        stats["temp files cleaned at next start"] += sum(not p.exists() for p in pending)
        if stale_temp_files(run):
            raise SystemExit("FAIL: temp files left after the run finished")
        a = load_checkpoint(run / "last.safetensors").model.state_dict()
        b = load_checkpoint(ref / "last.safetensors").model.state_dict()
        same_weights = all(torch.equal(a[k], b[k]) for k in b)
        same_log = logged(run) == logged(ref)

    print("\n| what | figure |")
    print("| --- | --- |")
    for k, v in stats.items():
        print(f"| {k} | {v} |")
    print(f"| final weights equal the uninterrupted run's (bitwise) | "
          f"{'yes' if same_weights else 'NO'} |")
    print(f"| logged losses, gradient norms, val figures equal | {'yes' if same_log else 'NO'} |")
    if not (same_weights and same_log):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
