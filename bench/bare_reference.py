"""A bare PyTorch training loop on charlm's prepared Tiny Shakespeare, as a quality reference.

Embedding -> nn.LSTM -> Linear, Adam, clip-by-norm, linear LR decay over a wall-clock budget,
B contiguous lanes with the state carried between chunks; validation over the whole validation
text with the state carried. Nothing from charlm's model or trainer is used, only its prepared
arrays, so the figure checks charlm's own loop.

    python bench/bare_reference.py --seconds 100
"""

import argparse
import math
import time

import numpy as np
import torch
from torch import nn

from charlm.api import bundled_corpus
from charlm.text.corpus import prepare_cached


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=100)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--bptt", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    args = ap.parse_args()
    torch.manual_seed(0)
    corpus = prepare_cached([bundled_corpus()])
    train = torch.from_numpy(np.asarray(corpus.split("train").tokens, dtype=np.int64))
    val = torch.from_numpy(np.asarray(corpus.split("val").tokens, dtype=np.int64))
    V = corpus.vocab.size

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(V, 64)
            self.rnn = nn.LSTM(64, args.hidden, args.layers, batch_first=True)
            self.out = nn.Linear(args.hidden, V)

        def forward(self, x, h=None):
            y, h = self.rnn(self.emb(x), h)
            return self.out(y), h

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    B, T = args.batch, args.bptt
    lane_len = (len(train) - 1) // B
    data = train[: B * lane_len + 1]
    x_all = data[:-1].view(B, lane_len)
    y_all = data[1:].view(B, lane_len)
    h, pos, steps, t0 = None, 0, 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < args.seconds:
        for g in opt.param_groups:
            g["lr"] = args.lr * (1 - elapsed / args.seconds)
        if pos + T > lane_len:
            pos, h = 0, None
        x, y = x_all[:, pos:pos + T], y_all[:, pos:pos + T]
        logits, h = net(x, h)
        h = tuple(s.detach() for s in h)
        loss = nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        pos += T
        steps += 1
    net.eval()
    with torch.no_grad():
        logits, _ = net(val[None, :-1])
        v = nn.functional.cross_entropy(logits[0], val[1:]).item()
    print(f"bare loop: {steps} steps in {args.seconds:.0f} s, last train loss {loss.item():.4f}, "
          f"val {v:.4f} nats/char ({v / math.log(2):.4f} bits/char)")


if __name__ == "__main__":
    main()
