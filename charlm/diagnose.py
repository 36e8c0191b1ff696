"""Vanishing and exploding gradients, measured on real text.

``gradient_profile`` answers: how much does the loss at step t still depend on the recurrent
state k steps earlier? For many windows of the text it runs the model one step at a time over
``max_k`` symbols (after a warm-up that gives the state realistic values), takes the loss of
the last step alone, L_t, and differentiates it with respect to every state carried between
steps: s_{t-k} is the state step t-k hands to step t-k+1, so k = 1 is the state the last step
starts from. ``norm(dL_t / ds_{t-k})`` for k = 1..max_k, averaged over the windows, is the curve:
it falls off fast where the cell forgets (the Elman RNN) and slowly where it can carry
information far (the LSTM). The state s is everything the cell carries from one step to the
next: h of every layer, and c too for the LSTM.

The exploding side: the gradient of each window's whole loss (the mean over its ``max_k``
steps, one window at a time, no dropout) with respect to the weights, before any clipping; the
largest norms show what clipping has to tame.

Windows whose last target is a symbol the model never predicts (UNK) are skipped, and so are
such targets in the exploding part, as in ``evaluate``. The text is read as one stream (the
CLI joins files): the curve measures the network, not a document layout. For the Jordan cell
the state is the fed-back output distribution (vocab-sized), so its curve is a gradient with
respect to a distribution, not to a hidden layer: compare its shape, not its level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import load_checkpoint
from .errors import CharLMError
from .files import output_path
from .models import LMConfig, RecurrentLM
from .models.backbone import CELLS, RecurrentConfig
from .options import Options, non_negative_int, option, positive_int, seed as seed_check
from .text.sources import read_text
from .text.vocab import PAD_ID, CharVocab
from .training.run_dir import find_checkpoint

WARM_UP = 64  # symbols read (no gradient) before each window
DEFAULT_PLOT = Path("gradients.png")


def _cells(flag: str, value: str) -> None:
    for c in value.split(","):
        if c.strip() and c.strip() not in CELLS:
            raise CharLMError(f"{flag} must be among {', '.join(CELLS)}, not {c.strip()!r}")


@dataclass(frozen=True)
class DiagnoseConfig(Options):
    """What ``charlm diagnose gradients`` measures, and on which models."""

    cell: str | None = option(
        None, "Freshly initialised models of these cells, comma-separated (e.g. rnn,lstm).",
        check=_cells, default_help="rnn,lstm when no --checkpoint is given")
    num_layers: int = option(1, "Layers of the fresh models.",
                             flag=RecurrentConfig.flag("num_layers"), check=positive_int)
    hidden_dim: int = option(128, "Hidden units of the fresh models.",
                             flag=RecurrentConfig.flag("hidden_dim"), check=positive_int)
    embed_dim: int = option(64, "Embedding size of the fresh models.",
                            flag=RecurrentConfig.flag("embed_dim"), check=positive_int)
    max_k: int = option(100, "Longest distance k (steps) between the state and the loss.",
                        check=positive_int)
    windows: int = option(128, "Positions in the text the curve is averaged over.",
                          check=positive_int)
    exploding_windows: int = option(32, "Windows whose weight-gradient norm is measured.",
                                    check=non_negative_int, command_line=False)
    batch: int = option(32, "Windows measured together.", check=positive_int,
                        command_line=False)
    plot: Path | None = option(
        None, "PNG file for the plot; an explicit path that exists is refused.",
        default_help=f"{DEFAULT_PLOT} (numbered if taken)")
    seed: int = option(0, "Seed for the fresh models and the positions.", check=seed_check)

    def fresh_cells(self, with_checkpoints: bool) -> list[str]:
        cells = [c.strip() for c in self.cell.split(",") if c.strip()] if self.cell else []
        return cells or ([] if with_checkpoints else ["rnn", "lstm"])

    def plot_path(self) -> Path:
        """Where the plot goes; an existing file is never overwritten."""
        return output_path(self.plot, DEFAULT_PLOT, "--plot")


def measure(texts: list[Path], checkpoints: list[Path], config: DiagnoseConfig,
            encoding: str = "utf-8") -> dict[str, dict]:
    """The profile of each checkpoint (named by its path) and of a fresh model of each of the
    config's cells, on the text of ``texts`` (in ``encoding``) read as one stream."""
    raw = "".join(read_text(p, encoding) for p in texts)
    models = {}
    for path in checkpoints:
        ckpt = load_checkpoint(find_checkpoint(path))
        if ckpt.kind != RecurrentLM.kind:
            raise CharLMError(f"{ckpt.path}: a {ckpt.kind} checkpoint; the diagnostic measures "
                              f"language models")
        models[str(path)] = (ckpt.model, ckpt.vocab)
    cells = config.fresh_cells(with_checkpoints=bool(checkpoints))
    if cells:
        vocab = CharVocab(raw)
        for c in cells:
            torch.manual_seed(config.seed)
            model_config = LMConfig.for_vocab(vocab, cell=c, num_layers=config.num_layers,
                                              hidden_dim=config.hidden_dim,
                                              embed_dim=config.embed_dim)
            name = f"{c} {config.num_layers}x{config.hidden_dim} (fresh)"
            models[name] = (RecurrentLM(model_config), vocab)
    return {name: gradient_profile(model, vocab.encode(raw), config)
            for name, (model, vocab) in models.items()}


def _windows(tokens: np.ndarray, count: int, length: int, seed: int,
             never: tuple[int, ...] = ()) -> np.ndarray:
    """``count`` start positions of windows of ``length`` symbols (plus the warm-up before)
    whose last target (at start + length - 1) is a symbol the model can predict."""
    room = len(tokens) - length - WARM_UP - 1
    if room < 1:
        raise CharLMError(f"the text is too short for the diagnostic: {len(tokens)} symbols, "
                          f"--max-k {length - 1} needs more than {length + WARM_UP + 1}")
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, room, size=8 * count + 64) + WARM_UP
    ok = starts[~np.isin(np.asarray(tokens)[starts + length - 1], list(never))]
    if len(ok) < count:
        raise CharLMError("the text has too few positions with a known next symbol")
    return ok[:count]


def gradient_profile(model: RecurrentLM, tokens: np.ndarray,
                     config: DiagnoseConfig | None = None) -> dict:
    """Mean and largest ``norm(dL_t/ds_{t-k})`` over ``config.windows`` windows, for
    k = 1..max_k, and the weight-gradient norms of ``config.exploding_windows`` single
    windows."""
    c = config or DiagnoseConfig()
    max_k, windows, batch, exploding_windows, seed = (c.max_k, c.windows, c.batch,
                                                      c.exploding_windows, c.seed)
    device = model.device
    was_training = model.training
    model.eval()  # no dropout: the curve belongs to the network, not to a dropout mask
    # Targets no model can predict (UNK; PAD never occurs) are not scored, as in evaluate.
    never = torch.tensor(list(model.config.never_predict), dtype=torch.long)
    with torch.backends.cudnn.flags(enabled=False):  # cuDNN's RNN backward needs train mode
        return _profile(model, tokens, max_k, windows, batch, exploding_windows, seed, device,
                        never, was_training)


def _profile(model, tokens, max_k, windows, batch, exploding_windows, seed, device, never,
             was_training) -> dict:
    length = max_k + 1  # the warm-up's last state, then max_k steps
    starts = _windows(tokens, windows, length, seed, tuple(never.tolist()))
    data = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    sums = torch.zeros(length, dtype=torch.float64)
    peaks = torch.zeros(length, dtype=torch.float64)
    try:
        for first in range(0, len(starts), batch):
            group = starts[first:first + batch]
            idx = torch.as_tensor(group)[:, None] + torch.arange(-WARM_UP, max_k + 1)[None, :]
            seq = data[idx].to(device)  # (B, warm-up + max_k inputs + the last target)
            with torch.no_grad():
                _, state = model(seq[:, :WARM_UP])
            inputs, target = seq[:, WARM_UP:WARM_UP + max_k], seq[:, WARM_UP + max_k]
            # Each state carried into a step, in order: s_(t-max_k) ... s_(t-1). They are
            # leaves of the graph (an exact copy of the carried values) so the gradient with
            # respect to each is the gradient through that link of the chain.
            states = []
            for t in range(max_k):
                state = tuple(s.detach().requires_grad_() for s in state) if t == 0 else state
                states.append(state)
                logits, state = model(inputs[:, t:t + 1], state)
            # The last step's loss, summed over windows: each window's loss depends on its own
            # states only, so one backward pass gives every window's gradients.
            loss = nn.functional.cross_entropy(logits[:, -1].float(), target,
                                               ignore_index=PAD_ID, reduction="sum")
            flat = [s for st in states for s in st]
            grads = torch.autograd.grad(loss, flat, allow_unused=True)
            per_state = len(states[0])
            for t in range(max_k):
                parts = [g if g is not None else torch.zeros_like(flat[t * per_state + j])
                         for j, g in enumerate(grads[t * per_state:(t + 1) * per_state])]
                # (layers, B, H) pieces -> one norm per window
                sq = sum(p.double().pow(2).sum(dim=(0, 2)) for p in parts)
                norms = sq.sqrt().cpu()
                k = max_k - t
                sums[k] += norms.sum()
                peaks[k] = max(peaks[k], norms.max())
        exploding = []
        params = [p for p in model.parameters() if p.requires_grad]
        for start in _windows(tokens, exploding_windows, length, seed + 1,
                              tuple(never.tolist())) if exploding_windows else []:
            seq = data[start - WARM_UP:start + length + 1].to(device)[None]
            with torch.no_grad():
                _, state = model(seq[:, :WARM_UP])
            logits, _ = model(seq[:, WARM_UP:WARM_UP + max_k], state)
            targets = seq[0, WARM_UP + 1:WARM_UP + max_k + 1]
            targets = targets.masked_fill(torch.isin(targets, never.to(device)), PAD_ID)
            loss = nn.functional.cross_entropy(logits[0].float(), targets, ignore_index=PAD_ID)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            exploding.append(math.sqrt(sum(float(g.double().pow(2).sum())
                                           for g in grads if g is not None)))
    finally:
        model.train(was_training)
    mean = (sums / len(starts))[1:].tolist()
    return {"k": list(range(1, length)), "mean": mean, "max": peaks[1:].tolist(),
            "windows": int(len(starts)),
            "weight_grad_norms": sorted(exploding),
            "weight_grad_max": max(exploding) if exploding else None,
            "weight_grad_median": float(np.median(exploding)) if exploding else None}


def table_ks(max_k: int) -> list[int]:
    """The k shown in the table: 1, 2, 5, 10, 20, 50, ... up to max_k."""
    ks, base = [], 1
    while base <= max_k:
        for m in (1, 2, 5):
            if m * base <= max_k:
                ks.append(m * base)
        base *= 10
    if ks[-1] != max_k:
        ks.append(max_k)
    return ks


def plot(profiles: dict[str, dict], path, title: str) -> None:
    """One curve per model: mean norm(dL_t/ds_{t-k}) against k, log scale."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CharLMError("writing the plot needs matplotlib: pip install matplotlib") from None
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for name, prof in profiles.items():
        ys = np.asarray(prof["mean"], dtype=float)
        ys = np.where(ys > 0, ys, np.nan)  # log scale: an exact zero is off the chart
        ax.plot(prof["k"], ys, label=name, linewidth=1.8)
    ax.set_yscale("log")
    ax.set_xlabel("k: steps between the state and the loss")
    ax.set_ylabel("mean ||dL_t / ds_(t-k)||")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
