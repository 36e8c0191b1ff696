"""Named presets of a language-model run, and where a new run's settings come from.

A preset gives values to options (by their field names); options given by the user override
them, and the declared defaults fill the rest. With no preset and no size option, a new run
takes no preset but settings chosen for the budget and the text (``charlm.budget``): the
``--max-time`` given, else ``training.config.DEFAULT_BUDGET`` seconds unless ``--max-steps``
or ``--epochs`` is given; those, or a size option, take the ``default`` preset.
"""

from __future__ import annotations

from .budget import AUTO
from .training.config import TrainConfig
from .errors import CharLMError

PRESETS: dict[str, dict] = {
    "tiny": {  # seconds: for trying the tool out and for tests
        "cell": "lstm", "num_layers": 1, "hidden_dim": 64, "embed_dim": 32,
        "batch_size": 16, "bptt_len": 64, "max_steps": 200, "eval_every": 100,
    },
    # The presets below come from the sweeps in bench/RESULTS.md. "auto" precision trains in
    # bf16 where the CPU has bf16 instructions: ~1.45x the steps per second there, the same
    # loss per step (measured), and float32 elsewhere. AdamW's decoupled weight decay of 0.1
    # gained 0.007-0.029 nats/char in every preset (measured side by side).
    "fast": {  # about 1-3 minutes on a 2-core CPU; the winner at a 108 s budget
        "cell": "lstm", "num_layers": 1, "hidden_dim": 640, "embed_dim": 64, "dropout": 0.0,
        "batch_size": 16, "bptt_len": 64, "lr": 5e-3, "weight_decay": 0.1,
        "max_steps": 3000, "precision": "auto",
    },
    "default": {  # about 3-7 minutes on a 2-core CPU; ~1.46 nats/char on Tiny Shakespeare
        "cell": "lstm", "num_layers": 2, "hidden_dim": 256, "embed_dim": 64, "dropout": 0.2,
        "batch_size": 32, "bptt_len": 64, "lr": 3e-3, "weight_decay": 0.1,
        "max_steps": 4000, "precision": "auto",
    },
    "large": {  # about 10 minutes on a 2-core CPU with bf16; the winner at a 600 s budget
        "cell": "lstm", "num_layers": 2, "hidden_dim": 512, "embed_dim": 64, "dropout": 0.2,
        "weight_drop": 0.25, "batch_size": 16, "bptt_len": 64, "lr": 3e-3, "weight_decay": 0.1,
        "max_steps": 7000, "precision": "auto",
    },
}
# What --help says of each.
PRESET_NOTES = {"tiny": "seconds, for trying things", "fast": "1x640 LSTM, ~1-3 min on 2 cores",
                "default": "2x256 LSTM, ~3-7 min", "large": "2x512 LSTM, ~10 min with bf16"}
DEFAULT_PRESET = "default"
# A regulariser is no size, nor is the cell: the budget's rule sizes the cell given (its speed
# is measured with it).
SIZE_OPTIONS = ("num_layers", "hidden_dim", "embed_dim")


# The training options of `charlm baseline window` (its model's sizes are WindowConfig's
# defaults): the loop's, at the `fast` preset's batch, rate and decay.
WINDOW_TRAINING = {"batch_size": 16, "bptt_len": 64, "lr": 3e-3, "weight_decay": 0.1,
                   "max_steps": 3000, "precision": "auto"}


# Presets of `charlm classify train` (bench/RESULTS.md section 11).
CLASSIFY_PRESETS: dict[str, dict] = {
    "tiny": {  # seconds: for trying the tool out and for tests
        "cell": "lstm", "num_layers": 1, "hidden_dim": 32, "embed_dim": 16, "batch_size": 16,
        "max_steps": 60, "eval_every": 30,
    },
    "default": {  # a few minutes on a 2-core CPU for a few thousand sentences
        "cell": "lstm", "num_layers": 1, "hidden_dim": 512, "embed_dim": 64, "dropout": 0.3,
        "head_dropout": 0.3, "batch_size": 32, "lr": 2e-3, "weight_decay": 0.1, "epochs": 10,
        "precision": "auto",
    },
}
CLASSIFY_PRESET_NOTES = {"tiny": "seconds, for trying things",
                         "default": "1x512 LSTM, 10 epochs"}


def preset(name: str, presets: dict[str, dict] = PRESETS) -> dict:
    if name not in presets:
        raise CharLMError(f"unknown --preset {name!r}; choose one of {', '.join(presets)}")
    return presets[name]


def choose_preset(name: str | None, given: dict) -> str:
    """What a new run's settings come from: the preset ``name``; else, with no size option and
    a time budget (given, or the default one where no stopping rule is given), ``AUTO``
    (settings chosen for the budget and the corpus, ``charlm.budget``); else the default
    preset (a size option, or a stopping rule in steps or passes)."""
    if name is not None:
        preset(name)
        return name
    sized = any(given.get(k) is not None for k in SIZE_OPTIONS)
    stopped = {k for k in TrainConfig.STOP_OPTIONS if given.get(k) is not None}
    if not sized and (not stopped or "max_time" in stopped):
        return AUTO
    return DEFAULT_PRESET
