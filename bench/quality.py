"""Quality at equal wall-clock: validation loss on Tiny Shakespeare after a fixed training budget.

The split is nanoGPT's shakespeare_char split (charlm's default for a single document): the first
90% of the text trains, the last 10% validates. charlm trains for ``--budget`` seconds of
wall-clock (``--max-time``; with no evaluation during the run, so the budget is all training),
then the final weights are scored on the whole validation text with the state carried through
it. With ``--reference`` a bare PyTorch loop (the quick recipe in ../shared/ANCHORS.md:
embedding 64, 2x256 nn.LSTM, Adam 3e-3 decayed linearly over the budget, clip 1.0, batch 32,
TBPTT 64, no dropout) trains for the same budget in the same run and is scored the same way.

    python bench/quality.py --budget 108                       # the 'fast' preset's settings
    python bench/quality.py --budget 600 --preset default
    python bench/quality.py --budget 108 --set hidden_dim=384 --set lr=4e-3 --reference

Options are charlm's (LMConfig, TrainConfig and LMTaskConfig field names, as ``--set name=value``).
Nothing but the timing loop differs from ``charlm train --max-time``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from charlm.api import build_trainer, bundled_corpus
from charlm.text.corpus import prepare_cached


def parse_value(text: str):
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def run_charlm(budget: float, preset: str | None, options: dict, workdir: Path) -> dict:
    trainer = build_trainer(bundled_corpus(), out=workdir / "run", preset=preset,
                            max_time=budget, eval_every=10**9, save_every=10**9, **options)
    t0 = time.perf_counter()
    summary = trainer.run()  # evaluates the final weights once, on the whole validation split
    wall = time.perf_counter() - t0
    val = {"loss_nats": summary["best"]["val_loss"], "bpc": summary["best"]["val_bpc"]}
    return {"system": "charlm", "preset": preset, "options": options,
            "model": trainer.model.config.to_dict(),
            "train": {**trainer.config.to_dict(), **trainer.task.config.to_dict()},
            "steps": summary["step"], "train_seconds": summary["elapsed"],
            "wall_seconds": wall, "val_loss": val["loss_nats"], "val_bpc": val["bpc"],
            "chars_per_s": trainer.pos.targets / summary["elapsed"]}


def run_bare(budget: float, seed: int = 0) -> dict:
    """The quick 2x256 recipe from ANCHORS.md, written with torch.nn only."""
    torch.manual_seed(seed)
    corpus = prepare_cached([bundled_corpus()])
    train = torch.from_numpy(np.asarray(corpus.split("train").tokens, dtype=np.int64))
    val = torch.from_numpy(np.asarray(corpus.split("val").tokens, dtype=np.int64))
    V, B, T, lr = corpus.vocab.size, 32, 64, 3e-3

    emb, rnn, out = nn.Embedding(V, 64), nn.LSTM(64, 256, 2, batch_first=True), nn.Linear(256, V)
    params = [*emb.parameters(), *rnn.parameters(), *out.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    lane = (len(train) - 1) // B
    xs, ys = train[:B * lane].view(B, lane), train[1:B * lane + 1].view(B, lane)
    h, pos, steps, t0 = None, 0, 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < budget:
        for g in opt.param_groups:
            g["lr"] = lr * (1 - elapsed / budget)
        if pos + T > lane:
            pos, h = 0, None
        y, h = rnn(emb(xs[:, pos:pos + T]), h)
        h = tuple(s.detach() for s in h)
        loss = nn.functional.cross_entropy(out(y).reshape(-1, V), ys[:, pos:pos + T].reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        pos, steps = pos + T, steps + 1
    with torch.no_grad():
        y, _ = rnn(emb(val[None, :-1]))
        v = nn.functional.cross_entropy(out(y)[0], val[1:]).item()
    return {"system": "bare 2x256 LSTM loop (ANCHORS recipe)", "steps": steps,
            "train_seconds": budget, "val_loss": v, "val_bpc": v / math.log(2),
            "chars_per_s": steps * B * T / budget}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=108.0, help="seconds of training")
    ap.add_argument("--preset", default=None, help="charlm preset (default: chosen by budget)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="a charlm option (field name), repeatable")
    ap.add_argument("--reference", action="store_true",
                    help="also train the bare torch.nn reference loop for the same budget")
    ap.add_argument("--json", type=Path, help="append the results as JSON lines to this file")
    args = ap.parse_args()
    options = {}
    for item in args.set:
        name, _, value = item.partition("=")
        options[name.replace("-", "_")] = parse_value(value)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"budget {args.budget:.0f} s", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="charlm-quality-") as tmp:
        results.append(run_charlm(args.budget, args.preset, options, Path(tmp)))
        shutil.rmtree(Path(tmp) / "run", ignore_errors=True)
    if args.reference:
        results.append(run_bare(args.budget))
    print("| system | settings | steps | chars/s | val nats/char | val bits/char |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        if r["system"] == "charlm":
            m, t = r["model"], r["train"]
            settings = (f"{m['cell']} {m['num_layers']}x{m['hidden_dim']} emb {m['embed_dim']} "
                        f"drop {m['dropout']} wdrop {m.get('weight_drop', 0)} B {t['batch_size']} "
                        f"T {t['bptt_len']} "
                        f"lr {t['lr']} wd {t['weight_decay']} {t['schedule']} "
                        f"{t.get('precision', 'fp32')}")
        else:
            settings = "2x256, B 32, T 64, Adam 3e-3 linear"
        print(f"| {r['system']} | {settings} | {r['steps']} | {r['chars_per_s']:,.0f} | "
              f"{r['val_loss']:.4f} | {r['val_bpc']:.4f} |", flush=True)
    if args.json:
        with open(args.json, "a", encoding="utf-8") as f:
            for r in results:
                f.write(json.dumps({"budget": args.budget, **r}) + "\n")


if __name__ == "__main__":
    main()
