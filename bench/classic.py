"""The lectures' contrast by measurement: n-grams, fixed windows, HMMs and recurrent nets on one
text, each scored on the same validation split in bits per character.

    python bench/classic.py [--corpus FILE] [--budget SECONDS] [--only ngram,window,hmm,rnn]
                            [--json ROWS.json] [--plot PLOT.png] [--merge OLD.json]

--merge: the rows of an earlier run's --json for the families not run now (e.g. --only hmm
after a change to the HMM), so the table and the plot cover all of them.

n-grams are counted (seconds, whatever the budget); the window models, HMMs and recurrent nets
are trained for the same wall-clock budget each through the CLI (`charlm baseline window|hmm`,
`charlm train --max-time`), as a user runs them. Prints one row per model: its settings, the
seconds it took, and validation bits per character. Run it alone (two torch processes on two
cores slow each other).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from charlm.evaluate import evaluate  # noqa: E402
from charlm.models.ngram import NgramLM  # noqa: E402
from charlm.text.corpus import PrepareConfig, open_or_prepare  # noqa: E402

ORDERS = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20)
WINDOWS = (3, 5, 10, 20, 30)
STATES = (16, 64, 256, 512)
CELLS = ("rnn", "gru", "lstm")
FAMILIES = ("ngram", "window", "hmm", *CELLS)  # the order of the rows


def ngrams(corpus: Path) -> list[dict]:
    prepared = open_or_prepare([corpus], {})
    train, val = prepared.split("train"), prepared.split("val")
    rows = []
    for order in ORDERS:
        t0 = time.perf_counter()
        model = NgramLM.count(train.tokens, prepared.vocab, order)
        counted = time.perf_counter() - t0
        bpc = evaluate(model, prepared.vocab, val)["bpc"]
        rows.append({"model": f"{order}-gram (KN)", "family": "ngram", "setting": order,
                     "seconds": counted, "bpc": bpc,
                     "size": f"{sum(model.config.ngrams):,} n-grams"})
        print(f"{rows[-1]['model']:<18} {counted:7.1f} s  {bpc:.4f} bits/char  "
              f"{rows[-1]['size']}", flush=True)
    return rows


def _cli(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "charlm", *args], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _bpc(run_dir: Path) -> float:
    out = subprocess.run([sys.executable, "-m", "charlm", "eval", "--checkpoint", str(run_dir),
                          "--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)["bpc"]


def _size(run_dir: Path) -> str:
    """The model's sizes as its run recorded them."""
    model = json.loads((run_dir / "config.json").read_text())["model"]
    if "cell" in model:
        return f"{model['cell']} {model['num_layers']}x{model['hidden_dim']}"
    return ", ".join(f"{k} {model[k]}" for k in ("context", "hidden_dim", "states") if k in model)


def trained(corpus: Path, budget: float, only: set[str], tmp: Path) -> list[dict]:
    runs = []
    if "window" in only:
        runs += [(f"window K={k}", "window", k, ["baseline", "window", str(corpus), "--context", str(k),
                                    "--max-time", str(budget), "--no-plot"]) for k in WINDOWS]
    if "hmm" in only:
        runs += [(f"HMM {s} states", "hmm", s, ["baseline", "hmm", str(corpus), "--states", str(s),
                                      "--max-time", str(budget)]) for s in STATES]
    if "rnn" in only:
        # The `fast` preset (1x640, no dropout: what `--max-time` picks for about this
        # budget on a text of this size) with each cell in turn.
        runs += [(f"{c.upper()} 1x640", c, None, ["train", str(corpus), "--preset", "fast",
                                                 "--cell", c, "--max-time", str(budget),
                                                 "--no-plot"])
                 for c in CELLS]
    rows = []
    for i, (name, family, setting, args) in enumerate(runs):
        run_dir = tmp / f"run{i}"
        seconds = _cli([*args, "--out", str(run_dir)])
        rows.append({"model": name, "family": family, "setting": setting, "seconds": seconds,
                     "bpc": _bpc(run_dir), "size": _size(run_dir)})
        print(f"{name:<18} {seconds:7.1f} s  {rows[-1]['bpc']:.4f} bits/char  "
              f"{rows[-1]['size']}", flush=True)
    return rows


def plot(rows: list[dict], path: Path, budget: float) -> None:
    """Validation bits/char against each memoryless or hidden-Markov model's size, one panel
    per family, with the recurrent nets as horizontal lines across all three."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("ngram", "n-gram order (KN)"), ("window", "window K (feed-forward)"),
              ("hmm", "HMM states")]
    recurrent = [r for r in rows if r["family"] in CELLS]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    for ax, (family, label) in zip(axes, panels):
        mine = [r for r in rows if r["family"] == family]
        if mine:
            ax.plot([r["setting"] for r in mine], [r["bpc"] for r in mine], "o-", color="C0")
        if family == "hmm":
            ax.set_xscale("log", base=2)
        for j, r in enumerate(recurrent):
            ax.axhline(r["bpc"], color=f"C{j + 1}", linestyle="--", label=r["model"])
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    # The range where the models differ; a figure above it (the unigram) is written in.
    low = min(r["bpc"] for r in rows) - 0.05
    high = min(max(r["bpc"] for r in rows), 4.0) + 0.05
    for ax, (family, _) in zip(axes, panels):
        ax.set_ylim(low, high)
        for r in rows:
            if r["family"] == family and r["bpc"] > high:
                ax.annotate(f"{r['model']}: {r['bpc']:.2f} \u2191", (r["setting"], high),
                            textcoords="offset points", xytext=(4, -12), fontsize=8)
    axes[0].set_ylabel("validation bits per character")
    if recurrent:
        axes[-1].legend(loc="upper right")
    fig.suptitle(f"Memoryless and hidden-Markov models against recurrent nets "
                 f"({budget:g} s of training each; n-grams counted)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "tinyshakespeare.txt")
    parser.add_argument("--budget", type=float, default=90.0)
    parser.add_argument("--only", default="ngram,window,hmm,rnn")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--plot", type=Path, help="draw the rows here (PNG)")
    parser.add_argument("--merge", type=Path, help="an earlier --json: its rows of the "
                                                   "families not run now")
    args = parser.parse_args()
    only = set(args.only.split(","))
    print(f"{args.corpus.name}, validation split {PrepareConfig.default('val_fraction'):g} of "
          f"it; budget {args.budget:g} s per trained model")
    rows = ngrams(args.corpus) if "ngram" in only else []
    with tempfile.TemporaryDirectory() as tmp:
        rows += trained(args.corpus, args.budget, only, Path(tmp))
    if args.merge:
        families = (only & {"ngram", "window", "hmm"}) | (set(CELLS) if "rnn" in only else set())
        kept = [r for r in json.loads(args.merge.read_text()) if r["family"] not in families]
        rows = sorted(kept + rows, key=lambda r: FAMILIES.index(r["family"]))
        print(f"with the rows of {args.merge}:")
        for r in rows:
            print(f"{r['model']:<18} {r['seconds']:7.1f} s  {r['bpc']:.4f} bits/char  "
                  f"{r.get('size', '')}")
    best = min(rows, key=lambda r: r["bpc"])
    print(f"best: {best['model']} at {best['bpc']:.4f} bits/char")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.plot:
        plot(rows, args.plot, args.budget)


if __name__ == "__main__":
    main()
