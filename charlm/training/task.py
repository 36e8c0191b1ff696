"""What the training loop asks of a task. Nothing in the loop knows about language models.

A task owns the data and how the model is run on it: it hands out batches by index within an
epoch, computes their summed loss, keeps whatever a step carries forward (a language model's
hidden state across chunks), scores the validation data, and saves and restores its own state
for an exact resume. The loop owns the rest: optimizer, schedule, clipping, non-finite steps,
evaluation and save cadence, stopping rules, checkpoints and events.

    loop:  for each step:  total, count = task.train_loss(model, epoch, index)   # forward
                           ... backward, clip, optimizer step (or skip) ...
                           task.end_step(kept)                             # carry or drop
           every so often: record = task.validate(model)                   # the figure
"""

from __future__ import annotations

import torch
from torch import nn

from ..options import Options
from .world import World


class Task:
    """A task (see the module doc). Subclasses set the class attributes and implement the
    methods below."""

    count_name: str = "targets"      # what the loss is averaged over, for the log ("symbols")
    validation_key: str = "val_loss"  # the validation figure that picks the best checkpoint
    higher_is_better: bool = False
    config: Options                  # the task's options, saved with the training options
    vocab: object                    # saved in every checkpoint, so a run is self-contained

    @property
    def batches_per_epoch(self) -> int:
        raise NotImplementedError

    def describe(self) -> dict:
        """Figures about the data for the run's config and the start event (JSON-able)."""
        return {}

    def data_config(self) -> dict:
        """Where the data came from, as sections of the run's config ({"corpus": ...};
        JSON-able)."""
        return {}

    def start(self, model: nn.Module, world: World) -> None:
        """Ready the task for a model on its device, as one of ``world``'s processes (a new
        run, or before a resumed state is loaded): take this process's share of the data."""

    def train_loss(self, model: nn.Module, epoch: int, index: int) -> tuple[torch.Tensor, int]:
        """Forward batch ``index`` of epoch ``epoch`` in training mode (a task that shuffles
        does it by the epoch, so a resumed run sees the same batches): the summed loss (a
        tensor to differentiate) and how many targets it sums over, on this process."""
        raise NotImplementedError

    def end_step(self, kept: bool) -> None:
        """After the optimizer step (``kept``) or a skipped non-finite step (not ``kept``)."""

    def validation_size(self, final: bool) -> int:
        """How many targets a validation scores (``final``: the last one of a run), 0 without
        validation data: the loop budgets its time by it."""
        return 0

    def validate(self, model: nn.Module, final: bool = False,
                 limit: int | None = None) -> dict | None:
        """The validation record (``validation_key`` among its figures), or None without
        validation data. A task may score a sample during training, and all of its validation
        data when ``final`` (at most ``limit`` targets where given)."""
        return None

    def selection_figure(self, record: dict) -> float:
        """The figure of a validation record that picks the best checkpoint (comparable across
        records: a final record may carry its sample's figure for that)."""
        return record[self.validation_key]

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
