"""The training loop's options, whatever the model and the task (saved under "train")."""

from __future__ import annotations

from dataclasses import dataclass

from ..devices import DEVICE_HELP, DEVICES, PRECISIONS
from ..errors import CharLMError
from ..options import (Options, at_most, non_negative_int, non_negative_number, option,
                       positive_int, positive_number, seed)

OPTIMIZERS = ("adamw", "adam", "rmsprop", "sgd")
SCHEDULES = ("cosine", "linear", "constant", "slanted")
MAX_EPOCHS = 1_000_000


# The time budget of a new run given no preset, no size option and no stopping rule: about what
# the `default` preset's 4,000 steps took on 2 cores, where the budget's rule (charlm.budget)
# beat that preset or tied it (bench/RESULTS.md section 10).
DEFAULT_BUDGET = 300.0


@dataclass(frozen=True)
class TrainConfig(Options):
    """Optimizer, schedule, clipping, stopping rules, cadence, seed, device and precision."""

    section = "train"
    STOP_OPTIONS = ("max_steps", "epochs", "max_time")  # given together, they replace each other

    optimizer: str = option("adamw", "The optimizer.", choices=OPTIMIZERS)
    lr: float = option(3e-3, "Peak learning rate.", check=positive_number)
    weight_decay: float = option(
        0.0, "Weight decay on the weight matrices (with adamw decoupled: each step shrinks them "
             "by lr x this; with adam, rmsprop and sgd an L2 term in the gradient).",
        check=non_negative_number)
    momentum: float = option(0.9, "Momentum of sgd and rmsprop.", check=non_negative_number)
    warmup_steps: int = option(100, "Steps of linear learning-rate warmup (at most a tenth of a "
                                    "run of known length).", flag="--warmup",
                               check=non_negative_int)
    schedule: str = option("cosine", "How the learning rate decays after warmup, over the "
                                     "run; slanted: ULMFiT's slanted triangle, a linear rise "
                                     "over the first tenth of the run to lr, then a linear "
                                     "fall to lr/32 (no separate warmup).", choices=SCHEDULES)
    min_lr_ratio: float = option(0.05, "The decay ends at lr x this.", command_line=False,
                                 check=non_negative_number)
    layer_lr_factor: float = option(
        1.0, "Discriminative learning rates (ULMFiT: 2.6): the output layer trains at --lr and "
             "each layer group below it (recurrent layers, then the embedding) at the lr of "
             "the one above divided by this.", check=positive_number)
    gradual_unfreeze: bool = option(
        False, "Gradual unfreezing (ULMFiT): train only the output layer in the first epoch, "
               "then one more layer group from the top each epoch (sooner in a run of few "
               "epochs: all train from half-way).")
    clip_norm: float = option(1.0, "Clip the gradient's global norm to this (0 = off).",
                              check=non_negative_number)
    clip_value: float = option(0.0, "Clip each gradient element to [-v, v] (0 = off).",
                               check=non_negative_number, default_help="off")
    max_steps: int | None = option(None, "Stop after this many steps.", check=positive_int,
                                   resumable=True, default_help="one epoch")
    epochs: float | None = option(None, "Stop after this many passes over the training text.",
                                  check=at_most(MAX_EPOCHS, positive_number), resumable=True,
                                  default_help="unset")
    max_time: float | None = option(
        None, "Stop after this many seconds of wall clock: preparing the corpus, steps, "
              "validation and saves all count, and the run ends in time for its final "
              "validation and save; the LR schedule spans the budget.", check=positive_number,
        resumable=True, default_help=f"{DEFAULT_BUDGET:g} for a new run with no preset, no "
                                     f"size option and no other stopping rule, with settings "
                                     f"chosen for it (see --preset); else unset")
    eval_every: int = option(250, "Validate every this many steps.", check=positive_int,
                             resumable=True)
    save_every: int = option(500, "Write the last checkpoint at least every this many steps.",
                             check=positive_int, resumable=True)
    plot: bool = option(True, "Draw the training curves into the run directory's curves.png "
                              "(at evaluations, at most once a minute, and at the end).",
                        resumable=True)
    seed: int = option(1337, "Random seed; the same seed gives the same run on CPU.", check=seed)
    device: str = option("auto", DEVICE_HELP, choices=DEVICES, resumable=True)
    precision: str = option(
        "fp32", "bf16: the training forward and backward compute in bfloat16 on casts of "
                "float32 weights, which the optimizer updates (faster on CPUs with bf16 "
                "instructions; evaluation and sampling stay float32); auto: bf16 on such CPUs, "
                "else fp32.", choices=PRECISIONS, resumable=True)
    max_bad_steps: int = option(
        5, "A step whose loss or gradient norm is not a finite number is skipped (and counted "
           "in the log); stop after this many in a row, keeping the last good checkpoint.",
        check=positive_int, resumable=True)

    def check(self) -> None:
        if self.min_lr_ratio > 1:
            raise CharLMError("--min-lr-ratio must be at most 1")
        if self.layer_lr_factor < 1:
            raise CharLMError("--layer-lr-factor must be at least 1 (lower layers learn more "
                              "slowly, never faster)")

    @classmethod
    def over(cls, values: dict, given: dict) -> dict:
        """``values`` (a preset's, a saved run's) with the options ``given`` on top (None: not
        given); a stopping rule given replaces the one in ``values`` as a whole."""
        given = {k: v for k, v in given.items() if v is not None}
        if any(k in given for k in cls.STOP_OPTIONS):
            values = {k: v for k, v in values.items() if k not in cls.STOP_OPTIONS}
        return {**values, **given}

    def resumed_with(self, **given) -> TrainConfig:
        """The run's config with the options given on resume (see ``over``)."""
        return TrainConfig(**self.over(self.to_dict(), given))
