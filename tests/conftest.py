import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHAKESPEARE = REPO / "data" / "tinyshakespeare.txt"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test runs in its own directory with its own prepared-corpus cache."""
    monkeypatch.setenv("CHARLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def small_text() -> str:
    """About 20k characters of Shakespeare: enough for a few training chunks."""
    return SHAKESPEARE.read_text(encoding="utf-8")[:20000]


@pytest.fixture
def small_corpus(tmp_path, small_text) -> Path:
    path = tmp_path / "small.txt"
    path.write_text(small_text, encoding="utf-8")
    return path


def tiny_options(**overrides):
    """Options for a model and run small enough to train in about a second."""
    options = dict(preset="tiny", cell="lstm", num_layers=1, hidden_dim=32, embed_dim=16,
                   batch_size=4, bptt_len=32, max_steps=20, eval_every=10, save_every=10,
                   device="cpu")
    options.update(overrides)
    return options
