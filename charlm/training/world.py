"""The processes that train one run together, and the one place their figures are combined.

A run trains in one process, or in several started by ``torchrun`` (``join`` sets
torch.distributed up from torchrun's environment: RANK, WORLD_SIZE, LOCAL_RANK and the
rendezvous; gloo between CPU processes, NCCL between GPUs). Each process has a rank; the task
gives each rank its own share of the data (lanes, examples: ``share``), the model is wrapped in
DistributedDataParallel so gradients are averaged, the loop sums its figures across ranks here,
takes every decision that rests on the clock from the main process (``from_main``) so that all
ranks run the same steps, and only the main process (rank 0) writes files or prints.

    rank 0 ─┐  its lanes ─► forward ─► backward ─┐ DDP all-reduce ─► the same step on every rank
    rank 1 ─┤  its lanes ─► forward ─► backward ─┤ (gradients)       (identical weights)
    ...     ┘  figures: sum ─► the same loss, counts, validation; the clock: rank 0's
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import CharLMError


def launched_ranks() -> int:
    """How many processes torchrun started for this run (1 without torchrun)."""
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


def local_rank() -> int | None:
    """This process's index on its machine among several torchrun started (None without)."""
    value = os.environ.get("LOCAL_RANK", "")
    return int(value) if value.isdigit() and launched_ranks() > 1 else None


def is_main_process() -> bool:
    """Whether this process is a run's main one (rank 0, or the only one), from the
    environment alone (before torch.distributed is set up)."""
    return launched_ranks() == 1 or os.environ.get("RANK", "0") in ("", "0")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @classmethod
    def current(cls) -> World:
        """This process's place: from torch.distributed once it is set up, else alone."""
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @classmethod
    def join(cls, device: torch.device | None = None) -> World:
        """The processes torchrun started, joined (once per process); alone without torchrun.
        Between CPU processes the collectives run on gloo; with GPUs on NCCL (and the small
        figures of the loop on gloo)."""
        dist = torch.distributed
        if launched_ranks() > 1 and not dist.is_initialized():
            if not dist.is_available():
                raise CharLMError("this torch build has no torch.distributed; run one process")
            cuda = device is not None and device.type == "cuda"
            backend = "cpu:gloo,cuda:nccl" if cuda and dist.is_nccl_available() else "gloo"
            try:
                dist.init_process_group(backend)
            except (RuntimeError, ValueError) as exc:
                raise CharLMError(f"could not join the other processes of the run "
                                  f"({str(exc).splitlines()[0]}); start them with torchrun")
        return cls.current()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, count: int, what: str = "--batch-size",
              remedy: str = "use a larger --batch-size or fewer processes") -> np.ndarray:
        """This rank's items of ``count`` (lanes, examples): a contiguous block of about
        count / size, the blocks of all ranks in rank order covering every item once; every
        rank gets at least one."""
        if count < self.size:
            raise CharLMError(f"{what} {count} cannot be shared by {self.size} processes "
                              f"(each needs at least one); {remedy}")
        return self.part(np.arange(count))

    def part(self, items) -> np.ndarray:
        """This rank's contiguous block of ``items`` (it may be empty where they are fewer
        than the ranks)."""
        return np.array_split(np.asarray(items), self.size)[self.rank]

    def sum(self, *values: float) -> tuple[float, ...]:
        """Each value summed over the ranks (host numbers: through the CPU group, gloo)."""
        if self.size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return tuple(t.tolist())

    def any(self, flag: bool) -> bool:
        """Whether any rank says so (a stop request)."""
        return self.sum(float(flag))[0] > 0 if self.size > 1 else flag

    def from_main(self, value):
        """The main process's ``value`` (any picklable object), on every rank."""
        if self.size == 1:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def main_decides(self, decide):
        """``decide()`` run by the main process alone, its result (or the CharLMError it
        raised) on every rank: what must be one choice for the run (its directory, the
        settings for a budget)."""
        if self.size == 1:
            return decide()
        outcome = None
        if self.is_main:
            try:
                outcome = (True, decide())
            except CharLMError as exc:
                outcome = (False, str(exc))
        done, value = self.from_main(outcome)
        if not done:
            raise CharLMError(value)
        return value

    def gather(self, value) -> list:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if self.size == 1:
            return [value]
        values = [None] * self.size
        torch.distributed.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.size > 1:
            torch.distributed.barrier()

    @contextmanager
    def main_first(self):
        """The main process runs the block first (e.g. preparing a corpus into the cache),
        the others after it (finding it there)."""
        if not self.is_main:
            self.barrier()
        try:
            yield
        finally:
            if self.is_main:
                self.barrier()

