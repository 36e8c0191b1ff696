"""Checkpoints: one self-contained safetensors file each, written atomically, loaded without code.

A checkpoint file holds the model weights and, in its metadata, the model's kind and config, the
vocab, the run's config and SHA-256 digests of the tensor data and of the metadata (so
truncation or bit flips are caught). A config is checked against the tensors in the file before
any memory is given to the model, so absurd sizes are refused, not allocated. ``last``
checkpoints also carry the trainer state needed to resume exactly (optimizer moments, step, RNG
states, data position, carried states); nested Python structures are stored as JSON with
tensors referenced by name. Nothing in a checkpoint is ever unpickled or executed.

Format versions (every older one is read; a newer one is refused by name):

    1  charlm 0.1.0: a recurrent language model; weights named embed.*, rnn.*, init_state.*,
       head.*; a flat trainer state.
    2  the model's kind is recorded ("rnn-lm"); the language model's backbone weights are named
       backbone.embed.*, backbone.rnn.*, backbone.init_state.*; the trainer state holds the
       loop's position and the task's state apart. Version-1 files are read as version 2.

Writes go to a temporary file in the same directory, are fsync'ed, then renamed over the old
file: a crash leaves either the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import CharLMError, TooLargeToCount
from .files import atomic_write
from .models import model_class
from .text.vocab import Vocab

FORMAT = "charlm-checkpoint"
FORMAT_VERSION = 2
READS = (1, 2)
# Version 1 named the backbone's weights without their module.
_V1_NAMES = {"embed.": "backbone.embed.", "rnn.": "backbone.rnn.",
             "init_state.": "backbone.init_state."}


def _flatten(obj, tensors: dict, prefix: str):
    """JSON-able skeleton of ``obj`` with its tensors moved into ``tensors``."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().contiguous().cpu()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _flatten(v, tensors, f"{prefix}/{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_flatten(v, tensors, f"{prefix}/{i}") for i, v in enumerate(obj)],
                "tuple": isinstance(obj, tuple)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint")


def _unflatten(skel, tensors: dict):
    if isinstance(skel, dict):
        if "__tensor__" in skel:
            return tensors[skel["__tensor__"]]
        if "__dict__" in skel:
            return {k: _unflatten(v, tensors) for k, v in skel["__dict__"]}
        if "__list__" in skel:
            items = [_unflatten(v, tensors) for v in skel["__list__"]]
            return tuple(items) if skel.get("tuple") else items
    return skel


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key]
        h.update(key.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _meta_digest(meta: dict[str, str]) -> str:
    """SHA-256 of the metadata (config, vocab, trainer state...), so a flipped bit there is
    caught too; files written before it existed have no such entry and are read as before."""
    h = hashlib.sha256()
    for key in sorted(k for k in meta if k != "meta_sha256"):
        h.update(json.dumps([key, meta[key]]).encode())
    return h.hexdigest()


def _aliases(model: nn.Module) -> dict[str, str]:
    """Parameter names that are another name of an earlier parameter (tied weights), each
    with that earlier name; a file stores the tensor once."""
    first: dict[int, str] = {}
    aliases = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            aliases[name] = first[id(p)]
        else:
            first[id(p)] = name
    return aliases


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    aliases = _aliases(model)
    return {f"model/{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()
            if k not in aliases}


def save_checkpoint(path: Path, model: nn.Module, vocab: Vocab, run_config: dict, info: dict,
                    trainer_state: dict | None = None) -> None:
    """Write ``model`` (a class of ``charlm.models``, with its ``config``) and what belongs with
    it to ``path``, atomically."""
    from safetensors.torch import save

    tensors = model_tensors(model)
    trainer_skel = _flatten(trainer_state, tensors, "trainer") if trainer_state else None
    metadata = {
        "format": FORMAT,
        "version": str(FORMAT_VERSION),
        "kind": model.kind,
        "model_config": json.dumps(model.config.to_dict()),
        "vocab_kind": vocab.kind,
        "vocab": vocab.to_json(),
        "run_config": json.dumps(run_config),
        "info": json.dumps(info),
        "trainer": json.dumps(trainer_skel),
        "sha256": _digest(tensors),
    }
    metadata["meta_sha256"] = _meta_digest(metadata)
    atomic_write(path, save(tensors, metadata=metadata))


def check_shapes(path: Path, model_cls: type, config, weights: dict[str, torch.Tensor]) -> None:
    """The config's model must have exactly the tensors in the file. Checked on a model built
    on the "meta" device (shapes only, no memory), so a config claiming absurd sizes is refused
    before anything is allocated for it."""
    stored = sum(t.numel() for t in weights.values())
    try:
        expected_count = model_cls.count_parameters(config)  # on the meta device
        described = f"{expected_count:,}"
    except TooLargeToCount as exc:
        expected_count, described = None, f"more than {exc.at_least:,}"
    if stored != expected_count:  # no model of the claimed depth is built for this
        raise CharLMError(f"{path}: weights do not match the model config (the file holds "
                          f"{stored:,} parameters, the config describes {described})")
    with torch.device("meta"):
        model = model_cls(config)
        aliases = _aliases(model)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in aliases}
    for name, shape in expected.items():
        got = weights.get(name)
        if got is None:
            raise CharLMError(f"{path}: weights do not match the model config (no {name})")
        if tuple(got.shape) != shape:
            raise CharLMError(f"{path}: weights do not match the model config ({name} is "
                              f"{list(got.shape)}, the config needs {list(shape)})")
    extra = sorted(set(weights) - set(expected))
    if extra:
        raise CharLMError(f"{path}: weights do not match the model config (unexpected "
                          f"{', '.join(extra[:3])})")


@dataclass
class Checkpoint:
    """A loaded checkpoint: a ready model, its vocab, and what was saved beside them."""

    path: Path
    model: nn.Module
    vocab: Vocab
    run_config: dict
    info: dict
    trainer_state: dict | None
    version: int = FORMAT_VERSION  # the format the file was written in

    @property
    def kind(self) -> str:
        return self.model.kind


def _read(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    if not path.is_file():
        raise CharLMError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CharLMError(f"{path}: not a valid charlm checkpoint ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'})") from None
    if meta.get("format") != FORMAT:
        raise CharLMError(f"{path}: not a charlm checkpoint")
    if meta.get("version") not in {str(v) for v in READS}:
        raise CharLMError(f"{path}: checkpoint format version {meta.get('version')} is not "
                          f"supported (this charlm reads versions {READS[0]} to {READS[-1]})")
    if meta.get("sha256") != _digest(tensors):
        raise CharLMError(f"{path}: checkpoint is damaged (tensor checksum mismatch)")
    if "meta_sha256" in meta and meta["meta_sha256"] != _meta_digest(meta):
        raise CharLMError(f"{path}: checkpoint is damaged (metadata checksum mismatch)")
    return meta, tensors


def _v1_weight_name(name: str) -> str:
    for old, new in _V1_NAMES.items():
        if name.startswith(old):
            return new + name[len(old):]
    return name


def _v1_trainer_state(state: dict) -> dict:
    """A version-1 (flat) trainer state in the version-2 layout."""
    best = None
    if state["best_val"] is not None:
        best = {"val_loss": state["best_val"], "val_bpc": state.get("best_bpc")}
    upgraded = {
        "loop": {"step": state["step"], "epoch": state["epoch"], "batch": state["chunk"],
                 "elapsed": state["elapsed"], "targets": state["symbols"], "best": best,
                 "bad_steps": state["bad_steps"], "skipped": state["skipped"]},
        "task": {k: state[k] for k in ("lanes", "bptt_len", "lane_state")},
        "optimizer": state["optimizer"],
        "rng": state["rng"],
    }
    if "cuda_rng" in state:
        upgraded["cuda_rng"] = state["cuda_rng"]
    return upgraded


def load_checkpoint(path: Path, device: str | torch.device = "cpu",
                    with_trainer: bool = False) -> Checkpoint:
    path = Path(path)
    meta, tensors = _read(path)
    version = int(meta["version"])
    try:
        kind = meta.get("kind", "rnn-lm") if version == 1 else meta["kind"]
        model_cls = model_class(kind)
        config_dict = json.loads(meta["model_config"])
        run_config = json.loads(meta.get("run_config", "{}"))
        info = json.loads(meta.get("info", "{}"))
        trainer_skel = json.loads(meta.get("trainer", "null"))
        for name, value in (("model config", config_dict), ("run config", run_config),
                            ("info", info)):
            if not isinstance(value, dict):
                raise TypeError(f"the {name} is not a JSON object")
        for key in ("model", "train", "corpus"):
            if not isinstance(run_config.get(key, {}), dict):
                raise TypeError(f"the run config's {key!r} is not a JSON object")
        if trainer_skel is not None and not isinstance(trainer_skel, dict):
            raise TypeError("the trainer state is not a JSON object")
        config = model_cls.config_class.from_dict(config_dict, strict=True)
        vocab = Vocab.from_json(meta["vocab_kind"], meta["vocab"])
    except (KeyError, ValueError, TypeError, RecursionError, CharLMError) as exc:
        raise CharLMError(f"{path}: checkpoint metadata is damaged ({exc})") from None
    if vocab.size != config.vocab_size:
        raise CharLMError(f"{path}: vocab has {vocab.size} symbols but the model expects "
                          f"{config.vocab_size}")
    weights = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    if version == 1:
        weights = {_v1_weight_name(k): v for k, v in weights.items()}
    check_shapes(path, model_cls, config, weights)  # before any memory is given to the model
    model = model_cls(config)
    for alias, name in _aliases(model).items():
        weights[alias] = weights[name]
    try:
        model.load_state_dict(weights, strict=True)
    except (RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()
        raise CharLMError(f"{path}: weights do not match the model config "
                          f"({' '.join(first[:2]) if first else exc})") from None
    model.to(device)
    trainer_state = None
    if with_trainer and trainer_skel:
        try:
            trainer_state = _unflatten(trainer_skel, tensors)
            if version == 1:
                trainer_state = _v1_trainer_state(trainer_state)
        except (KeyError, ValueError, TypeError, RecursionError) as exc:
            raise CharLMError(f"{path}: the trainer state is damaged ({exc})") from None
    return Checkpoint(path, model, vocab, run_config, info, trainer_state, version)
