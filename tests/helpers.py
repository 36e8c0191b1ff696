"""Plain helpers the tests share (fixtures are in conftest.py)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
SHAKESPEARE = REPO / "data" / "tinyshakespeare.txt"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def tiny_options(device: str = "cpu", **overrides) -> dict:
    """Options for a model and run small enough to train in about a second."""
    options = dict(preset="tiny", cell="lstm", num_layers=1, hidden_dim=32, embed_dim=16,
                   batch_size=4, bptt_len=32, max_steps=20, eval_every=10, save_every=10,
                   device=device, plot=False)
    options.update(overrides)
    return options


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of a run's metrics.jsonl (a line being written right now is left out)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def params(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def charlm_cmd(*args) -> list[str]:
    """``charlm ARGS`` as a child process."""
    return [sys.executable, "-m", "charlm", *[str(a) for a in args]]


def child_env(tmp_path: Path) -> dict:
    """The environment of a charlm child process, with the test's own corpus cache."""
    return {**os.environ, "CHARLM_CACHE_DIR": str(tmp_path / "cache")}
