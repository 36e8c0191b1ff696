"""Training configuration and presets: the one home of charlm's defaults.

A preset names a model size and training budget. ``charlm train`` with no option uses the
``default`` preset; any option given on the command line overrides the preset's value.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from .errors import CharLMError

MAX_SEED = 2**63 - 1
MAX_EPOCHS = 1_000_000

OPTIMIZERS = ("adamw", "adam", "rmsprop", "sgd")
SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("auto", "fp32", "bf16")
EVAL_PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")
# Config field -> the command-line option that sets it, for messages users can act on.
_FLAGS = {"num_layers": "--layers", "hidden_dim": "--hidden", "embed_dim": "--embed",
          "bptt_len": "--bptt", "warmup_steps": "--warmup", "vocab_size": "--vocab-size"}


def check_seed(seed: int) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise CharLMError(f"--seed must be between 0 and {MAX_SEED}, got {seed}")


def check_precision(value: str, allowed: tuple[str, ...] = PRECISIONS) -> None:
    if value not in allowed:
        raise CharLMError(f"--precision must be one of {', '.join(allowed)}, not {value!r}")


def flag(field_name: str) -> str:
    return _FLAGS.get(field_name, "--" + field_name.replace("_", "-"))


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 32          # parallel lanes
    bptt_len: int = 64            # time steps per chunk (truncated BPTT length)
    optimizer: str = "adamw"
    lr: float = 3e-3
    weight_decay: float = 0.0
    momentum: float = 0.9         # SGD momentum; RMSprop's momentum too
    warmup_steps: int = 100
    schedule: str = "cosine"
    min_lr_ratio: float = 0.05    # the decay ends at lr * min_lr_ratio
    clip_norm: float = 1.0        # 0 = no clipping by norm
    clip_value: float = 0.0       # 0 = no clipping by value
    max_bad_steps: int = 5        # stop after this many non-finite steps in a row
    max_steps: int | None = None
    epochs: float | None = None
    max_time: float | None = None  # seconds of training; the LR schedule spans it
    eval_every: int = 250
    save_every: int = 500
    eval_lanes: int = 32
    eval_burn_in: int = 256
    seed: int = 1337
    device: str = "auto"
    precision: str = "fp32"       # bf16: the training forward computes in bfloat16 (see model);
                                  # auto: bf16 where the CPU has bf16 instructions, else fp32

    def __post_init__(self):
        def positive(name, allow_zero=False):
            v = getattr(self, name)
            if v is None:
                return
            ok = v >= 0 if allow_zero else v > 0  # False for NaN too
            if not ok or math.isinf(v):
                raise CharLMError(f"{flag(name)} must be a finite number "
                                  f"{'>= 0' if allow_zero else '> 0'}, got {v}")
        for name in ("batch_size", "bptt_len", "lr", "eval_every", "save_every", "eval_lanes",
                     "max_steps", "epochs", "max_time", "max_bad_steps"):
            positive(name)
        for name in ("weight_decay", "momentum", "warmup_steps", "clip_norm", "clip_value",
                     "eval_burn_in", "min_lr_ratio"):
            positive(name, allow_zero=True)
        if self.optimizer not in OPTIMIZERS:
            raise CharLMError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, "
                              f"not {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise CharLMError(f"--schedule must be one of {', '.join(SCHEDULES)}, "
                              f"not {self.schedule!r}")
        check_precision(self.precision)
        if self.device not in DEVICES:
            raise CharLMError(f"--device must be one of {', '.join(DEVICES)}, not {self.device!r}")
        if self.epochs is not None and self.epochs > MAX_EPOCHS:
            raise CharLMError(f"--epochs must be at most {MAX_EPOCHS:,}, got {self.epochs:g}")
        if self.min_lr_ratio > 1:
            raise CharLMError("--min-lr-ratio must be at most 1")
        check_seed(self.seed)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def with_options(self, **options) -> TrainConfig:
        return replace(self, **{k: v for k, v in options.items() if v is not None})


# Each preset: model options (ModelConfig fields) and training options (TrainConfig fields).
PRESETS: dict[str, dict] = {
    "tiny": {  # seconds: for trying the tool out and for tests
        "model": {"cell": "lstm", "num_layers": 1, "hidden_dim": 64, "embed_dim": 32},
        "train": {"batch_size": 16, "bptt_len": 64, "max_steps": 200, "eval_every": 100},
    },
    # The presets below come from the sweeps in bench/RESULTS.md. "auto" precision trains in
    # bf16 where the CPU has bf16 instructions: ~1.45x the steps per second there, the same
    # loss per step (measured), and float32 elsewhere. AdamW's decoupled weight decay of 0.1
    # gained 0.007-0.029 nats/char in every preset (measured side by side).
    "fast": {  # about 1-3 minutes on a 2-core CPU; the winner at a 108 s budget
        "model": {"cell": "lstm", "num_layers": 1, "hidden_dim": 640, "embed_dim": 64,
                  "dropout": 0.0},
        "train": {"batch_size": 16, "bptt_len": 64, "lr": 5e-3, "weight_decay": 0.1,
                  "max_steps": 3000, "precision": "auto"},
    },
    "default": {  # about 3-7 minutes on a 2-core CPU; ~1.46 nats/char on Tiny Shakespeare
        "model": {"cell": "lstm", "num_layers": 2, "hidden_dim": 256, "embed_dim": 64,
                  "dropout": 0.2},
        "train": {"batch_size": 32, "bptt_len": 64, "lr": 3e-3, "weight_decay": 0.1,
                  "max_steps": 4000, "precision": "auto"},
    },
    "large": {  # about 10 minutes on a 2-core CPU with bf16; the winner at a 600 s budget
        "model": {"cell": "lstm", "num_layers": 2, "hidden_dim": 512, "embed_dim": 64,
                  "dropout": 0.2, "weight_drop": 0.25},
        "train": {"batch_size": 16, "bptt_len": 64, "lr": 3e-3, "weight_decay": 0.1,
                  "max_steps": 7000, "precision": "auto"},
    },
}
PRESET_HELP = ", ".join(f"{name}" for name in PRESETS)
# With --max-time and no preset or model option, the preset is chosen by the budget: the first
# whose "up_to" (seconds of training) covers it.
BUDGET_PRESETS = (("fast", 240.0), ("default", 480.0), ("large", math.inf))


def preset_for_budget(seconds: float) -> str:
    return next(name for name, up_to in BUDGET_PRESETS if seconds <= up_to)


def preset(name: str) -> dict:
    if name not in PRESETS:
        raise CharLMError(f"unknown --preset {name!r}; choose one of {PRESET_HELP}")
    return PRESETS[name]
