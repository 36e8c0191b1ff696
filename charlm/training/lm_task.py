"""Language modelling as a task for the loop: next-symbol prediction over truncated-BPTT lanes.

The training split is cut into lanes (``text.batching``); step i trains on chunk i of every lane
with the hidden state carried from the chunk before (detached) and reset where a document
starts. The validation figure is ``charlm.evaluate`` on the validation split: nats per symbol
(lower is better) and bits per character.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import CharLMError
from ..evaluate import BURN_IN, MIN_LANES, EvalConfig, evaluate
from ..options import Options, non_negative_int, option, positive_int
from ..predictor import loss_sum
from ..text.batching import LaneLayout
from ..text.corpus import PrepareConfig, PreparedCorpus
from ..text.vocab import PAD_ID
from .task import Task
from .world import World

# Symbols a validation during training scores at most: a fixed sample of a longer split, the
# same positions every time (see charlm.evaluate); a few seconds of a 2x512 model on a CPU.
VAL_SAMPLE = 1 << 17


@dataclass(frozen=True)
class LMTaskConfig(Options):
    """How the text is batched (saved with the training options, under "train")."""

    section = "train"

    batch_size: int = option(32, "Parallel lanes per batch.", check=positive_int)
    bptt_len: int = option(64, "Truncated BPTT length: time steps per chunk.", flag="--bptt",
                           check=positive_int)
    eval_lanes: int = option(MIN_LANES, "Lanes of the validation pass.", check=positive_int,
                             command_line=False)
    eval_burn_in: int = option(BURN_IN, "Symbols each validation lane reads before its range.",
                               check=non_negative_int, command_line=False)
    val_sample: int = option(
        VAL_SAMPLE, "Validations during training score a fixed sample of this many symbols "
                    "spread over a longer validation split (0: all of it); the last one scores "
                    "all of it (under --max-time, what its share of the budget allows).",
        check=non_negative_int)
    # A run saved before val_sample existed scored its whole split every time: resumed, it
    # goes on so, or its best figure would be compared with a sample's.
    SAVED_BEFORE = {"val_sample": 0}


def corpus_record(corpus: PreparedCorpus) -> dict:
    """What a run's config says of its prepared corpus (where it is, its vocab, its
    splits)."""
    meta = corpus.meta
    return {"corpus": {
        "path": str(corpus.path.resolve()),
        "vocab": meta["vocab"],
        "doc_separator": meta.get("doc_separator"),
        "val_fraction": meta.get("val_fraction"),
        "encoding": meta.get("encoding", PrepareConfig.default("encoding")),
        "sources": meta.get("sources", []),
        "splits": {k: {kk: v[kk] for kk in ("symbols", "documents", "chars")}
                   for k, v in meta["splits"].items()},
    }}


class LanguageModelTask(Task):
    count_name = "symbols"
    validation_key = "val_loss"
    higher_is_better = False

    def __init__(self, corpus: PreparedCorpus, config: LMTaskConfig):
        self.corpus, self.config, self.vocab = corpus, config, corpus.vocab
        self.train_split = corpus.split("train")
        self.val_split = corpus.split("val") if corpus.has_split("val") else None
        symbols, bptt = self.train_split.symbols, config.bptt_len
        if symbols < bptt + 1:
            raise CharLMError(
                f"training text is shorter than one chunk: {symbols} symbols, --bptt {bptt} "
                f"needs at least {bptt + 1}; use a longer corpus or a smaller --bptt")
        lanes = min(config.batch_size, max(1, symbols // bptt))
        self.layout = LaneLayout(self.train_split.tokens, self.train_split.doc_starts, lanes,
                                 bptt, self.vocab.eod_id)
        # Every process runs the whole layout's number of chunks; each reads its own lanes.
        self.lanes, self.chunks = self.layout.num_lanes, self.layout.chunks_per_epoch
        # Characters the vocab lacks, in a text encoded with another run's vocab (--init-from):
        # no target of the loss, as in evaluation.
        self.unknown_in_training = bool(self.train_split.unknown) and \
            self.vocab.unk_id is not None
        self.state: tuple[torch.Tensor, ...] | None = None  # the lanes' carried state
        self.world, self.share = World(), None  # this process's place, its lanes (start)
        self._next_state = None

    @property
    def batches_per_epoch(self) -> int:
        return self.chunks

    def describe(self) -> dict:
        return {"lanes": self.lanes, "chunks_per_epoch": self.chunks}

    def data_config(self) -> dict:
        return corpus_record(self.corpus)

    def start(self, model: nn.Module, world: World) -> None:
        self.world = world
        self.share = world.share(self.lanes) if world.size > 1 else None
        if self.val_split is not None and world.size > 1:  # refused now, not at validation
            world.share(self.config.eval_lanes, "the validation's lane count",
                        "run fewer processes")
        if self.share is not None:
            self.layout = self.layout.select(self.share)
        self.device = model.device
        self.state = model.initial_state(self.layout.num_lanes)

    def train_loss(self, model: nn.Module, epoch: int, index: int) -> tuple[torch.Tensor, int]:
        batch = self.layout.batch(index)
        x = torch.from_numpy(batch.inputs).to(self.device, non_blocking=True)
        y = torch.from_numpy(batch.targets).to(self.device, non_blocking=True)
        reset = torch.from_numpy(batch.reset).to(self.device, non_blocking=True)
        logits, self._next_state = model(x, self.state, reset)
        if self.unknown_in_training:  # a model's vocab on new text: UNK is never predicted
            y = y.masked_fill(y == self.vocab.unk_id, PAD_ID)
        return loss_sum(logits, y)

    def end_step(self, kept: bool) -> None:
        if kept:
            self.state = tuple(s.detach() for s in self._next_state)
        self._next_state = None

    def validation_size(self, final: bool) -> int:
        if self.val_split is None:
            return 0
        sample, lanes = self.config.val_sample, self.config.eval_lanes
        if final or not sample:
            return self.val_split.symbols
        return min(-(-sample // lanes) * lanes, self.val_split.symbols)  # whole lanes' shares

    def validate(self, model: nn.Module, final: bool = False,
                 limit: int | None = None) -> dict | None:
        """Nats per symbol and bits per character on the validation split: on its fixed
        sample during training, on all of it (or its first ``limit`` symbols per the lanes)
        when ``final``, with the sample's figure beside it ("val_sample_loss", from the same
        pass) for choosing the best checkpoint alike. "val_symbols" says how many were scored
        where that is not the whole split."""
        if self.val_split is None:
            return None
        c = self.config
        sample = c.val_sample or None
        result = evaluate(model, self.vocab, self.val_split,
                          EvalConfig(lanes=c.eval_lanes, burn_in=c.eval_burn_in),
                          sample=sample if final else None, limit=limit if final else sample,
                          world=self.world)
        record = {"val_loss": result["loss_nats"], "val_bpc": result["bpc"]}
        if sample and sample < self.val_split.symbols:
            record["val_symbols"] = result["symbols"]
            if "sample" in result:
                record["val_sample_loss"] = result["sample"]["loss_nats"]
        return record

    def selection_figure(self, record: dict) -> float:
        return record.get("val_sample_loss", record["val_loss"])

    def state_dict(self) -> dict:
        """The carried state of every lane (with several processes, gathered from all ranks
        in lane order: the state one process with all the lanes would have)."""
        state = tuple(s.detach().cpu() for s in self.state)
        if self.share is not None:
            parts = self.world.gather(state)
            state = tuple(torch.cat([p[i] for p in parts], dim=1) for i in range(len(state)))
        return {"lanes": self.lanes, "bptt_len": self.config.bptt_len, "lane_state": state}

    def load_state_dict(self, state: dict) -> None:
        if state["lanes"] != self.lanes or state["bptt_len"] != self.config.bptt_len:
            raise CharLMError("cannot resume: the lane layout differs from the checkpoint's "
                              "(--batch-size and --bptt cannot change on resume)")
        lanes = state["lane_state"]
        if self.share is not None:  # this rank's lanes, whatever number of processes saved it
            index = torch.from_numpy(self.share)
            lanes = tuple(s.index_select(1, index) for s in lanes)
        self.state = tuple(s.to(self.device) for s in lanes)
