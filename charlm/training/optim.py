"""The optimizer, its layer groups, and the learning-rate schedule."""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from .config import TrainConfig

SLANTED_RISE = 0.1   # ULMFiT's slanted triangle: the share of the run the rate rises over...
SLANTED_RATIO = 32.0  # ...and how much lower than the peak it starts and ends
UNFREEZE_SPAN = 0.5  # gradual unfreezing is done by this share of the run


def decays(name: str, p: torch.Tensor) -> bool:
    """Weight decay applies to weight matrices only; biases, gains and a learned initial state
    are left alone."""
    return p.dim() >= 2 and "init_state" not in name.split(".")


def layer_group(name: str, num_layers: int) -> int:
    """The layer group of a parameter, from the bottom: 0 the embedding (and a learned initial
    state; a tied output matrix is the embedding's), 1..L the recurrent layers (a Jordan
    network's feedback readout with its top layer), L + 1 everything on top (the output
    layer, a head)."""
    if name.startswith("readout."):
        return num_layers
    if name.startswith("backbone."):
        layer = re.search(r"_l(\d+)$", name)
        return int(layer.group(1)) + 1 if layer else 0
    return num_layers + 1


def _num_layers(model: nn.Module) -> int:
    return getattr(model.config, "num_layers", 0)


def uses_layer_groups(cfg: TrainConfig) -> bool:
    return cfg.layer_lr_factor != 1.0 or cfg.gradual_unfreeze


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    named = list(model.named_parameters())
    if not uses_layer_groups(cfg):
        groups = [{"params": [p for n, p in named if decays(n, p)],
                   "weight_decay": cfg.weight_decay},
                  {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0}]
    else:  # one group per layer group and decay, each with its share of the rate
        layers = _num_layers(model)
        top = layers + 1
        groups = []
        for g in range(top + 1):
            for decayed in (True, False):
                params = [p for n, p in named if layer_group(n, layers) == g
                          and decays(n, p) == decayed]
                if params:
                    groups.append({"params": params, "layer": g,
                                   "lr_scale": cfg.layer_lr_factor ** -(top - g),
                                   "weight_decay": cfg.weight_decay if decayed else 0.0})
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99))
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=(0.9, 0.99))
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=0.99, momentum=cfg.momentum)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def unfrozen_from(cfg: TrainConfig, model: nn.Module, progress: float, epoch: int = 0) -> int:
    """The lowest layer group that trains at ``progress`` in ``epoch`` (0: all of them). With
    gradual unfreezing, the top group alone first, then one more per epoch (as ULMFiT), or
    sooner where the run is short in epochs: the stages end by UNFREEZE_SPAN of the run."""
    if not cfg.gradual_unfreeze:
        return 0
    top = _num_layers(model) + 1
    by_progress = int(min(max(progress, 0.0), 1.0) / UNFREEZE_SPAN * top)
    return max(top - max(epoch, by_progress), 0)


def lr_factor(cfg: TrainConfig, step: int, progress: float, warmup: int | None = None) -> float:
    """Linear warmup over ``warmup`` steps (default ``cfg.warmup_steps``), then decay over the
    run's progress (0..1); the slanted triangle has its own rise instead of the warmup."""
    p = min(max(progress, 0.0), 1.0)
    if cfg.schedule == "slanted":
        shape = p / SLANTED_RISE if p < SLANTED_RISE else \
            1 - (p - SLANTED_RISE) / (1 - SLANTED_RISE)
        return (1 + shape * (SLANTED_RATIO - 1)) / SLANTED_RATIO
    warmup = cfg.warmup_steps if warmup is None else warmup
    warm = min(1.0, (step + 1) / warmup) if warmup else 1.0
    floor = cfg.min_lr_ratio
    if cfg.schedule == "cosine":
        decay = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))
    elif cfg.schedule == "linear":
        decay = 1 - (1 - floor) * p
    else:
        decay = 1.0
    return warm * decay
