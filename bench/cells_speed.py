"""Training speed of every cell and option against the fused LSTM of the same size, in one run.

The fused torch.nn layers (lstm, gru, rnn, irnn) run a whole stretch in one call; the leaky
cell, layer norm and recurrent dropout run the layers one time step at a time
(``charlm.models.cells.LoopRNN``). Each row is ``Trainer.train_step`` (data, forward, loss, backward,
clip, AdamW) on Tiny Shakespeare with the same model size, batch and BPTT length, timed as the
median of ``--steps`` steps after a warm-up; the last column is how many times slower than the
fused LSTM it runs (target: at most 4).

    python bench/cells_speed.py                      # 2x256, batch 32, BPTT 64, float32
    python bench/cells_speed.py --hidden 512 --layers 1
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from charlm.api import build_trainer, bundled_corpus
from steprate import train_step_rate

ROWS = [
    ("lstm (fused)", dict(cell="lstm")),
    ("gru (fused)", dict(cell="gru")),
    ("rnn (fused)", dict(cell="rnn")),
    ("irnn (fused)", dict(cell="irnn")),
    ("leaky (loop)", dict(cell="leaky")),
    ("leaky, learned leak (loop)", dict(cell="leaky", learn_leak=True)),
    ("jordan (loop)", dict(cell="jordan")),
    ("lstm --layer-norm (loop)", dict(cell="lstm", layer_norm=True)),
    ("gru --layer-norm (loop)", dict(cell="gru", layer_norm=True)),
    ("rnn --layer-norm (loop)", dict(cell="rnn", layer_norm=True)),
    ("lstm --recurrent-dropout 0.25 (loop)", dict(cell="lstm", recurrent_dropout=0.25)),
    ("gru --recurrent-dropout 0.25 (loop)", dict(cell="gru", recurrent_dropout=0.25)),
    ("rnn --recurrent-dropout 0.25 (loop)", dict(cell="rnn", recurrent_dropout=0.25)),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--bptt", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--precision", default="fp32")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.layers}x"
          f"{args.hidden}, batch {args.batch_size}, BPTT {args.bptt}, {args.precision}",
          flush=True)
    rates = {}
    with tempfile.TemporaryDirectory(prefix="charlm-cells-") as tmp:
        for i, (name, options) in enumerate(ROWS):
            trainer = build_trainer(bundled_corpus(), out=Path(tmp) / f"run{i}",
                                    num_layers=args.layers, hidden_dim=args.hidden,
                                    batch_size=args.batch_size, bptt_len=args.bptt,
                                    max_steps=10**9, device="cpu", precision=args.precision,
                                    dropout=0.0, **options)
            rates[name] = train_step_rate(trainer, args.steps)
            print(f"  {name}: {rates[name]:,.0f} chars/s", flush=True)
    base = rates["lstm (fused)"]
    print("\n| cell / option | chars/s | vs fused lstm | slower by |")
    print("| --- | --- | --- | --- |")
    for name, rate in rates.items():
        print(f"| {name} | {rate:,.0f} | {rate / base:.2f} | {base / rate:.2f}x |")


if __name__ == "__main__":
    main()
