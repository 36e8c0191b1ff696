"""Sampling: prime the state, then draw one symbol at a time with the state carried.

Each generated symbol costs one step of the network (no re-run of the prefix). Generation starts
a document: the state is the initial one and the first input is EOD, then the prime text. When
the model draws EOD its document has ended: the corpus' document separator is written and a new
document starts from a fresh state. PAD and UNK are never drawn (their logits are -inf).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import torch

from .config import MAX_SEED, check_seed
from .errors import CharLMError
from .model import CharRNN
from .vocab import Vocab


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


def check_options(temperature: float, length: int, top_k: int | None,
                  num_samples: int, seed: int = 0) -> None:
    """Refuse out-of-range sampling options (before any model is loaded, in the CLI)."""
    check_seed(seed)
    if not 0 <= temperature < float("inf"):  # also refuses NaN
        raise CharLMError(f"--temp must be a finite number >= 0, got {temperature}")
    if length < 0:
        raise CharLMError(f"--length must be >= 0, got {length}")
    if top_k is not None and top_k < 0:
        raise CharLMError(f"--top-k must be >= 0, got {top_k}")
    if num_samples < 1:
        raise CharLMError(f"--num-samples must be >= 1, got {num_samples}")


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
         uniforms: torch.Tensor) -> torch.Tensor:
    """Draw one id per row from logits (B, V) by inverting the cumulative distribution at
    ``uniforms`` (B,); temperature 0 takes the argmax. Ids whose probability is zero (logit
    -inf: PAD, UNK, those outside the top k) are never drawn."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.double() / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    cdf = torch.softmax(logits, dim=-1).cumsum(dim=-1)
    total = cdf[:, -1]
    # Aim strictly below the total (rounding could put u * total on it). The first id whose
    # cumulative probability exceeds the aim is then drawable: a zero-probability id never
    # is the first, since its cumulative value equals its predecessor's.
    aim = torch.minimum(uniforms * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, aim.unsqueeze(-1), right=True).squeeze(-1)


@torch.no_grad()
def generate(model: CharRNN, vocab: Vocab, length: int, prime: str = "", temperature: float = 0.8,
             top_k: int | None = None, seed: int = 0, num_samples: int = 1,
             separator: str = "\n\n", on_text: Callable[[int, str], None] | None = None,
             on_warning: Callable[[str], None] | None = None,
             collect: bool = True) -> list[str]:
    """Generate ``num_samples`` texts of ``length`` characters each after ``prime``.

    ``on_text(sample_index, text)`` receives text as soon as it is decoded (streaming). The
    returned strings hold the generated continuation only, without the prime; with
    ``collect=False`` nothing is kept (memory stays flat however long the stream) and empty
    strings are returned.
    """
    check_options(temperature, length, top_k, num_samples, seed)
    device = next(model.parameters()).device
    model.eval()
    # Sample i is seeded with seed + i: the first of N samples equals a single sample.
    rows = RowRandom([seed + i for i in range(num_samples)], device)
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
    outputs = [[] for _ in range(num_samples)]
    written = [0] * num_samples
    with _step_context(device):
        logits, state = model(x)
        last = logits[:, -1]
        while min(written) < length:
            nxt = pick(last, temperature, top_k, rows.next() if temperature else None)
            tokens = nxt.tolist()
            for b, token in enumerate(tokens):
                if written[b] >= length:
                    continue
                text = separator if token == vocab.eod_id else decoders[b].push(token)
                text = text[: length - written[b]]
                if text:
                    written[b] += len(text)
                    if collect:
                        outputs[b].append(text)
                    if on_text:
                        on_text(b, text)
            if vocab.eod_id in tokens:
                state = model.reset_state(state, nxt == vocab.eod_id)
            logits, state = model(nxt[:, None], state)
            last = logits[:, -1]
    for b in range(num_samples):
        tail = decoders[b].flush()[: max(length - written[b], 0)]
        if tail:
            if collect:
                outputs[b].append(tail)
            if on_text:
                on_text(b, tail)
    return ["".join(o) for o in outputs]
