"""Training throughput: charlm's full step against a bare torch.nn loop, and against the peak.

For each hidden size, in one process and interleaved (this machine is shared and noisy):
  * charlm: ``Trainer.train_step`` (batch from the memmap'd corpus, forward with carried state,
    loss over non-PAD targets, backward, clipping, AdamW step, state detach);
  * bare:   nn.Embedding -> nn.LSTM -> nn.Linear, cross-entropy, backward, clip_grad_norm_,
    AdamW, with identical shapes and the state carried the same way;
  * peak:   a large float32 torch.mm (MKL's BLAS), the ceiling the issue names, and the same
            product through oneDNN (the library torch's CPU LSTM uses); on AMD CPUs MKL may
            pick slower code paths than oneDNN, so the LSTM can beat the torch.mm "peak".
Training FLOPs count 3x the forward matrix work (forward, and two products in backward).

    python bench/throughput.py                 # 2-layer LSTM, hidden 256/512/1024, B 64, T 128
    python bench/throughput.py --hidden 512 --batch 256 --bptt 64
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from charlm.api import build_trainer, bundled_corpus


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _product_peak(product, a, b, reps: int) -> float:
    """FLOP/s of the fastest of ``reps`` runs of an n x n by n x n product."""
    device = a.device.type
    for _ in range(2):
        product(a, b)
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        product(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * a.shape[0] ** 3 / best


def mm_peak(n: int = 2048, reps: int = 10, device: str = "cpu") -> float:
    """float32 on the CPU; on a GPU at its default float32 matmul precision."""
    if device == "cuda":
        n = 8192
    return _product_peak(torch.mm, torch.randn(n, n, device=device),
                         torch.randn(n, n, device=device), reps)


def onednn_peak(n: int = 2048, reps: int = 10, device: str = "cpu") -> float | None:
    """The same float32 product through oneDNN (as a linear layer on oneDNN tensors)."""
    if device != "cpu" or not torch.backends.mkldnn.is_available():
        return None
    return _product_peak(lambda x, w: torch._C._nn.mkldnn_linear(x, w, None),
                         torch.randn(n, n).to_mkldnn(), torch.randn(n, n).to_mkldnn(), reps)


def forward_flops(vocab: int, embed: int, hidden: int, layers: int, tokens: int) -> float:
    per_token = sum(2 * 4 * hidden * ((embed if i == 0 else hidden) + hidden)
                    for i in range(layers)) + 2 * hidden * vocab
    return per_token * tokens


class Bare(nn.Module):
    def __init__(self, vocab, embed, hidden, layers):
        super().__init__()
        self.emb = nn.Embedding(vocab, embed)
        self.rnn = nn.LSTM(embed, hidden, layers, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x, h):
        y, h = self.rnn(self.emb(x), h)
        return self.out(y), h


def time_steps(step, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--embed", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--bptt", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5, help="steps per round per loop")
    ap.add_argument("--precision", default="fp32",
                    help="charlm's --precision (the bare loop stays float32)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                    help="cuda: charlm's step against the bare loop on cuDNN, on the GPU")
    args = ap.parse_args()
    device = args.device

    where = torch.cuda.get_device_name() if device == "cuda" else \
        f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}, charlm precision {args.precision}")
    peak, dnn_peak = mm_peak(device=device), onednn_peak(device=device)
    rows = []
    for hidden in args.hidden:
        trainer = build_trainer(bundled_corpus(), out="/tmp/charlm-bench-throughput",
                                cell="lstm", num_layers=args.layers, hidden_dim=hidden,
                                embed_dim=args.embed, dropout=0.0, batch_size=args.batch,
                                bptt_len=args.bptt, max_steps=10**9, device=device,
                                optimizer="adamw", precision=args.precision)
        vocab = trainer.vocab.size
        torch.manual_seed(0)
        bare = Bare(vocab, args.embed, hidden, args.layers).to(device)
        opt = torch.optim.AdamW(bare.parameters(), lr=1e-3)
        data = torch.randint(3, vocab, (args.batch, args.bptt + 1), device=device)
        state = [None]

        def bare_step():
            x, y = data[:, :-1], data[:, 1:]
            logits, h = bare(x, state[0])
            loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(bare.parameters(), 1.0)
            opt.step()
            state[0] = tuple(s.detach() for s in h)
            float(loss.detach())

        time_steps(bare_step, 2)
        time_steps(trainer.train_step, 2)  # warm up both
        ours, theirs = [], []
        for _ in range(args.rounds):  # interleaved, with the peak re-measured each round
            ours += time_steps(trainer.train_step, args.steps)
            theirs += time_steps(bare_step, args.steps)
            peak = max(peak, mm_peak(reps=3, device=device))
            if dnn_peak:
                dnn_peak = max(dnn_peak, onednn_peak(reps=3))
        t_ours, t_bare = statistics.median(ours), statistics.median(theirs)
        tokens = args.batch * args.bptt
        flops = 3 * forward_flops(vocab, args.embed, hidden, args.layers, tokens)
        rows.append((hidden, tokens / t_ours, tokens / t_bare, t_bare / t_ours,
                     flops / t_ours))
    print(f"torch.mm peak ({'8192' if device == 'cuda' else '2048'} square, float32 inputs, "
          f"best seen during the run): {peak / 1e9:.1f} GFLOP/s")
    if dnn_peak:
        print(f"float32 oneDNN matmul peak (same shape, best seen): {dnn_peak / 1e9:.1f} GFLOP/s")
    dnn = dnn_peak or float("nan")
    print(f"\nLSTM {args.layers} layers, embed {args.embed}, B {args.batch}, T {args.bptt} "
          f"(median step of {args.rounds * args.steps})")
    print("| hidden | charlm chars/s | bare chars/s | charlm / bare | charlm GFLOP/s "
          "| of torch.mm peak | of oneDNN peak |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for h, co, cb, ratio, fps in rows:  # against the best peaks seen in the whole run
        print(f"| {h} | {co:,.0f} | {cb:,.0f} | {ratio:.3f} | {fps / 1e9:.1f} | "
              f"{fps / peak:.2f} | {fps / dnn:.2f} |")


if __name__ == "__main__":
    main()
