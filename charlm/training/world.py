"""The processes that train one run together, and the one place their figures are combined.

A run trains in one process, or in several started by ``torchrun`` (torch.distributed set up
before the trainer is made). Each process has a rank; the task gives each rank its own share of
the data (lanes, examples: ``share``), the loop sums its figures across ranks here and decides
stops together (``any``), and only the main process (rank 0) writes files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import CharLMError


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

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, count: int) -> np.ndarray:
        """This rank's items of ``count`` (lanes, examples): a contiguous block of about
        count / size, the blocks of all ranks covering every item once."""
        if count < self.size:
            raise CharLMError(f"{count} lanes or examples cannot be shared by {self.size} "
                              f"processes; use a larger --batch-size or fewer processes")
        return np.array_split(np.arange(count), self.size)[self.rank]

    def sum(self, *values: float, device: torch.device | str = "cpu") -> tuple[float, ...]:
        """Each value summed over the ranks."""
        if self.size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        return tuple(t.tolist())

    def any(self, flag: bool, device: torch.device | str = "cpu") -> bool:
        """Whether any rank says so (a stop request, a non-finite step)."""
        return self.sum(float(flag), device=device)[0] > 0 if self.size > 1 else flag
