"""Checkpoints: one self-contained safetensors file each, written atomically, loaded without code.

A checkpoint file holds the model weights and, in its metadata, the model config, the vocab, the
run's config and SHA-256 digests of the tensor data and of the metadata (so truncation or bit
flips are caught). A config is checked against the tensors in the file before any memory is
given to the model, so absurd sizes are refused, not allocated. ``last``
checkpoints also carry the trainer state needed to resume exactly (optimizer moments, step, RNG
states, data position, the lanes' carried hidden states); nested Python structures are stored as
JSON with tensors referenced by name. Nothing in a checkpoint is ever unpickled or executed.

Writes go to a temporary file in the same directory, are fsync'ed, then renamed over the old
file: a crash leaves either the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CharLMError
from .model import CharRNN, ModelConfig
from .vocab import Vocab

FORMAT = "charlm-checkpoint"
FORMAT_VERSION = 1


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, whole."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        try:
            os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual mode
        except OSError:
            pass  # a filesystem without modes (FAT, some network mounts)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename itself is still atomic


def _flatten(obj, tensors: dict, prefix: str):
    """JSON-able skeleton of ``obj`` with its tensors moved into ``tensors``."""
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}"
        tensors[key] = obj.detach().contiguous().cpu()
        return {"__tensor__": key}
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


def model_tensors(model: CharRNN) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    if model.config.tie_weights:
        state.pop("head.weight", None)  # the same tensor as embed.weight
    return {f"model/{k}": v.detach().contiguous().cpu() for k, v in state.items()}


def save_checkpoint(path: Path, model: CharRNN, vocab: Vocab, run_config: dict, info: dict,
                    trainer_state: dict | None = None) -> None:
    from safetensors.torch import save

    tensors = model_tensors(model)
    trainer_skel = _flatten(trainer_state, tensors, "trainer") if trainer_state else None
    metadata = {
        "format": FORMAT,
        "version": str(FORMAT_VERSION),
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


def check_shapes(path: Path, config: ModelConfig, weights: dict[str, torch.Tensor]) -> None:
    """The config's model must have exactly the tensors in the file. Checked on a model built
    on the "meta" device (shapes only, no memory), so a config claiming absurd sizes is refused
    before anything is allocated for it."""
    stored = sum(t.numel() for k, t in weights.items() if not (config.tie_weights
                                                                and k == "head.weight"))
    if stored != config.num_parameters():  # arithmetic only, whatever the sizes claimed
        raise CharLMError(f"{path}: weights do not match the model config (the file holds "
                          f"{stored:,} parameters, the config describes "
                          f"{config.num_parameters():,})")
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in CharRNN(config).state_dict().items()}
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
    model: CharRNN
    vocab: Vocab
    run_config: dict
    info: dict
    trainer_state: dict | None


def load_checkpoint(path: Path, device: str | torch.device = "cpu",
                    with_trainer: bool = False) -> Checkpoint:
    from safetensors import safe_open

    path = Path(path)
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
    if meta.get("version") != str(FORMAT_VERSION):
        raise CharLMError(f"{path}: checkpoint format version {meta.get('version')} is not "
                          f"supported (this charlm reads version {FORMAT_VERSION})")
    if meta.get("sha256") != _digest(tensors):
        raise CharLMError(f"{path}: checkpoint is damaged (tensor checksum mismatch)")
    if "meta_sha256" in meta and meta["meta_sha256"] != _meta_digest(meta):
        raise CharLMError(f"{path}: checkpoint is damaged (metadata checksum mismatch)")
    try:
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
        config = ModelConfig.from_dict(config_dict)
        vocab = Vocab.from_json(meta["vocab_kind"], meta["vocab"])
    except (KeyError, ValueError, TypeError, RecursionError, CharLMError) as exc:
        raise CharLMError(f"{path}: checkpoint metadata is damaged ({exc})") from None
    if vocab.size != config.vocab_size:
        raise CharLMError(f"{path}: vocab has {vocab.size} symbols but the model expects "
                          f"{config.vocab_size}")
    weights = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    if config.tie_weights:
        weights["head.weight"] = weights.get("embed.weight")
    check_shapes(path, config, weights)  # before any memory is given to the model
    model = CharRNN(config)
    try:
        model.load_state_dict(weights, strict=True)
    except (RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()
        raise CharLMError(f"{path}: weights do not match the model config "
                          f"({' '.join(first[:2]) if first else exc})") from None
    model.to(device)
    try:
        trainer_state = (_unflatten(trainer_skel, tensors) if with_trainer and trainer_skel
                         else None)
    except (KeyError, ValueError, TypeError, RecursionError) as exc:
        raise CharLMError(f"{path}: the trainer state is damaged ({exc})") from None
    return Checkpoint(path, model, vocab, run_config, info, trainer_state)
