"""Binary addition: the lectures' toy problem for recurrent networks.

Two numbers are fed to a recurrent network one column at a time, least-significant bit
first: at step ``t`` the two input units hold bit ``t`` of each number.  The network must
emit the bits of the sum.  A column's sum bit depends on every column below it (through
the carry), so no fixed window of inputs suffices, but a net that keeps one bit of state
(the carry) can add numbers of any length.  Trained on 8-bit sums, the small Elman net
here adds 16-, 32-, 64- and 128-bit numbers exactly.

The delay.  As in the lecture, the sum bit of column ``t`` is due ``--delay`` steps after
that column is read (default 2): the target at step ``t`` is the sum bit of column
``t - delay``, and nothing is due (and nothing is scored) at the first ``delay`` steps.
The inputs are padded with ``1 + delay`` zero columns, so an ``n``-bit problem runs
``n + 1 + delay`` steps and all ``n + 1`` sum bits are emitted, the final carry
included.

Timing matters for the size of the net.  The lecture's three-unit net spends one step
going from the inputs to the hidden units and another going from the hidden units to the
output unit, so its delay of two steps is the net's own latency.  Here the readout is
linear and reads the hidden state of the same step (torch's timing), so ``--delay 0`` is
the lecture's net, and a delay of 2 makes the hidden state also hold the two sum bits
that are computed but not yet emitted.  That costs units.  A column's sum bit is the
parity of three bits, which no single tanh unit computes, so about three units are needed
to code the column, plus about one for each bit held back: 4 units never learned
``--delay 2`` in our runs, 5 learned it about half the time, and 8 (the default) learn it
reliably.  ``--delay 0 --hidden 3`` is the lecture's net.

How reliably the net works on numbers longer than 8 bits depends on the training
recipe.  An 8-bit sum never carries through more than 7 columns in a row, so a net can
be perfect on 8 bits with a carry unit that slowly leaks, and then fail on the long carry
chains of wider numbers.  Three things help, and this script uses all three: a quarter of
the training pairs are 8-bit pairs with a long carry chain (``--long-carry-fraction``),
gradients are clipped and the learning rate is decayed, and over the second half of
training a small penalty pushes the hidden units towards +-1 (``--saturation``), which
turns the net into a clean finite-state machine.  A run that ends below 100% on the
held-out 8-bit sums is restarted with the next seed, and the script says when that
happens.

For contrast, two feed-forward nets are trained on the same 8-bit pairs:

* a fixed-width MLP (the 2 x 8 input bits in, the 9 sum bits out).  Its input layer has a
  fixed width, so it cannot take a 16-bit number at all.  Applied to a wide number 8
  columns at a time, it loses every carry between chunks;
* a sliding-window MLP that sees the ``K`` most recent columns at every step.  This is a
  memoryless net with ``K`` delay taps; by default ``K = 9``, the 8 columns of a problem
  plus the column of its final carry, the smallest window that can get every 8-bit sum
  right.  It is nearly right on random wide numbers, whose carry chains are short, and
  fails on any carry that travels through more than ``K - 1`` columns in a row
  (``0111...1 + 1``, for example), which the RNN handles.

Run ``python examples/binary_addition.py`` (about 15 s on one CPU core).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

WIDTHS = (8, 16, 32, 64, 128)


# --- data ----------------------------------------------------------------------------


def random_operands(rng: np.random.Generator, count: int, bits: int):
    """``count`` random pairs of ``bits``-bit numbers, as two (count, bits) uint8 arrays
    of bits, least-significant bit first."""
    a = rng.integers(0, 2, size=(count, bits), dtype=np.uint8)
    b = rng.integers(0, 2, size=(count, bits), dtype=np.uint8)
    return a, b


def carry_chain_operands(rng: np.random.Generator, count: int, bits: int, min_chain: int):
    """Random pairs with a run of at least ``min_chain`` propagating columns.

    Column ``s`` decides a carry, at random either way: 1 + 1 sets it, 0 + 0 clears it.
    The next ``L >= min_chain`` columns propagate it (one 0 and one 1), so the sum bits
    up to ``L + 1`` columns above ``s`` depend on column ``s``.  The other columns are
    random.  ``min_chain`` must be below ``bits``.
    """
    if not 0 <= min_chain < bits:
        raise ValueError(f"a carry chain of {min_chain} columns does not fit in {bits} bits")
    a, b = random_operands(rng, count, bits)
    start = (rng.random(count) * (bits - min_chain)).astype(int)[:, None]
    length = min_chain + (rng.random((count, 1)) * (bits - start - min_chain)).astype(int)
    column = np.arange(bits)[None, :]
    propagate = (column > start) & (column <= start + length)
    b = np.where(propagate, 1 - a, b).astype(np.uint8)
    carry = rng.integers(0, 2, size=(count, 1), dtype=np.uint8)
    a = np.where(column == start, carry, a).astype(np.uint8)
    b = np.where(column == start, carry, b).astype(np.uint8)
    return a, b


def add_bits(a: np.ndarray, b: np.ndarray):
    """Column-by-column addition of two (N, n) bit arrays.

    Returns ``sums`` and ``carries``, both (N, n + 1): ``sums[:, j]`` is the sum bit of
    column ``j`` (column ``n`` holds the final carry) and ``carries[:, j]`` the carry out
    of column ``j``, that is, into column ``j + 1`` (0 for column ``n``).
    """
    count, bits = a.shape
    sums = np.zeros((count, bits + 1), dtype=np.uint8)
    carries = np.zeros((count, bits + 1), dtype=np.uint8)
    carry = np.zeros(count, dtype=np.uint8)
    for j in range(bits):
        total = a[:, j] + b[:, j] + carry
        sums[:, j] = total & 1
        carry = total >> 1
        carries[:, j] = carry
    sums[:, bits] = carry
    return sums, carries


def encode(a: np.ndarray, b: np.ndarray, delay: int = 2):
    """The network's view of the pairs: inputs (N, T, 2) and targets (N, T), floats.

    ``T = n + 1 + delay``: the n columns, then zero columns.  The target at step ``t`` is
    the sum bit of column ``t - delay``; the first ``delay`` targets are 0 and are never
    scored (nothing is due yet).
    """
    count, bits = a.shape
    steps = bits + 1 + delay
    x = np.zeros((count, steps, 2), dtype=np.float32)
    x[:, :bits, 0] = a
    x[:, :bits, 1] = b
    y = np.zeros((count, steps), dtype=np.float32)
    y[:, delay:] = add_bits(a, b)[0]
    return torch.from_numpy(x), torch.from_numpy(y)


def bits_to_ints(bits: np.ndarray) -> list[int]:
    """Python integers from rows of bits, least-significant bit first."""
    return [sum(int(bit) << j for j, bit in enumerate(row)) for row in bits]


def ints_to_bits(values, bits: int) -> np.ndarray:
    """Rows of ``bits`` bits, least-significant first, from non-negative Python integers."""
    return np.array([[(v >> j) & 1 for j in range(bits)] for v in values], dtype=np.uint8)


class EightBitPairs:
    """The training pairs: random ``bits``-bit pairs, minus a held-out set.

    A fraction ``long_carry_fraction`` of each batch is drawn with a long carry chain
    (``carry_chain_operands``); any pair that is in the held-out set is redrawn
    uniformly.
    """

    def __init__(self, bits: int, seed: int, heldout: int = 1000, long_carry_fraction=0.25):
        if not 2 <= bits <= 16:
            raise ValueError("train on numbers of 2 to 16 bits")
        self.bits, self.long_carry_fraction = bits, long_carry_fraction
        self.rng = np.random.default_rng(seed)
        codes = self.rng.choice(4**bits, size=min(heldout, 4**bits // 4), replace=False)
        self._heldout_codes = np.sort(codes)
        self.heldout = self._decode(self._heldout_codes)

    def _decode(self, codes: np.ndarray):
        """Pairs of bit rows from codes ``a * 2**bits + b``."""
        shifts = np.arange(self.bits)
        a = (codes[:, None] >> (shifts + self.bits)) & 1
        b = (codes[:, None] >> shifts) & 1
        return a.astype(np.uint8), b.astype(np.uint8)

    def _codes(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The codes ``a * 2**bits + b`` of pairs of bit rows."""
        weights = 1 << np.arange(self.bits, dtype=np.int64)
        return (a.astype(np.int64) @ weights << self.bits) + b.astype(np.int64) @ weights

    def batch(self, size: int):
        """``size`` training pairs, as two (size, bits) bit arrays."""
        a, b = mixed_operands(self.rng, size, self.bits, self.long_carry_fraction)
        while True:
            seen = np.isin(self._codes(a, b), self._heldout_codes)
            if not seen.any():
                return a, b
            a[seen], b[seen] = random_operands(self.rng, int(seen.sum()), self.bits)


def mixed_operands(rng: np.random.Generator, count: int, bits: int, long_carry_fraction: float):
    """Random pairs, a fraction of them drawn by ``carry_chain_operands``."""
    chained = int(round(count * long_carry_fraction))
    a, b = random_operands(rng, count - chained, bits)
    ca, cb = carry_chain_operands(rng, chained, bits, 0)
    return np.concatenate([a, ca]), np.concatenate([b, cb])


def exact_match(predicted: np.ndarray, target: np.ndarray) -> float:
    """The fraction of rows whose bits are all right."""
    return float(np.mean(np.all(predicted == target, axis=1)))


# --- the recurrent net ---------------------------------------------------------------


class ElmanAdder(nn.Module):
    """An Elman net (tanh units) with a linear-sigmoid readout of the same step's state."""

    def __init__(self, hidden: int):
        super().__init__()
        self.rnn = nn.RNN(2, hidden, nonlinearity="tanh", batch_first=True)
        self.readout = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor):
        """Logits (N, T) of the output bit at every step, and the hidden states (N, T, H)."""
        states, _ = self.rnn(x)
        return self.readout(states).squeeze(-1), states


def train_rnn(data: EightBitPairs, hidden: int, delay: int, steps: int, seed: int,
              lr: float = 0.03, batch: int = 128, saturation: float = 0.01,
              noise: float = 0.0) -> ElmanAdder:
    """Adam on the BCE of the due bits, with clipped gradients and a cosine-decayed rate.

    Over the second half the loss also gets ``saturation * mean(1 - h**2)``, ramped in
    over a quarter of the steps, which pushes the hidden units towards +-1.
    """
    torch.manual_seed(seed)
    model = ElmanAdder(hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps)))
    for step in range(steps):
        x, y = encode(*data.batch(batch), delay)
        if noise:
            x = x + noise * torch.randn_like(x)
        logits, states = model(x)
        loss = F.binary_cross_entropy_with_logits(logits[:, delay:], y[:, delay:])
        ramp = min(1.0, max(0.0, (step - steps / 2) / (steps / 4)))
        if ramp and saturation:
            loss = loss + ramp * saturation * (1 - states.pow(2)).mean()
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
    return model.eval()


@torch.no_grad()
def rnn_sums(model: ElmanAdder, a: np.ndarray, b: np.ndarray, delay: int) -> np.ndarray:
    """The sum bits (N, n + 1) the net emits for the pairs."""
    logits, _ = model(encode(a, b, delay)[0])
    return (logits[:, delay:] > 0).numpy().astype(np.uint8)


def train_until_exact(data: EightBitPairs, hidden: int, delay: int, steps: int, seed: int,
                      attempts: int = 4, report=print, **options):
    """Train with seeds ``seed, seed + 1, ...`` until a net is exact on the held-out pairs.

    Returns the model (the last one tried if none was exact) and a list of
    ``(seed, held-out accuracy)`` per attempt.
    """
    tried = []
    for attempt in range(attempts):
        model = train_rnn(data, hidden, delay, steps, seed + attempt, **options)
        accuracy = exact_match(rnn_sums(model, *data.heldout, delay), add_bits(*data.heldout)[0])
        tried.append((seed + attempt, accuracy))
        if accuracy == 1.0:
            break
        report(f"  seed {seed + attempt}: {accuracy:.1%} on the held-out {data.bits}-bit sums, "
               f"so training again with seed {seed + attempt + 1}")
    return model, tried


# --- the feed-forward contrasts ------------------------------------------------------


def mlp(inputs: int, outputs: int, width: int = 128) -> nn.Sequential:
    """A two-hidden-layer ReLU net."""
    return nn.Sequential(nn.Linear(inputs, width), nn.ReLU(), nn.Linear(width, width),
                         nn.ReLU(), nn.Linear(width, outputs))


def fit(model: nn.Module, batches, steps: int, lr: float = 3e-3) -> nn.Module:
    """Adam on the BCE of ``model(x)`` against ``y``, for ``(x, y)`` from ``batches()``."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps)))
    for _ in range(steps):
        x, y = batches()
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    return model.eval()


class FixedWidthAdder:
    """An MLP over a whole ``bits``-bit problem: 2 x bits input bits, bits + 1 sum bits."""

    def __init__(self, data: EightBitPairs, steps: int, seed: int, batch: int = 256,
                 width: int = 256, lr: float = 1e-2):
        torch.manual_seed(seed)
        self.bits = data.bits

        def batches():
            a, b = data.batch(batch)
            return self._inputs(a, b), torch.from_numpy(add_bits(a, b)[0].astype(np.float32))

        self.net = fit(mlp(2 * self.bits, self.bits + 1, width), batches, steps, lr)

    @staticmethod
    def _inputs(a: np.ndarray, b: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.concatenate([a, b], axis=1).astype(np.float32))

    @torch.no_grad()
    def sums(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The sum bits of ``bits``-bit pairs; a ValueError for any other width."""
        if a.shape[1] != self.bits:
            raise ValueError(f"the MLP reads {self.bits}-bit numbers, not {a.shape[1]}-bit")
        return (self.net(self._inputs(a, b)) > 0).numpy().astype(np.uint8)

    def chunked_sums(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Wide pairs added ``bits`` columns at a time, each chunk on its own: a chunk's
        carry out is dropped, except the top chunk's, which is the final carry."""
        n = self.bits
        if a.shape[1] % n:
            raise ValueError(f"the width must be a multiple of {n}")
        parts = [self.sums(a[:, j:j + n], b[:, j:j + n]) for j in range(0, a.shape[1], n)]
        return np.concatenate([p[:, :n] for p in parts[:-1]] + [parts[-1]], axis=1)


class WindowAdder:
    """A memoryless net with ``window`` taps: the sum bit of column ``j`` from columns
    ``j - window + 1 .. j`` (zeros below column 0).  Run as a stream it emits that bit
    ``delay`` steps after reading column ``j``, like the RNN.

    It is trained on every window of the pairs that ``pairs()`` returns.
    """

    def __init__(self, pairs, window: int, steps: int, seed: int, lr: float = 3e-3):
        torch.manual_seed(seed)
        self.window = window

        def batches():
            a, b = pairs()
            sums = torch.from_numpy(add_bits(a, b)[0].astype(np.float32))
            return self._windows(a, b), sums.reshape(-1, 1)

        self.net = fit(mlp(2 * window, 1, width=64), batches, steps, lr)

    def _windows(self, a: np.ndarray, b: np.ndarray) -> torch.Tensor:
        """One row of 2 x window bits for each output column 0..n of each pair."""
        count, bits = a.shape
        columns = np.zeros((count, 2, self.window - 1 + bits + 1), dtype=np.float32)
        columns[:, 0, self.window - 1:self.window - 1 + bits] = a
        columns[:, 1, self.window - 1:self.window - 1 + bits] = b
        views = torch.from_numpy(columns).unfold(2, self.window, 1)  # (N, 2, n + 1, K)
        return views.permute(0, 2, 1, 3).reshape(count * (bits + 1), 2 * self.window)

    @torch.no_grad()
    def sums(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The sum bits (N, n + 1) of pairs of any width."""
        logits = self.net(self._windows(a, b)).reshape(a.shape[0], a.shape[1] + 1)
        return (logits > 0).numpy().astype(np.uint8)


# --- reading the hidden units --------------------------------------------------------


def correlate_units(model: ElmanAdder, a: np.ndarray, b: np.ndarray, delay: int):
    """Per hidden unit, Pearson's r of its activation after reading column ``t`` with the
    carry out of column ``t`` and with the sum bits of columns ``t, t - 1, .., t - delay``
    (the last is the bit emitted at step ``t``).

    Returns the names of those quantities, an (H, 2 + delay) array of r, and for each
    quantity the r of the best linear readout of all the units (least squares).  Steps
    ``delay .. n`` are used, so every quantity is defined.
    """
    bits = a.shape[1]
    with torch.no_grad():
        states = model(encode(a, b, delay)[0])[1].numpy()
    sums, carries = add_bits(a, b)
    used = np.arange(delay, bits + 1)
    names = ["carry"] + ["sum bit t" if lag == 0 else f"sum bit t-{lag}" for lag in range(delay + 1)]
    quantities = [carries[:, used]] + [sums[:, used - lag] for lag in range(delay + 1)]
    activations = states[:, used].reshape(-1, states.shape[2]).astype(np.float64)
    targets = [q.ravel().astype(np.float64) for q in quantities]
    table = np.array([[pearson(activations[:, unit], target) for target in targets]
                      for unit in range(activations.shape[1])])
    design = np.concatenate([activations, np.ones((len(activations), 1))], axis=1)
    readout = [pearson(design @ np.linalg.lstsq(design, target, rcond=None)[0], target)
               for target in targets]
    return names, table, np.array(readout)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r, 0 where either side is constant."""
    x, y = x - x.mean(), y - y.mean()
    scale = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / scale) if scale > 0 else 0.0


def carry_unit(table: np.ndarray, threshold: float = 0.9):
    """The unit whose activation best tracks the carry, and its r; None if |r| < threshold."""
    unit = int(np.argmax(np.abs(table[:, 0])))
    return (unit if abs(table[unit, 0]) >= threshold else None), float(table[unit, 0])


def trace_lines(model: ElmanAdder, x: int, y: int, bits: int, delay: int, unit: int) -> list[str]:
    """A step-by-step trace of the net adding ``x + y``: columns, carry, the unit, output."""
    a, b = ints_to_bits([x], bits), ints_to_bits([y], bits)
    sums, carries = add_bits(a, b)
    inputs, _ = encode(a, b, delay)
    with torch.no_grad():
        logits, states = model(inputs)
    steps = inputs.shape[1]

    def row(label, cells):
        return f"    {label:<16}" + "".join(f"{c:>6}" for c in cells)

    padded = lambda bits_row: [str(int(v)) for v in bits_row] + ["0"] * (steps - len(bits_row))
    emitted = ["." if t < delay else str(int(logits[0, t] > 0)) for t in range(steps)]
    due = ["." if t < delay else str(int(sums[0, t - delay])) for t in range(steps)]
    return [
        f"  {x} + {y} = {x + y}  (columns LSB first; column t is read at step t)",
        row("step", range(steps)),
        row("a", padded(a[0])),
        row("b", padded(b[0])),
        row("carry out", padded(carries[0])),
        row(f"unit {unit}", [f"{v:+.2f}" for v in states[0, :, unit].tolist()]),
        row(f"due (col t-{delay})", due),
        row("emitted", emitted),
    ]


# --- the demonstration ---------------------------------------------------------------


def evaluate(models: dict, widths, pairs: int, seed: int, chain: int):
    """Exact-match accuracy of each ``name: sums(a, b)`` at each width, on random pairs
    and on pairs with a carry chain of at least ``chain`` columns (``width - 1`` at most).

    Returns ``{("random" or "long carry", name): {width: accuracy or None}}``; None where
    a model raised ValueError (it cannot read that width).
    """
    results = {}
    for width in widths:
        rng = np.random.default_rng([seed, width])
        sets = {"random": random_operands(rng, pairs, width),
                "long carry": carry_chain_operands(rng, pairs, width, min(chain, width - 1))}
        for kind, (a, b) in sets.items():
            truth = add_bits(a, b)[0]
            for name, sums in models.items():
                try:
                    accuracy = exact_match(sums(a, b), truth)
                except ValueError:
                    accuracy = None
                results.setdefault((kind, name), {})[width] = accuracy
    return results


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-bits", type=int, default=8, help="width of the training numbers")
    parser.add_argument("--delay", type=int, default=2,
                        help="steps between reading a column and emitting its sum bit")
    parser.add_argument("--hidden", type=int, default=8, help="tanh units of the Elman net")
    parser.add_argument("--steps", type=int, default=4000, help="Adam steps for the RNN")
    parser.add_argument("--mlp-steps", type=int, default=800,
                        help="Adam steps for each feed-forward net")
    parser.add_argument("--window", type=int, default=None,
                        help="columns seen by the sliding-window net (default train bits + 1)")
    parser.add_argument("--window-train-bits", type=int, default=32,
                        help="width of the pairs the second window net is trained on")
    parser.add_argument("--long-carry-fraction", type=float, default=0.25,
                        help="share of training pairs drawn with a long carry chain")
    parser.add_argument("--saturation", type=float, default=0.01,
                        help="weight of the late push of the hidden units towards +-1")
    parser.add_argument("--pairs", type=int, default=1000, help="test pairs per width")
    parser.add_argument("--attempts", type=int, default=4,
                        help="trainings (seeds seed, seed+1, ...) before giving up")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.window is None:
        args.window = args.train_bits + 1
    return args


def cell(value) -> str:
    """A table cell: an accuracy, or a dash where the model cannot read the width."""
    return "     -" if value is None else f"{value:6.3f}"


def main(argv=None) -> dict:
    """Train the three models, print the comparison, the carry unit and a trace."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    n, delay = args.train_bits, args.delay
    data = EightBitPairs(n, args.seed, long_carry_fraction=args.long_carry_fraction)
    print(f"Binary addition, LSB first, each sum bit due {delay} steps after its column; "
          f"trained on {n}-bit numbers")

    clock = time.perf_counter()
    model, tried = train_until_exact(data, args.hidden, delay, args.steps, args.seed,
                                     attempts=args.attempts, saturation=args.saturation)
    seed, heldout = tried[-1]
    print(f"Elman RNN, {args.hidden} tanh units, {args.steps} Adam steps: seed {seed}, "
          f"{heldout:.1%} exact on {len(data.heldout[0])} held-out {n}-bit sums "
          f"({len(tried)} training{'s' if len(tried) > 1 else ''}, "
          f"{time.perf_counter() - clock:.1f} s)")
    if heldout < 1.0:
        print(f"  no run reached 100% on {n}-bit sums in {len(tried)} tries; figures are for the last")

    clock = time.perf_counter()
    fixed = FixedWidthAdder(data, args.mlp_steps, args.seed)
    narrow = WindowAdder(lambda: data.batch(256), args.window, args.mlp_steps, args.seed)
    rng = np.random.default_rng([args.seed, 1])
    wide = WindowAdder(lambda: mixed_operands(rng, 64, args.window_train_bits,
                                              args.long_carry_fraction),
                       args.window, args.mlp_steps, args.seed)
    print(f"feed-forward nets, {args.mlp_steps} Adam steps each "
          f"({time.perf_counter() - clock:.1f} s)")

    models = {
        f"Elman RNN, {args.hidden} units": lambda a, b: rnn_sums(model, a, b, delay),
        f"fixed-width MLP, {2 * n} in": fixed.sums,
        f"  same, {n} columns at a time": fixed.chunked_sums,
        f"window MLP, {n}-bit data": narrow.sums,
        f"window MLP, {args.window_train_bits}-bit data": wide.sums,
    }
    results = evaluate(models, WIDTHS, args.pairs, args.seed + 1, args.window)
    print(f"\nexact-match accuracy, {args.pairs} pairs per width "
          f"(- : cannot read numbers that wide)")
    print(f"  {'width in bits':<32}" + "".join(f"{w:>7}" for w in WIDTHS))
    for kind, title in (("random", "random pairs"),
                        ("long carry", f"carry through >= {args.window} columns "
                                       f"({n - 1} at {n} bits)")):
        print(f"  {title}")
        for name in models:
            print(f"    {name:<30}" + " ".join(cell(results[kind, name][w]) for w in WIDTHS))

    print(f"  0111...1 + 1, a carry through every column" + "".join(f"{w:>7}" for w in (16, 64, 128)))
    for name in (f"Elman RNN, {args.hidden} units", f"window MLP, {args.window_train_bits}-bit data"):
        marks = []
        for width in (16, 64, 128):
            a, b = ints_to_bits([2 ** (width - 1) - 1], width), ints_to_bits([1], width)
            marks.append("right" if exact_match(models[name](a, b), add_bits(a, b)[0]) else "wrong")
        print(f"    {name:<39}" + "".join(f"{m:>7}" for m in marks))

    probe = random_operands(np.random.default_rng([args.seed, 2]), args.pairs, 64)
    names, table, readout = correlate_units(model, *probe, delay)
    print(f"\nhidden units after reading column t: Pearson r with the carry out of column t "
          f"and with sum bits (64-bit pairs)")
    print(f"  {'unit':<10}" + "".join(f"{name:>13}" for name in names))
    for unit, row in enumerate(table):
        print(f"  {unit:<10}" + "".join(f"{r:+13.2f}" for r in row))
    print(f"  {'all, linear':<10}" + "".join(f"{r:+13.2f}" for r in readout))
    unit, r = carry_unit(table)
    if unit is None:
        print(f"  no single unit tracks the carry (best: unit "
              f"{int(np.argmax(np.abs(table[:, 0])))}, r = {r:+.2f}); a linear readout of all "
              f"units gives it with r = {readout[0]:+.2f}")
    else:
        print(f"  unit {unit} tracks the carry (r = {r:+.2f})")
    print("\ntrace")
    for line in trace_lines(model, 375, 137, 10, delay, int(np.argmax(np.abs(table[:, 0])))):
        print(line)

    elapsed = time.perf_counter() - started
    print(f"\ntotal time {elapsed:.1f} s")
    return {"tried": tried, "results": results, "units": table, "carry_unit": unit,
            "carry_r": r, "elapsed": elapsed}


if __name__ == "__main__":
    main()
