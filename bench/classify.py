"""Sentence classification as a user runs it: ``charlm classify`` end to end on SST-2, SUBJ and
TREC (``../shared/corpora/classify``), beside a plain packed ``nn.LSTM`` classifier loop of the
same size and time (the floor), and the published figures.

Arms (each a setting of one run, LABEL=ARM[:OPTIONS]):

    scratch           charlm classify train TRAIN [--val DEV] --max-time B OPTIONS
    lm                the same with --init-from a language model trained on the task's own
                      training texts (charlm train TEXTS --doc-separator '\\n' --max-time LM_S,
                      made once per dataset and reused; its time is not in B)
    probe             charlm classify train TRAIN --init-from LM --probe OPTIONS
    floor             a bare loop: Embedding -> packed nn.LSTM -> last state -> Linear, Adam,
                      random batches, linear decay over B seconds, the final weights

then ``charlm classify eval TEST --json``. Splits: SST-2 train / dev / test; SUBJ's 10,000
sentences cut 90/10 with a fixed seed (the 90% to train, charlm holding out its own share);
TREC train / test (charlm holds out a share of train). One JSON line per run goes to --json.

    python bench/classify.py --data sst2 --budget 600 --setting 'scratch=scratch' \\
        --setting 'floor=floor' --setting 'ulmfit=lm:--layer-lr-factor 2.6 --schedule slanted'
    python bench/classify.py --speed          # chars/s of a step: charlm against the bare loop

The speed comparison times training steps of the same model on SST-2's training texts: charlm's
bucketed and packed batching against the bare loop's packed random batches (the target: 1.5x
through the batching), and ``charlm classify predict`` in texts/s.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
DATA = BENCH.parent.parent / "shared" / "corpora" / "classify"
WORK = BENCH / ".classify"
CHARLM = [sys.executable, "-m", "charlm"]
SUBJ_TEST_SHARE, SUBJ_SEED = 0.1, 7
PUBLISHED = {"sst2": 82.7, "subj": 89.6, "trec": 91.2}  # Kim 2014, CNN-rand


def splits(name: str) -> dict:
    """{"train": path, "val": path or None, "test": path, "encoding": ...} of a dataset, in the
    "label text" layout charlm reads as labelled lines."""
    WORK.mkdir(exist_ok=True)
    if name == "sst2":
        d = DATA / "sst2"
        return {"train": d / "stsa.binary.train", "val": d / "stsa.binary.dev",
                "test": d / "stsa.binary.test", "encoding": "utf-8"}
    if name == "trec":
        d = DATA / "trec"
        return {"train": d / "TREC.train.all", "val": None, "test": d / "TREC.test.all",
                "encoding": "latin-1"}
    if name == "subj":
        train, test = WORK / "subj.train", WORK / "subj.test"
        if not (train.exists() and test.exists()):
            lines = (DATA / "subj" / "subj.all").read_bytes().split(b"\n")
            lines = [line for line in lines if line.strip()]
            order = np.random.default_rng(SUBJ_SEED).permutation(len(lines))
            cut = int(len(lines) * SUBJ_TEST_SHARE)
            test.write_bytes(b"\n".join(lines[i] for i in sorted(order[:cut])) + b"\n")
            train.write_bytes(b"\n".join(lines[i] for i in sorted(order[cut:])) + b"\n")
        return {"train": train, "val": None, "test": test, "encoding": "latin-1"}
    raise SystemExit(f"unknown data {name!r}")


def read_lines(path: Path, encoding: str) -> tuple[list[str], list[str]]:
    labels, texts = [], []
    for raw in path.read_bytes().split(b"\n"):
        line = raw.decode(encoding).strip()
        if line:
            label, _, text = line.partition(" ")
            labels.append(label)
            texts.append(text.strip())
    return texts, labels


def language_model(name: str, seconds: float) -> Path:
    """A language model trained on the dataset's training texts (one per line), made once."""
    s = splits(name)
    out = WORK / f"lm-{name}-{int(seconds)}"
    if (out / "best.safetensors").exists():
        return out
    texts, _ = read_lines(s["train"], s["encoding"])
    if s["val"] is not None:
        texts += read_lines(s["val"], s["encoding"])[0]
    corpus = WORK / f"{name}.texts.txt"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([*CHARLM, "train", str(corpus), "--out", str(out), "--max-time",
                    str(seconds), "--doc-separator", "\\n"], check=True, capture_output=True)
    return out


def charlm_arm(name: str, budget: float, label: str, arm: str, options: list[str],
               lm_seconds: float) -> dict:
    s = splits(name)
    out = WORK / f"{name}-{int(budget)}-{label}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [*CHARLM, "classify", "train", str(s["train"]), "--out", str(out), "--encoding",
           s["encoding"]]
    if s["val"] is not None:
        cmd += ["--val", str(s["val"])]
    if arm in ("lm", "probe"):
        cmd += ["--init-from", str(language_model(name, lm_seconds))]
    cmd += ["--probe"] if arm == "probe" else ["--max-time", str(budget)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd + options, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{label} failed:\n{done.stderr[-3000:]}")
    scored = subprocess.run([*CHARLM, "classify", "eval", str(s["test"]), "--checkpoint",
                             str(out), "--encoding", s["encoding"], "--json"],
                            capture_output=True, text=True, check=True)
    result = json.loads(scored.stdout)
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "val_accuracy" in r]
    return {"accuracy": result["accuracy"], "macro_f1": result["macro_f1"], "wall_s": wall,
            "steps": max((r.get("step", 0) for r in records), default=0),
            "best_val": max((r["val_accuracy"] for r in evals), default=None),
            "tail": done.stderr.strip().splitlines()[-1:]}


# ----- the floor: a bare packed nn.LSTM classifier loop -----------------------------------------
def _bare_model(vocab_size: int, classes: int, hidden: int, embed: int):
    import torch
    from torch import nn

    class Bare(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(vocab_size, embed, padding_idx=0)
            self.rnn = nn.LSTM(embed, hidden, batch_first=True)
            self.out = nn.Linear(hidden, classes)

        def forward(self, x, lengths):
            packed = nn.utils.rnn.pack_padded_sequence(self.emb(x), lengths, batch_first=True,
                                                       enforce_sorted=False)
            _, (h, _) = self.rnn(packed)
            return self.out(h[-1])
    torch.manual_seed(0)
    return Bare()


def _encode(texts, table):
    return [np.asarray([table.get(c, 1) for c in t], dtype=np.int64) for t in texts]


def _batch(ids, rows):
    import torch
    lengths = torch.tensor([len(ids[r]) for r in rows])
    x = torch.zeros(len(rows), int(lengths.max()), dtype=torch.long)
    for j, r in enumerate(rows):
        x[j, :len(ids[r])] = torch.from_numpy(ids[r])
    return x, lengths


def floor_arm(name: str, budget: float, hidden: int = 512, embed: int = 64,
              batch: int = 32, lr: float = 2e-3) -> dict:
    import torch
    s = splits(name)
    texts, labels = read_lines(s["train"], s["encoding"])
    test_texts, test_labels = read_lines(s["test"], s["encoding"])
    names = sorted(set(labels))
    table = {c: i + 2 for i, c in enumerate(sorted({c for t in texts for c in t}))}
    ids, y = _encode(texts, table), np.asarray([names.index(x) for x in labels])
    net = _bare_model(len(table) + 2, len(names), hidden, embed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    rng = np.random.default_rng(0)
    t0, steps, order, pos = time.perf_counter(), 0, rng.permutation(len(ids)), 0
    while (elapsed := time.perf_counter() - t0) < budget:
        for g in opt.param_groups:
            g["lr"] = lr * (1 - elapsed / budget)
        if pos + batch > len(order):
            order, pos = rng.permutation(len(ids)), 0
        rows = order[pos:pos + batch]
        pos += batch
        x, lengths = _batch(ids, rows)
        loss = torch.nn.functional.cross_entropy(net(x, lengths), torch.from_numpy(y[rows]))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        steps += 1
    net.eval()
    test_ids = _encode(test_texts, table)
    correct = 0
    with torch.no_grad():
        for s0 in range(0, len(test_ids), 64):
            rows = list(range(s0, min(s0 + 64, len(test_ids))))
            x, lengths = _batch(test_ids, rows)
            predicted = net(x, lengths).argmax(-1).numpy()
            correct += sum(names[p] == test_labels[r] for p, r in zip(predicted, rows))
    return {"accuracy": correct / len(test_ids), "steps": steps, "wall_s": budget}


# ----- speed ------------------------------------------------------------------------------------
def speed(steps: int = 60, hidden: int = 512) -> None:
    """Training chars/s of charlm's classifier step (bucketed and packed) against the bare
    packed loop, same model, same texts, interleaved; then predict throughput."""
    import torch

    from charlm.classify_runs import new_classifier_run
    s = splits("sst2")
    texts, labels = read_lines(s["train"], s["encoding"])
    table = {c: i + 2 for i, c in enumerate(sorted({c for t in texts for c in t}))}
    ids = _encode(texts, table)
    y = torch.tensor([int(x) for x in labels])
    net = _bare_model(len(table) + 2, 2, hidden, 64)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)

    def bare_step():
        rows = rng.choice(len(ids), 32, replace=False)
        x, lengths = _batch(ids, rows)
        loss = torch.nn.functional.cross_entropy(net(x, lengths), y[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
        return int(lengths.sum())

    trainers = {}
    for batching in ("bucketed", "packed"):
        trainers[batching] = new_classifier_run(
            [s["train"]], [s["val"]], WORK / f"speed-{batching}", None, {},
            {"cell": "lstm", "num_layers": 1, "hidden_dim": hidden, "embed_dim": 64,
             "batch_size": 32, "dropout": 0.0, "head_dropout": 0.0, "pooling": "last",
             "precision": "fp32", "batching": batching, "max_steps": 10**6, "device": "cpu"})

    def charlm_step(trainer):
        def step():
            epoch, index = trainer.pos.epoch, trainer.pos.batch
            rows = trainer.task.batches(epoch)[index]
            trainer.train_step()
            return int(trainer.task.lengths[rows].sum())
        return step

    arms = {"bare packed loop": bare_step,
            **{f"charlm {b}": charlm_step(t) for b, t in trainers.items()}}
    chars = {k: 0 for k in arms}
    seconds = {k: 0.0 for k in arms}
    for _ in range(3):  # warm up
        for f in arms.values():
            f()
    for _ in range(steps):  # interleaved, so the machine's noise falls on all alike
        for k, f in arms.items():
            t0 = time.perf_counter()
            chars[k] += f()
            seconds[k] += time.perf_counter() - t0
    base = chars["bare packed loop"] / seconds["bare packed loop"]
    for k in arms:
        rate = chars[k] / seconds[k]
        print(f"{k:20s} {rate:>10,.0f} chars/s   {rate / base:5.2f}x the bare loop")
    # Predict throughput, as a user runs it.
    run = trainers["bucketed"]
    run.run_dir.mkdir(parents=True, exist_ok=True)
    run.config = run.config.__class__(**{**run.config.to_dict(), "max_steps": run.pos.step + 1})
    run.run()
    lines = WORK / "predict.txt"
    lines.write_text("\n".join(texts * 3) + "\n", encoding="utf-8")
    t0 = time.perf_counter()
    subprocess.run([*CHARLM, "classify", "predict", "--file", str(lines), "--checkpoint",
                    str(run.run_dir)], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    print(f"charlm classify predict: {len(texts) * 3:,} texts in {wall:.1f} s "
          f"({len(texts) * 3 / wall:,.0f} texts/s, process start included)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", choices=("sst2", "subj", "trec"))
    ap.add_argument("--budget", action="append", type=float)
    ap.add_argument("--setting", action="append", metavar="LABEL=ARM[:OPTIONS]")
    ap.add_argument("--lm-seconds", type=float, default=300)
    ap.add_argument("--json", type=Path, default=WORK / "results.jsonl")
    ap.add_argument("--speed", action="store_true")
    args = ap.parse_args()
    WORK.mkdir(exist_ok=True)
    if args.speed:
        speed()
        return
    for name in args.data:
        for budget in args.budget:
            for setting in args.setting:
                label, _, spec = setting.partition("=")
                arm, _, opts = spec.partition(":")
                if arm == "floor":
                    row = floor_arm(name, budget)
                else:
                    row = charlm_arm(name, budget, label, arm, shlex.split(opts),
                                     args.lm_seconds)
                row = {"data": name, "budget": budget, "label": label, "arm": arm,
                       "options": opts, "published": PUBLISHED[name], **row}
                with args.json.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{name:5s} {budget:>5g} s  {label:12s} test accuracy "
                      f"{100 * row['accuracy']:.2f}%  (Kim 2014 CNN-rand {PUBLISHED[name]})  "
                      f"steps {row.get('steps')}", flush=True)


if __name__ == "__main__":
    main()
