"""charlm's n-gram against an installable implementation, on the same text: nltk.lm's
interpolated Kneser-Ney (one discount, 0.1 by default) beside charlm's interpolated modified
Kneser-Ney (three discounts per order, Chen & Goodman's estimates).

    pip install nltk
    python bench/ngram_reference.py [--corpus FILE] [--train-chars N] [--test-chars N]

The first --train-chars characters of the corpus are counted, the next --test-chars are
scored, each as one document (nltk pads the start with <s>; charlm with PAD after EOD: the same
information). Prints per order the seconds to count and to score, and bits per character of
the test text: nltk's is the log-probability of every test character (the end-of-text symbol
excluded), charlm's is `evaluate`'s figure without the final EOD, so the two score the same
characters. nltk is slow: keep the texts small.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from charlm.models.ngram import NgramLM  # noqa: E402
from charlm.text.corpus import encode_texts  # noqa: E402
from charlm.text.vocab import CharVocab  # noqa: E402


def charlm_figures(train: str, test: str, order: int) -> tuple[float, float, float]:
    vocab = CharVocab(train + test)
    t0 = time.perf_counter()
    model = NgramLM.count(encode_texts(vocab, [train]).tokens, vocab, order)
    counted = time.perf_counter() - t0
    t0 = time.perf_counter()
    ids = torch.tensor([[vocab.eod_id] + vocab.encode(test).tolist()])
    with torch.no_grad():
        logits, _ = model.next_logits(ids, reset=ids == vocab.eod_id)
        logp = logits[0, :-1].double().log_softmax(-1).gather(1, ids[0, 1:, None])[:, 0]
    scored = time.perf_counter() - t0
    return counted, scored, float(-logp.sum()) / len(test) / math.log(2)


def nltk_figures(train: str, test: str, order: int) -> tuple[float, float, float]:
    from nltk.lm import KneserNeyInterpolated
    from nltk.lm.preprocessing import pad_both_ends
    from nltk.util import everygrams

    t0 = time.perf_counter()
    model = KneserNeyInterpolated(order)
    padded = list(pad_both_ends(list(train), n=order))
    model.fit([everygrams(padded, max_len=order)], vocabulary_text=list(train + test) + ["</s>"])
    counted = time.perf_counter() - t0
    t0 = time.perf_counter()
    history = ["<s>"] * (order - 1)
    bits = 0.0
    for ch in test:
        context = tuple(history[-(order - 1):]) if order > 1 else None
        bits -= model.logscore(ch, context)  # log2
        history.append(ch)
    scored = time.perf_counter() - t0
    return counted, scored, bits / len(test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "tinyshakespeare.txt")
    parser.add_argument("--train-chars", type=int, default=100_000)
    parser.add_argument("--test-chars", type=int, default=5_000)
    parser.add_argument("--orders", default="2,3,4,5")
    args = parser.parse_args()
    text = args.corpus.read_text(encoding="utf-8")
    train = text[:args.train_chars]
    test = text[args.train_chars:args.train_chars + args.test_chars]
    print(f"{args.corpus.name}: {len(train):,} characters counted, the next {len(test):,} "
          f"scored")
    print(f"{'order':>5} | {'charlm count s':>14} {'score s':>8} {'bits/char':>9} | "
          f"{'nltk count s':>12} {'score s':>8} {'bits/char':>9}")
    for order in map(int, args.orders.split(",")):
        c = charlm_figures(train, test, order)
        n = nltk_figures(train, test, order)
        print(f"{order:>5} | {c[0]:>14.3f} {c[1]:>8.3f} {c[2]:>9.4f} | {n[0]:>12.2f} "
              f"{n[1]:>8.2f} {n[2]:>9.4f}", flush=True)


if __name__ == "__main__":
    main()
