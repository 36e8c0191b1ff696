"""Evaluation speed: ``charlm eval`` on a 10 MB text against the training throughput of the same
model, both measured in this run.

The text is Tiny Shakespeare's lines shuffled (seeded) and repeated until it holds ``--mb``
megabytes. The model is a freshly initialised charlm model (speed does not depend on the
weights), saved as a run directory so the CLI can load it. The figures:

  * train:    chars/s of ``Trainer.train_step`` (forward, loss, backward, clip, AdamW) with the
              preset's batch and BPTT length, in float32 and in bf16 (the preset's ``auto``
              on a CPU with bf16 instructions);
  * eval API: chars/s of ``LanguageModel.evaluate(text)`` (encoding and the forward over lanes);
  * eval CLI: chars/s of ``charlm eval FILE --checkpoint RUN --json`` as a subprocess, start-up,
              loading, reading and encoding the file included;
  * eval bf16: the API figure with ``precision="bf16"`` (approximate figures, faster).

    python bench/eval_speed.py                    # the default preset's model (2x256)
    python bench/eval_speed.py --hidden 512
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import charlm
from charlm.api import build_trainer, bundled_corpus
from steprate import train_step_rate


def make_text(mb: float, seed: int = 0) -> str:
    lines = bundled_corpus().read_text(encoding="utf-8").splitlines(keepends=True)
    rng = random.Random(seed)
    out, size = [], 0
    while size < mb * 1e6:
        rng.shuffle(lines)
        out.extend(lines)
        size += sum(len(line) for line in lines)
    return "".join(out)[: int(mb * 1e6)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=10.0)
    ap.add_argument("--hidden", type=int, default=None)
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--train-steps", type=int, default=30)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    with tempfile.TemporaryDirectory(prefix="charlm-evalspeed-") as tmp:
        tmp = Path(tmp)
        rates = {}
        for precision in ("fp32", "bf16"):  # the training step in each precision
            trainer = build_trainer(bundled_corpus(), out=tmp / f"run-{precision}",
                                    hidden_dim=args.hidden, num_layers=args.layers,
                                    max_steps=10**9, device=args.device, precision=precision)
            trainer.write_run_files()
            rates[precision] = train_step_rate(trainer, args.train_steps)
        train_cps = rates["bf16"]
        trainer.save("best.safetensors")

        text = make_text(args.mb)
        path = tmp / "held.txt"
        path.write_text(text, encoding="utf-8")
        lm = charlm.load(tmp / "run-bf16", device=args.device)
        lm.evaluate(text[:100_000])  # warm up
        t = time.perf_counter()
        api = lm.evaluate(text)
        api_s = time.perf_counter() - t
        t = time.perf_counter()
        api16 = lm.evaluate(text, precision="bf16")
        api16_s = time.perf_counter() - t

        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "charlm", "eval", str(path), "--checkpoint",
                               str(tmp / "run-bf16"), "--json", "--device", args.device],
                              capture_output=True, text=True,
                              check=True)
        cli_s = time.perf_counter() - t
        cli = json.loads(proc.stdout)

    m = trainer.model.config
    c = trainer.task.config
    print(f"\nmodel: {m.cell} {m.num_layers}x{m.hidden_dim}, embed {m.embed_dim}; training with "
          f"B {c.batch_size} T {c.bptt_len}; eval text {len(text) / 1e6:.1f} M chars")
    print("| what | chars/s | vs bf16 training |")
    print("| --- | --- | --- |")
    print(f"| training step, bf16 | {train_cps:,.0f} | 1.00 |")
    print(f"| training step, fp32 | {rates['fp32']:,.0f} | {rates['fp32'] / train_cps:.2f} |")
    print(f"| eval, Python API | {api['chars'] / api_s:,.0f} | {api['chars'] / api_s / train_cps:.2f} |")
    print(f"| eval, CLI end to end | {cli['chars'] / cli_s:,.0f} | "
          f"{cli['chars'] / cli_s / train_cps:.2f} |")
    print(f"| eval, Python API, --precision bf16 | {api16['chars'] / api16_s:,.0f} | "
          f"{api16['chars'] / api16_s / train_cps:.2f} |")
    print(f"\neval / fp32 training: {api['chars'] / api_s / rates['fp32']:.2f} (fp32 eval); "
          f"loss fp32 {api['loss_nats']:.6f}, "
          f"bf16 {api16['loss_nats']:.6f}")


if __name__ == "__main__":
    main()
