"""Sampling speed: charlm's generator against a bare per-step nn.LSTM loop, same model, same run.

Both draw with temperature 1 from a 2x512 LSTM over the Tiny Shakespeare char vocab (weights are
random: speed does not depend on them). The bare loop is the plain way to sample from an
``nn.LSTM``: one call per character with the state carried, softmax, multinomial; it is given
the faster CPU kernel (oneDNN off), as charlm's sampler uses.

    python bench/sample_speed.py                  # batch 1 and batch 64, 10k characters
    python bench/sample_speed.py --lengths 1000 10000 100000
    python bench/sample_speed.py --cli            # `charlm sample` end to end, batch 1

With ``--cli`` the model is saved as a run and `charlm sample` is run as users run it, its
stdout a pipe this script reads: the cost per character is (time for 22,000 characters - time
for 2,000) / 20,000, both read off the one process's stream as it arrives (so process start
and model load are left out), against the bare loop's per character measured just before and
just after it (rounds; the median of their ratios).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from charlm.api import bundled_corpus
from charlm.checkpoint import save_checkpoint
from charlm.models import LMConfig, RecurrentLM
from charlm.sample import SampleConfig, generate
from charlm.text.corpus import prepare_cached


@torch.no_grad()
def bare_loop(model: RecurrentLM, length: int, batch: int, seed: int) -> float:
    g = torch.Generator().manual_seed(seed)
    rnn, emb, head = model.backbone.rnn, model.backbone.embed, model.head
    x = torch.full((batch, 1), 2, dtype=torch.long, device=model.device)
    h = None
    prev = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        t = time.perf_counter()
        for _ in range(length):
            y, h = rnn(emb(x), h)
            probs = torch.softmax(head(y[:, -1]), dim=-1)
            x = torch.multinomial(probs.cpu(), 1, generator=g).to(x.device)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t
    finally:
        torch.backends.mkldnn.enabled = prev


def ours(model, vocab, length: int, batch: int, seed: int) -> float:
    t = time.perf_counter()
    generate(model, vocab, SampleConfig(length=length, temperature=1.0, seed=seed,
                                        num_samples=batch))
    return time.perf_counter() - t


def cli(run: Path, short: int, long: int, seed: int) -> float:
    """Seconds per character of `charlm sample --length LONG` as a process, between the
    moments its stdout (a pipe) has passed SHORT and LONG characters: the time for LONG minus
    the time for SHORT, in one process, so its start and the model load are left out."""
    cmd = [sys.executable, "-m", "charlm", "sample", "--checkpoint", str(run), "--length",
           str(long), "--temp", "1", "--seed", str(seed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    received, first, last = 0, None, None  # (characters, time) when SHORT and LONG had come
    while chunk := os.read(proc.stdout.fileno(), 1 << 16):
        if not chunk.isascii():
            sys.exit("the model's vocab is not ASCII: bytes would not count characters")
        received += len(chunk)
        if first is None and received >= short:
            first = (received, time.perf_counter())  # the stream arrives in 50 ms pieces:
        if last is None and received >= long:       # count the characters that came
            last = (received, time.perf_counter())
    stderr = proc.stderr.read().decode()
    if proc.wait() != 0 or last is None:
        sys.exit(f"charlm sample failed: {stderr[-2000:]}")
    return (last[1] - first[1]) / (last[0] - first[0])


def cli_rounds(model, vocab, rounds: int, short: int = 2000, long: int = 22000) -> None:
    """Each round runs the bare loop for half the characters, the command, then the bare loop
    for the other half: the command is set against the bare loop's mean over the seconds just
    around it, so the median of the rounds' ratios resists the host's drift (its speed
    changes several-fold over minutes) better than the best of each side."""
    import statistics

    half = (long - short) // 2
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "best.safetensors"
        save_checkpoint(run, model, vocab, {"kind": model.kind}, {})
        cli(run, 10, 100, 0)
        per_cli, per_bare = [], []
        for r in range(rounds):  # one process at a time
            before = bare_loop(model, half, 1, r)
            per_cli.append(cli(run, short, long, r))
            per_bare.append((before + bare_loop(model, half, 1, r + rounds)) / (2 * half))
    ratios = [b / c for c, b in zip(per_cli, per_bare)]
    c, b = min(per_cli), min(per_bare)
    print("| what | us/char (best round) | chars/s | against the bare loop |")
    print("| --- | --- | --- | --- |")
    print(f"| `charlm sample`, end to end, stdout a pipe | {c * 1e6:.0f} | {1 / c:,.0f} | "
          f"{statistics.median(ratios):.3f} (median of the rounds' ratios); {b / c:.3f} (best "
          f"of each) |")
    print(f"| bare per-step loop, same model | {b * 1e6:.0f} | {1 / b:,.0f} | 1.000 |")
    print("rounds' ratios: " + ", ".join(f"{x:.3f}" for x in ratios))
    print("rounds' us/char, command / bare: " + ", ".join(
        f"{c * 1e6:.0f}/{b * 1e6:.0f}" for c, b in zip(per_cli, per_bare)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--lengths", type=int, nargs="+", default=[10000])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternating rounds of charlm and bare; the best of each is kept")
    ap.add_argument("--bare-up-to", type=int, default=10000,
                    help="time the bare loop only for lengths up to this (charlm for all)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--cli", action="store_true",
                    help="time `charlm sample` end to end instead (batch 1)")
    args = ap.parse_args()
    vocab = prepare_cached([bundled_corpus()]).vocab
    torch.manual_seed(0)
    model = RecurrentLM(LMConfig.for_vocab(vocab, num_layers=args.layers,
                                           hidden_dim=args.hidden, embed_dim=64))
    model = model.to(args.device).eval()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"LSTM {args.layers}x{args.hidden}; best of {args.rounds} alternating rounds")
    if args.cli:
        cli_rounds(model, vocab, args.rounds)
        return
    print("| batch | length | charlm chars/s | bare chars/s | charlm / bare | charlm us/char |")
    print("| --- | --- | --- | --- | --- | --- |")
    for batch in args.batches:
        for length in args.lengths:
            ours(model, vocab, 50, batch, 0)
            bare_loop(model, 50, batch, 0)
            with_bare = length <= args.bare_up_to
            t_ours, t_bare = [], []
            for r in range(args.rounds):  # interleaved: both see the same machine load
                t_ours.append(ours(model, vocab, length, batch, r))
                if with_bare:
                    t_bare.append(bare_loop(model, length, batch, r))
            total = length * batch
            o = min(t_ours)
            bare = f"{total / min(t_bare):,.0f} | {min(t_bare) / o:.3f}" if with_bare else "- | -"
            print(f"| {batch} | {length:,} | {total / o:,.0f} | {bare} | "
                  f"{o / length * 1e6:.0f} |", flush=True)


if __name__ == "__main__":
    main()
