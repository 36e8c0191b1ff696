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
for 2,000) / 20,000, so process start and model load cancel out, against the bare loop's per
character in the same run (interleaved rounds, the best of each).
"""

from __future__ import annotations

import argparse
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


def cli(run: Path, length: int, seed: int) -> float:
    """Seconds of `charlm sample --length LENGTH` as a process, its stdout read through a
    pipe."""
    cmd = [sys.executable, "-m", "charlm", "sample", "--checkpoint", str(run), "--length",
           str(length), "--temp", "1", "--seed", str(seed)]
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t
    if r.returncode != 0 or len(r.stdout) < length:
        sys.exit(f"charlm sample failed: {r.stderr.decode()[-2000:]}")
    return elapsed


def cli_rounds(model, vocab, rounds: int, short: int = 2000, long: int = 22000) -> None:
    """Each round times the command (long and short) and the bare loop back to back; the
    ratio of each round pairs measurements taken within seconds of each other, so the median
    of the rounds' ratios resists the host's drift better than the best of each side."""
    import statistics

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "best.safetensors"
        save_checkpoint(run, model, vocab, {"kind": model.kind}, {})
        cli(run, 100, 0)
        per_cli, per_bare = [], []
        for r in range(rounds):  # interleaved, one process at a time
            per_cli.append((cli(run, long, r) - cli(run, short, r)) / (long - short))
            per_bare.append(bare_loop(model, long - short, 1, r) / (long - short))
    ratios = [b / c for c, b in zip(per_cli, per_bare)]
    c, b = min(per_cli), min(per_bare)
    print("| what | us/char (best round) | chars/s | against the bare loop |")
    print("| --- | --- | --- | --- |")
    print(f"| `charlm sample`, end to end, stdout a pipe | {c * 1e6:.0f} | {1 / c:,.0f} | "
          f"{b / c:.3f} (best of each); {statistics.median(ratios):.3f} (median of the rounds' "
          f"ratios) |")
    print(f"| bare per-step loop, same model | {b * 1e6:.0f} | {1 / b:,.0f} | 1.000 |")
    print("rounds' ratios: " + ", ".join(f"{x:.3f}" for x in ratios))


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
