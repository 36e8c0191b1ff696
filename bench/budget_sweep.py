"""Quality per CPU-minute across corpora, measured as a user runs charlm: the CLI end to end.

For each corpus (see ``bench/corpora.py``: training text = first 90%, held-out = last 10%) and
each budget, every setting runs

    charlm train CORPUS.train.txt --out DIR --max-time BUDGET [the setting's options]
    charlm eval CORPUS.heldout.txt --checkpoint DIR --json

one after another, alone, and one JSON line per run is appended to ``--json`` (default
``bench/.sweep/results.jsonl``): the held-out bits per character, the wall clock of the whole
``charlm train`` command (process start to exit), the steps and the settings the run used
(read from its config.json, so the automatic choice is recorded too).

    python bench/budget_sweep.py --corpus novels --budget 90 \\
        --setting 'auto=' --setting 'today=--preset fast'
    python bench/budget_sweep.py --corpus stdlib --budget 600 --setting 'large=--preset large'

A setting is LABEL=OPTIONS (charlm train options, shell-split; empty for none). ``--budget 0``
runs a setting with its own stopping rule (no ``--max-time``), e.g. ``'default='`` for what
``charlm train`` does with no option at all.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpora import CORPORA, corpus  # noqa: E402

CHARLM = [sys.executable, "-m", "charlm"]
WORK = Path(__file__).resolve().parent / ".sweep"


def run_one(name: str, budget: float, label: str, options: list[str]) -> dict:
    train, held = corpus(name)
    out = WORK / f"{name}-{int(budget)}-{label}"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    clock = ["--max-time", str(budget)] if budget else []
    done = subprocess.run([*CHARLM, "train", str(train), "--out", str(out), *clock, *options],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"charlm train failed ({label}):\n{done.stderr[-2000:]}")
    scored = subprocess.run([*CHARLM, "eval", str(held), "--checkpoint", str(out), "--json"],
                            capture_output=True, text=True, check=True)
    figures = json.loads(scored.stdout)
    config = json.loads((out / "config.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    evals = [r for r in records if "val_loss" in r]
    model, train_cfg = config["model"], config["train"]
    return {
        "corpus": name, "budget": budget, "label": label, "options": options,
        "heldout_bpc": figures["bpc"], "heldout_nats": figures["loss_nats"],
        "wall_s": round(wall, 1), "steps": steps[-1]["step"] if steps else 0,
        "elapsed": steps[-1]["time"] if steps else None,
        "val_loss": evals[-1]["val_loss"] if evals else None,
        "preset": config.get("preset"), "auto": config.get("auto"),
        "setting": {k: model.get(k) for k in ("cell", "num_layers", "hidden_dim", "dropout",
                                               "weight_drop")}
        | {k: train_cfg.get(k) for k in ("batch_size", "lr", "weight_decay", "precision")},
        "tail": done.stdout.strip().splitlines()[-1:] if done.stdout.strip() else [],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", action="append", choices=CORPORA, required=True)
    ap.add_argument("--budget", action="append", type=float, required=True)
    ap.add_argument("--setting", action="append", required=True, metavar="LABEL=OPTIONS")
    ap.add_argument("--json", type=Path, default=WORK / "results.jsonl")
    args = ap.parse_args()
    WORK.mkdir(exist_ok=True)
    for name in args.corpus:
        for budget in args.budget:
            for setting in args.setting:
                label, _, opts = setting.partition("=")
                row = run_one(name, budget, label, shlex.split(opts))
                with args.json.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{name:16s} {budget:>5g} s  {label:14s} held-out {row['heldout_bpc']:.4f} "
                      f"bpc  wall {row['wall_s']:>6.1f} s  steps {row['steps']:>6}  "
                      f"{row['setting']}", flush=True)


if __name__ == "__main__":
    main()
