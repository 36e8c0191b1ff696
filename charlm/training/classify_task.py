"""Many-to-one classification as a task for the loop: batches of whole texts, one label each.

An epoch visits every training text once, in an order drawn from the run's seed and the epoch
(so a resumed run sees the same batches). Two ways to batch texts of different lengths
(``--batching``):

    bucketed  texts of similar length together: each pool of POOL_BATCHES batches' worth of
              the epoch's order is sorted by length and cut into batches, and the batches are
              shuffled; read padded (PAD = 0 after each text's end), the features past each
              end ignored
    packed    batches in the epoch's order, read packed (``pack_padded_sequence``); the fused
              layers only

The loss is the summed cross-entropy (``--balance``: each class weighted by its inverse
frequency in the training texts, so every class counts alike); the validation figures are
accuracy (which picks the best checkpoint), macro-F1 and the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..classify import Encoded, figures, padded, probabilities
from ..errors import CharLMError
from ..options import Options, fraction, option, positive_int
from .task import Task
from .world import World

POOL_BATCHES = 50
BATCHINGS = ("bucketed", "packed")


@dataclass(frozen=True)
class ClassifyTaskConfig(Options):
    """How the texts are batched and weighted (saved with the training options)."""

    section = "train"

    batch_size: int = option(32, "Texts per batch.", check=positive_int)
    batching: str = option(
        "bucketed", "bucketed: texts of similar length batched together, read padded (the "
                    "faster here: bench/RESULTS.md); packed: batches in random order, read "
                    "packed (the fused cells only).", choices=BATCHINGS)
    balance: bool = option(False, "Weight the loss by each class's inverse frequency, so "
                                  "rare classes count as much as common ones.")
    val_fraction: float = option(
        0.1, "Without --val: the share of the examples held out for validation (drawn per "
             "label, seeded, so every label keeps its share; 0 = none).", check=fraction)


@dataclass
class LabelledSet:
    """Encoded texts and their label ids."""

    encoded: Encoded
    labels: np.ndarray  # (N,) label ids

    def __len__(self) -> int:
        return len(self.labels)


class ClassificationTask(Task):
    count_name = "examples"
    validation_key = "val_accuracy"
    higher_is_better = True

    def __init__(self, train: LabelledSet, val: LabelledSet | None, labels: tuple[str, ...],
                 vocab, config: ClassifyTaskConfig, seed: int, data: dict | None = None):
        if len(train) == 0:
            raise CharLMError("no training examples")
        self.train, self.val, self.labels, self.vocab = train, val, labels, vocab
        self.config, self.seed, self.data = config, seed, data or {}
        self.lengths = train.encoded.lengths
        counts = np.bincount(train.labels, minlength=len(labels))
        # Weights with a mean of 1 over the training texts, so the loss keeps its scale.
        self.weights = (len(train) / (len(labels) * np.maximum(counts, 1))).astype(np.float32)
        self._epoch, self._batches = None, None
        self.world = World()

    @property
    def batches_per_epoch(self) -> int:
        return -(-len(self.train) // self.config.batch_size)

    def describe(self) -> dict:
        return {"examples": len(self.train), "val_examples": len(self.val) if self.val else 0,
                "labels": list(self.labels), "batches_per_epoch": self.batches_per_epoch}

    def data_config(self) -> dict:
        return {"data": self.data}

    def start(self, model: nn.Module, world: World) -> None:
        world.share(self.config.batch_size)  # refuses more processes than texts per batch
        self.world = world
        if self.config.batching == "packed" and not model.backbone.packs:
            raise CharLMError(f"--batching packed needs a fused cell (lstm, gru, rnn, irnn "
                              f"without layer norm or recurrent dropout); --cell "
                              f"{model.config.cell} runs step by step: use --batching bucketed")
        self.device = model.device
        self.class_weights = (torch.from_numpy(self.weights).to(self.device)
                              if self.config.balance else None)

    def batches(self, epoch: int) -> list[np.ndarray]:
        """The batches (rows of the training set) of ``epoch``."""
        if self._epoch != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(len(self.train))
            n = self.config.batch_size
            if self.config.batching == "bucketed":
                pool = n * POOL_BATCHES
                batches = []
                for s in range(0, len(order), pool):
                    part = order[s:s + pool]
                    part = part[np.argsort(self.lengths[part], kind="stable")]
                    batches += [part[i:i + n] for i in range(0, len(part), n)]
                batches = [batches[i] for i in rng.permutation(len(batches))]
            else:
                batches = [order[i:i + n] for i in range(0, len(order), n)]
            self._epoch, self._batches = epoch, batches
        return self._batches

    def train_loss(self, model: nn.Module, epoch: int, index: int) -> tuple[torch.Tensor, int]:
        """With several processes each reads its share of the batch's texts; one whose share
        is empty (a last batch smaller than the processes) reads a text at weight 0, so that
        every rank runs the model as DDP needs."""
        rows = self.batches(epoch)[index]
        weight = 1.0
        if self.world.size > 1:
            mine = self.world.part(rows)
            rows, weight = (mine, 1.0) if len(mine) else (rows[:1], 0.0)
        ids, lengths = padded(self.train.encoded.ids, rows, self.device)
        logits = model(ids, lengths, packed=self.config.batching == "packed")
        target = torch.from_numpy(self.train.labels[rows]).to(self.device)
        loss = nn.functional.cross_entropy(logits.float(), target, weight=self.class_weights,
                                           reduction="none")
        return loss.sum() * weight, len(rows) if weight else 0

    def validation_size(self, final: bool) -> int:
        return len(self.val) if self.val is not None else 0

    def validate(self, model: nn.Module, final: bool = False,
                 limit: int | None = None) -> dict | None:
        if self.val is None:
            return None
        ids = self.val.encoded.ids
        if self.world.size > 1:  # each rank its share of the texts, gathered in their order
            mine = self.world.part(np.arange(len(ids)))
            parts = self.world.gather(probabilities(model, [ids[i] for i in mine]))
            probs = np.concatenate(parts)
        else:
            probs = probabilities(model, ids)
        result = figures(self.val.labels, probs.argmax(axis=1), self.labels, probs)
        return {"val_accuracy": result["accuracy"], "val_f1": result["macro_f1"],
                "val_loss": result.get("loss", float("nan"))}
