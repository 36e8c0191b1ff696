"""Where a model's held-out loss falls: on words it never read in training, or elsewhere.

A held-out text that goes on past the training text (the next plays, the last chapters, the
next modules) brings words the model cannot know: names of new characters, new identifiers.
No amount of training on the training text teaches them, so they bound what a longer run can
gain there. This script reads the held-out text once, sequentially with the state carried
(one lane, chunks of 256), and sums each character's nats into one of three groups:

    unseen word    letters (and ') of a word that does not occur in the training text
    seen word      letters of a word that does
    other          spaces, punctuation, digits, line ends

    python bench/heldout_breakdown.py TRAIN.txt HELDOUT.txt RUN [RUN ...]

It prints, per run, bits per character overall and per group, and each group's share of the
characters and of the loss.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import numpy as np
import torch

import charlm

WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")
GROUPS = ("unseen word", "seen word", "other")


def groups_of(text: str, known: set[str]) -> np.ndarray:
    """Per character of ``text``: 0 unseen word, 1 seen word, 2 other."""
    group = np.full(len(text), 2, dtype=np.int8)
    for m in WORD.finditer(text):
        group[m.start():m.end()] = 1 if m.group() in known else 0
    return group


@torch.no_grad()
def char_nats(lm: charlm.LanguageModel, text: str, chunk: int = 256) -> np.ndarray:
    """Nats of each character of ``text`` (a char vocab's symbols are characters), read from
    the start of a document with the state carried; unknown characters get NaN."""
    vocab, model = lm.vocab, lm.model
    ids = np.asarray(vocab.encode(text), dtype=np.int64)
    if len(ids) != len(text):
        raise SystemExit("this breakdown needs a char vocab (one symbol per character)")
    inputs = np.concatenate([[vocab.eod_id], ids[:-1]])
    out = np.empty(len(ids))
    with model.inference():
        state = model.initial_state(1)
        for s in range(0, len(ids), chunk):
            x = torch.from_numpy(inputs[s:s + chunk]).view(1, -1)
            logits, state = model.next_logits(x, state)
            logp = torch.log_softmax(logits[0].float(), dim=-1)
            y = torch.from_numpy(ids[s:s + chunk])
            out[s:s + chunk] = (-logp.gather(1, y.view(-1, 1))[:, 0]).numpy()
    if vocab.unk_id is not None:
        out[ids == vocab.unk_id] = np.nan
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train", type=Path)
    ap.add_argument("heldout", type=Path)
    ap.add_argument("runs", type=Path, nargs="+")
    args = ap.parse_args()
    known = set(WORD.findall(args.train.read_text(encoding="utf-8")))
    text = args.heldout.read_text(encoding="utf-8")
    group = groups_of(text, known)
    print(f"held out: {len(text):,} chars; words of it unseen in training: "
          f"{len({m.group() for m in WORD.finditer(text)} - known):,} distinct")
    for run in args.runs:
        nats = char_nats(charlm.load(run), text)
        ok = ~np.isnan(nats)
        total = nats[ok].sum()
        line = [f"{run.name:28s} all {total / ok.sum() / math.log(2):.4f} bpc"]
        for g, name in enumerate(GROUPS):
            sel = ok & (group == g)
            line.append(f"{name} {nats[sel].sum() / max(sel.sum(), 1) / math.log(2):.4f} "
                        f"({sel.sum() / ok.sum():.1%} of chars, {nats[sel].sum() / total:.1%} "
                        f"of loss)")
        print("  ".join(line), flush=True)


if __name__ == "__main__":
    main()
