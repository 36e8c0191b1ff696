"""`charlm inspect` at the size the issue names: 20,000 characters through a 2x512 LSTM.

Times the command end to end (process start to the file written), the file's size, and in a
real headless chromium: the page's load until it is ready, recolouring the text for another
unit, a hover's top-5 box, and a pattern search over a selection. With and without --gates.
The weights are random (speed does not depend on them); the text is Tiny Shakespeare's start.

    python bench/report_speed.py [--length 20000] [--hidden 512] [--layers 2]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from charlm.api import bundled_corpus
from charlm.checkpoint import save_checkpoint
from charlm.models import LMConfig, RecurrentLM
from charlm.text.corpus import prepare_cached


def browser_figures(path: Path) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = b.new_page(viewport={"width": 1300, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        t = time.perf_counter()
        page.goto(path.as_uri())
        page.wait_for_selector("body[data-ready=yes]", state="attached", timeout=300_000)
        ready = time.perf_counter() - t
        page.click("#tab-units")
        recolour = []
        for unit in (1, 2, 3, 4, 5):
            recolour.append(page.evaluate(f"""() => {{ const t = performance.now();
                const u = document.getElementById('unit'); u.value = '{unit}';
                u.dispatchEvent(new Event('input')); return performance.now() - t; }}"""))
        t = time.perf_counter()
        page.hover("#text span[data-i='500']")
        page.wait_for_selector("#tip", state="visible")
        hover = time.perf_counter() - t
        search = page.evaluate("""() => { const s = document.querySelectorAll('#text span');
            const r = document.createRange(); r.setStart(s[1000].firstChild, 0);
            r.setEnd(s[1012].firstChild, 1); const sel = getSelection(); sel.removeAllRanges();
            sel.addRange(r); const t = performance.now();
            document.getElementById('text').dispatchEvent(new MouseEvent('mouseup', {bubbles: true}));
            return performance.now() - t; }""")
        b.close()
    if errors:
        sys.exit(f"page errors: {errors}")
    return {"ready": ready, "recolour_ms": sorted(recolour)[len(recolour) // 2],
            "hover": hover, "search_ms": search}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=20_000)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    args = ap.parse_args()
    vocab = prepare_cached([bundled_corpus()]).vocab
    torch.manual_seed(0)
    model = RecurrentLM(LMConfig.for_vocab(vocab, num_layers=args.layers,
                                           hidden_dim=args.hidden, embed_dim=64))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; LSTM "
          f"{args.layers}x{args.hidden}; {args.length:,} characters")
    print("| report | `charlm inspect` s | file MB | page ready s | recolour ms | hover s | "
          "pattern search ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = tmp / "best.safetensors"
        save_checkpoint(run, model, vocab, {"kind": model.kind}, {})
        text = tmp / "text.txt"
        text.write_text(bundled_corpus().read_text()[: args.length + 100])
        for gates in (False, True):
            out = tmp / f"report{'-gates' if gates else ''}.html"
            cmd = [sys.executable, "-m", "charlm", "inspect", str(text), "--checkpoint", str(run),
                   "--length", str(args.length), "--out", str(out)] + (["--gates"] if gates else [])
            t = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True)
            seconds = time.perf_counter() - t
            if r.returncode:
                sys.exit(r.stderr)
            f = browser_figures(out)
            print(f"| {'--gates' if gates else 'default (h, tanh c)'} | {seconds:.1f} | "
                  f"{out.stat().st_size / 1e6:.1f} | {f['ready']:.2f} | {f['recolour_ms']:.0f} | "
                  f"{f['hover']:.2f} | {f['search_ms']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
