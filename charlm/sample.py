"""Sampling: prime the state, then draw one symbol at a time with the state carried.

Each generated symbol costs one step of the network (no re-run of the prefix). Generation starts
a document: the state is the initial one and the first input is EOD, then the prime text. When
the model draws EOD its document has ended: the corpus' document separator is written and a new
document starts from a fresh state. PAD and UNK are never drawn (their logits are -inf).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch

from .devices import DEVICE_HELP, DEVICES
from .errors import CharLMError
from .options import (MAX_SEED, Options, non_negative_int, non_negative_number, option,
                      positive_int, seed as seed_check)
from .predictor import NextSymbolModel, check_vocab
from .text.vocab import Vocab


def top_p_check(flag: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise CharLMError(f"{flag} must be in (0, 1], got {value}")


def stop_check(flag: str, value) -> None:
    if not isinstance(value, tuple) or not all(isinstance(s, str) for s in value):
        raise CharLMError(f"{flag} takes text")
    if any(not s for s in value):
        raise CharLMError(f"{flag} must not be empty")


@dataclass(frozen=True)
class SampleConfig(Options):
    """What to generate."""

    prime: str = option("", "Text the model reads first and continues; it is printed before "
                            "the continuation.", default_help="nothing")
    length: int = option(500, "Characters to generate per sample.", check=non_negative_int)
    temperature: float = option(0.8, "Temperature: below 1 is safer, above 1 wilder; 0 always "
                                     "takes the most likely symbol (greedy).", flag="--temp",
                                check=non_negative_number)
    top_k: int | None = option(None, "Draw only from the k most likely symbols (0 = all).",
                               check=non_negative_int, default_help="all")
    top_p: float | None = option(None, "Nucleus sampling: draw only from the most likely "
                                       "symbols whose probabilities (after --temp and --top-k) "
                                       "add up to at least P, in (0, 1].", check=top_p_check,
                                 default_help="off")
    stop: tuple[str, ...] = option((), "End a sample where it produces this text (which is not "
                                       "printed); give it several times for several.",
                                   check=stop_check, default_help="none")
    num_samples: int = option(1, "Independent samples to generate (sample i uses seed "
                                 "+ i - 1).", check=positive_int)
    seed: int | None = option(None, "Random seed: the same seed gives the same text.",
                              check=seed_check, default_help="random (printed on stderr)")
    device: str = option("cpu", DEVICE_HELP, choices=DEVICES)

    def with_seed(self) -> SampleConfig:
        """This config, with a seed drawn at random if it has none."""
        return self if self.seed is not None else replace(self, seed=draw_seed())


def draw_seed() -> int:
    return int.from_bytes(os.urandom(4), "little") % (2**31)


@contextmanager
def _step_context(device: torch.device):
    """oneDNN's RNN kernel is built for long sequences; for one step at a time the plain
    kernel is several times faster on CPU, so it is switched off while sampling."""
    if device.type != "cpu":
        yield
        return
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


class RowRandom:
    """One random stream per row of a batch.

    Row i draws its uniforms from its own generator, a block at a time, so the draws of a row do
    not depend on the other rows: sample i of a batch is the text a single sample with that
    generator's seed gives. The draw itself is then one vectorised operation for the batch.
    """

    BLOCK = 256

    def __init__(self, seeds: list[int], device: torch.device):
        self.generators = [torch.Generator().manual_seed(s % (MAX_SEED + 1)) for s in seeds]
        self.device = device
        self.used = self.BLOCK

    def next(self) -> torch.Tensor:
        """(B,) uniforms in [0, 1), float64."""
        if self.used == self.BLOCK:
            block = [torch.rand(self.BLOCK, generator=g, dtype=torch.float64)
                     for g in self.generators]
            self.block = torch.stack(block, dim=1).to(self.device)  # (BLOCK, B)
            self.used = 0
        self.used += 1
        return self.block[self.used - 1]


def pick(logits: torch.Tensor, temperature: float, top_k: int | None,
         uniforms: torch.Tensor, top_p: float | None = None) -> torch.Tensor:
    """Draw one id per row from logits (B, V) by inverting the cumulative distribution at
    ``uniforms`` (B,); temperature 0 takes the argmax. The distribution is the softmax at
    ``temperature``, cut to the ``top_k`` most likely ids, then to the nucleus of ``top_p``
    (see ``outside_nucleus``), renormalised. Ids whose probability is zero (logit -inf: PAD,
    UNK, those cut) are never drawn."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.double() / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        logits = logits.masked_fill(outside_nucleus(torch.softmax(logits, dim=-1), top_p),
                                    float("-inf"))
    cdf = torch.softmax(logits, dim=-1).cumsum(dim=-1)
    total = cdf[:, -1]
    # Aim strictly below the total (rounding could put u * total on it). The first id whose
    # cumulative probability exceeds the aim is then drawable: a zero-probability id never
    # is the first, since its cumulative value equals its predecessor's.
    aim = torch.minimum(uniforms * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, aim.unsqueeze(-1), right=True).squeeze(-1)


def outside_nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """(B, V) True where an id lies outside the nucleus of its row: the most likely ids,
    taken in order of probability until they hold at least ``top_p`` of it (the id that
    crosses ``top_p`` is in; of equal probabilities the lower id comes first)."""
    ranked, order = probs.sort(dim=-1, descending=True, stable=True)
    before = ranked.cumsum(dim=-1) - ranked  # the mass of the more likely ids
    before[:, 0] = 0.0
    return torch.empty_like(order, dtype=torch.bool).scatter_(-1, order, before >= top_p)


class StopAt:
    """One sample's text passed on until it produces one of ``stops`` (which is not passed
    on): the first to be complete, as the text grows, ends it. Text that could be the start of
    a stop string is held back until it is known not to be."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops, self.held, self.done = stops, "", False
        self.longest = max((len(s) for s in stops), default=0)

    def push(self, text: str) -> str:
        if self.done:
            return ""
        if not self.stops:
            return text
        held = self.held + text
        hits = [(i + len(s), i) for s in self.stops if (i := held.find(s)) >= 0]
        if hits:  # the stop string completed first ends the sample
            self.done, self.held = True, ""
            return held[:min(hits)[1]]
        keep = next((k for k in range(min(self.longest - 1, len(held)), 0, -1)
                     if any(s.startswith(held[-k:]) for s in self.stops)), 0)
        self.held = held[len(held) - keep:]
        return held[:len(held) - keep]

    def flush(self) -> str:
        held, self.held = self.held, ""
        return held


@torch.no_grad()
def generate(model: NextSymbolModel, vocab: Vocab, config: SampleConfig,
             separator: str = "\n\n", on_text: Callable[[int, str], None] | None = None,
             on_warning: Callable[[str], None] | None = None,
             collect: bool = True) -> list[str]:
    """Generate ``config.num_samples`` texts of ``config.length`` characters each after
    ``config.prime`` (the config must have a seed: see ``SampleConfig.with_seed``); a sample
    ends sooner where it produces one of ``config.stop``.

    ``on_text(sample_index, text)`` receives text as soon as it is decoded (streaming). The
    returned strings hold the generated continuation only, without the prime (nor the stop
    string); with ``collect=False`` nothing is kept (memory stays flat however long the
    stream) and empty strings are returned.
    """
    c = config
    if c.seed is None:
        raise ValueError("generate needs a seed; see SampleConfig.with_seed")
    check_vocab(model, vocab)
    length, temperature, top_k, num_samples, prime = (c.length, c.temperature, c.top_k or None,
                                                      c.num_samples, c.prime)
    device = model.device
    # Sample i is seeded with seed + i: the first of N samples equals a single sample.
    rows = RowRandom([c.seed + i for i in range(num_samples)], device)
    prime_ids = vocab.encode(prime) if prime else []
    if prime and vocab.unk_id is not None:
        unknown = int((prime_ids == vocab.unk_id).sum())
        if unknown == len(prime_ids):
            raise CharLMError("the prime text holds only characters the model never saw")
        if unknown and on_warning:
            on_warning(f"prime text: {unknown} character(s) the model never saw; "
                       f"they are read as the unknown symbol")
    ids = [vocab.eod_id] + [int(i) for i in prime_ids]
    x = torch.tensor([ids] * num_samples, device=device)
    decoders = [vocab.stream_decoder() for _ in range(num_samples)]
    stops = [StopAt(c.stop) for _ in range(num_samples)]
    outputs = [[] for _ in range(num_samples)]
    written = [0] * num_samples

    def emit(b: int, text: str) -> None:
        if text:
            if collect:
                outputs[b].append(text)
            if on_text:
                on_text(b, text)

    def deliver(b: int, text: str) -> None:
        emit(b, stops[b].push(text))
        if stops[b].done:
            written[b] = length  # this sample has ended

    with model.inference(), _step_context(device):
        logits, state = model.next_logits(x)
        last, step = logits[:, -1], model.stepper()
        while min(written) < length:
            nxt = pick(last, temperature, top_k, rows.next() if temperature else None, c.top_p)
            tokens = nxt.tolist()
            for b, token in enumerate(tokens):
                if written[b] >= length:
                    continue
                text = separator if token == vocab.eod_id else decoders[b].push(token)
                text = text[: length - written[b]]
                if text:
                    written[b] += len(text)
                    deliver(b, text)
            if vocab.eod_id in tokens:
                state = model.reset_state(state, nxt == vocab.eod_id)
            last, state = step(nxt, state)
    for b in range(num_samples):
        if not stops[b].done:
            deliver(b, decoders[b].flush()[: max(length - written[b], 0)])
        if not stops[b].done:
            emit(b, stops[b].flush())  # the text held back was not a stop after all
    return ["".join(o) for o in outputs]
