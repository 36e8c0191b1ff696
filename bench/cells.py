"""The classic comparison: every cell type, and 1, 2 and 3 layers of lstm, gru and rnn, trained
on Tiny Shakespeare for the same wall-clock budget; validation bits per character in one table
(in the manner of Table 1 of Karpathy, Johnson & Fei-Fei 2015, "Visualizing and Understanding
Recurrent Networks", which compared the three at equal parameter counts and full training;
here the budget is time, on this machine).

Every run: the `default` preset's training settings (batch 32, BPTT 64, AdamW lr 3e-3 with
weight decay 0.1, cosine decay over the budget, clip-norm 1.0, precision auto), hidden 256,
embedding 64, no dropout (short budgets do not overfit), the same seed; the figure is the final
weights' loss on the whole validation split (nanoGPT's split: the last 10%).

    python bench/cells.py                 # 60 s per row, 15 rows: ~17 minutes
    python bench/cells.py --budget 30 --rows lstm-2,rnn-2
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
from pathlib import Path

import torch

from charlm.api import build_trainer, bundled_corpus

ROWS = {f"{cell}-{n}": dict(cell=cell, num_layers=n)
        for cell in ("lstm", "gru", "rnn") for n in (1, 2, 3)}
ROWS.update({
    "irnn-2": dict(cell="irnn", num_layers=2),
    "leaky-2": dict(cell="leaky", num_layers=2, learn_leak=True),
    "jordan-1": dict(cell="jordan", num_layers=1),
    "lstm-2-layer-norm": dict(cell="lstm", num_layers=2, layer_norm=True),
    "lstm-2-recurrent-dropout": dict(cell="lstm", num_layers=2, recurrent_dropout=0.1),
    "lstm-2-learned-h0": dict(cell="lstm", num_layers=2, learn_init_state=True),
})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=60.0, help="seconds of training per row")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated row names")
    ap.add_argument("--json", type=Path, help="append each result as a JSON line")
    args = ap.parse_args()
    names = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        raise SystemExit(f"unknown rows: {', '.join(unknown)}; known: {', '.join(ROWS)}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.budget:.0f} s "
          f"per row, hidden {args.hidden}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="charlm-cells-") as tmp:
        for name in names:
            trainer = build_trainer(bundled_corpus(), out=Path(tmp) / name, preset="default",
                                    hidden_dim=args.hidden, embed_dim=64, dropout=0.0,
                                    max_time=args.budget, eval_every=10**9, save_every=10**9,
                                    **ROWS[name])
            summary = trainer.run()
            r = {"row": name, **ROWS[name], "hidden": args.hidden, "budget": args.budget,
                 "parameters": sum(p.numel() for p in trainer.model.parameters()),
                 "steps": summary["step"], "val_loss": summary["best"]["val_loss"],
                 "val_bpc": summary["best"]["val_bpc"],
                 "chars_per_s": trainer.pos.targets / summary["elapsed"],
                 "precision": trainer.config.precision}
            results.append(r)
            print(f"  {name}: {r['steps']} steps, val {r['val_bpc']:.4f} bpc", flush=True)
            if args.json:
                with open(args.json, "a", encoding="utf-8") as f:
                    f.write(json.dumps(r) + "\n")
            shutil.rmtree(Path(tmp) / name, ignore_errors=True)
    print("\n| row | cell | layers | parameters | steps | chars/s | val nats/char | "
          "val bits/char |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        loss = r["val_loss"] if r["val_loss"] is not None else math.nan
        print(f"| {r['row']} | {r['cell']} | {r['num_layers']} | {r['parameters']:,} | "
              f"{r['steps']:,} | {r['chars_per_s']:,.0f} | {loss:.4f} | "
              f"{r['val_bpc']:.4f} |")


if __name__ == "__main__":
    main()
