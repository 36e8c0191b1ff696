"""The GPU path, measured on one CUDA device: every figure issue 12 asks of a GPU, in one run.

  1. training chars/s of charlm's step against a bare cuDNN nn.LSTM loop of the same shapes,
     interleaved (bench/throughput.py --device cuda), fp32 and bf16;
  2. bf16 against fp32 step by step: the same run (seed, batches) trained in each precision,
     the loss per step compared, for choosing what --precision auto does on GPUs;
  3. sampling chars/s at batch 1 and 64 against a bare per-step loop (bench/sample_speed.py);
  4. evaluation chars/s against training (bench/eval_speed.py);
  5. the Tiny Shakespeare validation loss reached in 180 s of `charlm train --max-time 180`
     on the GPU (bench/quality.py), beside nanoGPT's 1.4697 after ~3 minutes on an A100.

    python bench/gpu.py            # all of it: about 8 minutes
    python bench/gpu.py --quick    # smaller: about 3 minutes (quality at 60 s)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent


def script(name: str, *args) -> None:
    """Run a benchmark of this folder and pass its output through."""
    cmd = [sys.executable, str(BENCH / name), *[str(a) for a in args]]
    print(f"\n$ {' '.join(cmd[1:])}", flush=True)
    subprocess.run(cmd, check=False)


def precision_curves(steps: int) -> None:
    """The loss of each of ``steps`` steps of one run in fp32 and in bf16 (autocast), same
    seed and batches; the mean absolute difference over the last quarter and each one's
    speed."""
    import tempfile

    from charlm.api import build_trainer, bundled_corpus

    curves, rates = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "bf16"):
            trainer = build_trainer(bundled_corpus(), out=Path(tmp) / precision,
                                    preset="default", max_steps=steps, device="cuda",
                                    precision=precision, seed=0)
            losses, t = [], time.perf_counter()
            for _ in range(steps):
                losses.append(trainer.train_step()["loss"])
            torch.cuda.synchronize()
            rates[precision] = steps / (time.perf_counter() - t)
            curves[precision] = losses
    tail = steps // 4
    diff = [abs(a - b) for a, b in zip(curves["fp32"][-tail:], curves["bf16"][-tail:])]
    print(f"\nbf16 against fp32, {steps} steps of the default preset on the GPU:")
    print("| precision | steps/s | mean loss, last quarter |")
    print("| --- | --- | --- |")
    for p in ("fp32", "bf16"):
        print(f"| {p} | {rates[p]:.2f} | {statistics.mean(curves[p][-tail:]):.4f} |")
    print(f"mean |bf16 - fp32| per step over the last quarter: {statistics.mean(diff):.4f} "
          f"nats", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs a CUDA device")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, cuDNN "
          f"{torch.backends.cudnn.version()}", flush=True)
    hidden = [512] if args.quick else [512, 1024]
    for precision in ("fp32", "bf16"):
        script("throughput.py", "--device", "cuda", "--precision", precision, "--hidden",
               *hidden, "--rounds", 2 if args.quick else 4)
    precision_curves(100 if args.quick else 400)
    script("sample_speed.py", "--device", "cuda", "--rounds", 2 if args.quick else 3)
    script("eval_speed.py", "--device", "cuda", "--mb", 2 if args.quick else 10)
    script("quality.py", "--budget", 60 if args.quick else 180, "--set", "device=cuda")


if __name__ == "__main__":
    main()
