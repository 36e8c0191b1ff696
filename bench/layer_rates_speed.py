"""Step time of plain fine-tuning against discriminative learning rates (--layer-lr-factor),
interleaved on the same batches of a classifier started from a language model.

Both arms run blocks of STEPS training steps in turn, from the start of the same epoch each
time, so the machine's noise falls on both alike; the figure is each arm's total time.

    python bench/layer_rates_speed.py LM_RUN TRAIN_DATA VAL_DATA [--factor 2.6] [--blocks 6]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from charlm.classify_runs import new_classifier_run

STEPS = 25


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("lm", type=Path)
    ap.add_argument("train", type=Path)
    ap.add_argument("val", type=Path)
    ap.add_argument("--factor", type=float, default=2.6)
    ap.add_argument("--blocks", type=int, default=6)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {name: new_classifier_run(
            [args.train], [args.val], Path(tmp) / name, None, {},
            {"layer_lr_factor": factor, "max_steps": 10**6, "dropout": 0.0}, init_from=args.lm)
            for name, factor in (("plain", 1.0), ("discriminative", args.factor))}
        seconds = {name: 0.0 for name in trainers}
        for _ in range(args.blocks):
            for name, trainer in trainers.items():
                trainer.pos.step = trainer.pos.batch = trainer.pos.epoch = 0
                t = time.perf_counter()
                for _ in range(STEPS):
                    trainer.train_step()
                seconds[name] += time.perf_counter() - t
    for name, s in seconds.items():
        print(f"{name}: {s:.1f} s for {args.blocks * STEPS} steps")
    print(f"ratio (discriminative / plain): {seconds['discriminative'] / seconds['plain']:.2f}")


if __name__ == "__main__":
    main()
