"""Shared by the benchmarks: the training throughput of a charlm Trainer."""

from __future__ import annotations

import statistics
import time


def train_step_rate(trainer, steps: int = 20, warm_up: int = 3) -> float:
    """Characters (target symbols) per second of ``Trainer.train_step``: the median over
    ``steps`` steps after ``warm_up`` untimed ones (the median resists a noisy shared host)."""
    for _ in range(warm_up):
        trainer.train_step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        out = trainer.train_step()
        times.append((time.perf_counter() - t) / out["targets"])
    return 1 / statistics.median(times)
