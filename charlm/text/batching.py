"""Truncated-BPTT lanes: how a split's stream is cut into B parallel streams and T-long chunks.

A split is one stream, every document preceded by EOD (``|`` below). It is cut into B lanes of
about equal length; each cut snaps to a nearby document start when there is one, so lanes read
whole documents one after another. A lane predicts stream[i+1] from stream[..i] for the input
positions i it owns; lanes own disjoint input ranges that together cover the stream, so every
target of the split is predicted exactly once per epoch.

    stream   |a a a a a a|b b b|c c c c c c c c c c|d d d d|e e e e e e e e|
    lane 0   |a a a a a a|b b b|c c               \\ cut inside c: the state is reset there
    lane 1                      c c c c c c c c|d d d d|     (snapped cut: starts at |)
    lane 2                                      |e e e e e e e e|  . . .  PAD
             └── chunk 0 ──┘└── chunk 1 ──┘ ...  (T columns each)

Chunk j holds columns j*T .. j*T+T-1 of every lane. The state is carried from chunk to chunk and
reset exactly where an input is EOD (a document starts) or a lane starts. A lane that runs out of
text is filled with PAD (id 0), which the loss ignores.

Lanes are independent ranges, so a layout can be split across processes by handing each one a
subset of lanes (``LaneLayout.select``).

For evaluation a lane may start ``burn_in`` inputs before its range (never before the start of the
document it cuts into): those inputs warm the state up but their targets are not scored, so
cutting the text into lanes costs almost no context.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CharLMError
from .vocab import PAD_ID


@dataclass
class Batch:
    inputs: np.ndarray   # (B, T) ids, PAD past a lane's end
    targets: np.ndarray  # (B, T) ids, PAD where nothing is scored
    reset: np.ndarray    # (B, T) bool: reset the state before consuming this input


class LaneLayout:
    """Which stream positions each lane reads, and the chunks that walk them in step."""

    def __init__(self, tokens: np.ndarray, doc_starts: np.ndarray, num_lanes: int,
                 bptt_len: int, eod_id: int, burn_in: int = 0, snap: float = 0.05):
        if num_lanes < 1 or bptt_len < 1:
            raise CharLMError("lanes and BPTT length must be at least 1")
        self.tokens = tokens
        self.bptt_len = bptt_len
        self.eod_id = eod_id
        n_inputs = len(tokens) - 1
        if n_inputs < 1:
            raise CharLMError("split holds no text")
        num_lanes = min(num_lanes, n_inputs)
        doc_starts = np.asarray(doc_starts, dtype=np.int64)
        ideal = np.round(np.arange(1, num_lanes) * (n_inputs / num_lanes)).astype(np.int64)
        cuts = ideal.copy()
        tolerance = snap * n_inputs / num_lanes
        if len(doc_starts) and len(ideal):
            idx = np.clip(np.searchsorted(doc_starts, ideal), 1, max(len(doc_starts) - 1, 1))
            left = doc_starts[np.clip(idx - 1, 0, len(doc_starts) - 1)]
            right = doc_starts[np.clip(idx, 0, len(doc_starts) - 1)]
            nearest = np.where(np.abs(left - ideal) <= np.abs(right - ideal), left, right)
            cuts = np.where(np.abs(nearest - ideal) <= tolerance, nearest, ideal)
        bounds = np.unique(np.concatenate([[0], cuts, [n_inputs]]))
        self.starts = bounds[:-1]  # first scored input of each lane
        self.ends = bounds[1:]     # one past the last input of each lane
        # Where each lane begins reading: burn_in earlier, but not before its document's start.
        if burn_in > 0 and len(doc_starts):
            doc_of = np.searchsorted(doc_starts, self.starts, side="right") - 1
            doc_begin = np.where(doc_of >= 0, doc_starts[np.clip(doc_of, 0, None)], 0)
            self.reads = np.maximum(self.starts - burn_in, doc_begin)
        else:
            self.reads = self.starts.copy()
        self.lengths = self.ends - self.reads

    @property
    def num_lanes(self) -> int:
        return len(self.starts)

    @property
    def chunks_per_epoch(self) -> int:
        return int(-(-int(self.lengths.max()) // self.bptt_len))

    def select(self, lanes) -> LaneLayout:
        """A layout over a subset of the lanes (e.g. one process's share)."""
        sub = object.__new__(LaneLayout)
        sub.__dict__.update(self.__dict__)
        lanes = np.asarray(lanes)
        sub.starts, sub.ends, sub.reads = self.starts[lanes], self.ends[lanes], self.reads[lanes]
        sub.lengths = sub.ends - sub.reads
        return sub

    def limited(self, per_lane: int) -> LaneLayout:
        """The layout with each lane's scored range cut to its first ``per_lane`` inputs (a
        sample spread evenly over the stream; the burn-in before each range is kept)."""
        sub = self.select(np.arange(self.num_lanes))
        sub.ends = np.minimum(self.ends, self.starts + per_lane)
        sub.lengths = sub.ends - sub.reads
        return sub

    def positions(self, chunk: int) -> np.ndarray:
        """(B, T) the stream positions of the inputs of ``chunk``."""
        t = self.bptt_len
        return self.reads[:, None] + chunk * t + np.arange(t)[None, :]

    def batch(self, chunk: int) -> Batch:
        pos = self.positions(chunk)
        valid = pos < self.ends[:, None]
        safe = np.where(valid, pos, 0)
        inputs = np.where(valid, self.tokens[safe], PAD_ID)
        targets = np.where(valid & (pos >= self.starts[:, None]), self.tokens[safe + 1], PAD_ID)
        reset = valid & ((inputs == self.eod_id) | (pos == self.reads[:, None]))
        return Batch(inputs.astype(np.int64), targets.astype(np.int64), reset)

    def scored(self, chunk: int) -> np.ndarray:
        """(B, T) bool: which targets of ``chunk`` this layout scores."""
        pos = self.positions(chunk)
        return (pos < self.ends[:, None]) & (pos >= self.starts[:, None])

    def target_positions(self, chunk: int) -> np.ndarray:
        """Stream positions of the targets scored in ``chunk`` (for tests and audits)."""
        return self.positions(chunk)[self.scored(chunk)] + 1
