"""Setting up a classifier run: from what a user gives to a ready ``Trainer``.

    new run:  labelled data (text.labelled) -> training and validation examples (--val, or a
              share held out per label) -> the vocab (the language model's with --init-from,
              else the training texts' characters) -> a RecurrentClassifier (fresh, or on a
              language model's backbone) -> ClassificationTask -> Trainer
    resume:   run dir -> its checkpoint -> the same data read again (checked unchanged by its
              digest) -> Trainer.resume
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_checkpoint
from .classify import encode, label_ids
from .errors import CharLMError
from .devices import resolve_device
from .lm_runs import join_world, load_language_model
from .models import ClassifierConfig, RecurrentClassifier
from .models.backbone import REGULARISERS, SHAPE_OPTIONS, check_fixed
from .models.classifier import from_language_model
from .options import check_given, check_resumable, resumable, split_by_owner
from .presets import CLASSIFY_PRESETS, preset
from .text.labelled import Examples, LabelledConfig, check_trainable, label_order, read_labelled
from .text.sources import file_sha256
from .text.vocab import CharVocab, codepoints
from .training.classify_task import ClassificationTask, ClassifyTaskConfig, LabelledSet
from .training.config import TrainConfig
from .training.loop import Report, Trainer, fresh_model
from .training.run_dir import BEST, LAST, find_checkpoint, new_run_dir
from .training.world import launched_ranks

CLASSIFY_OPTIONS = (ClassifierConfig, ClassifyTaskConfig, TrainConfig)
DEFAULT_PRESET = "default"
VAL_SEED = 1234      # the same data always gives the same held-out examples
IMBALANCE = 3.0      # a largest class this many times the smallest is reported

Warn = Callable[[str], None]


def read_examples(paths: list[Path], reading: LabelledConfig, warn: Warn | None,
                  what: str = "data") -> Examples:
    examples = read_labelled(paths, reading)
    if examples.empty and warn:
        warn(f"{examples.empty:,} empty text(s) in the {what} skipped")
    for d in examples.skipped if warn else ():
        warn(f"skipping {d}: unlabelled examples")
    return examples


def data_digest(examples: Examples) -> str:
    """A digest of the files read, so a resumed run can tell that its data is unchanged."""
    h = hashlib.sha256()
    for f in examples.sources:
        h.update(str(Path(f).resolve()).encode() + b"\0" + file_sha256(f).encode())
    return h.hexdigest()


def hold_out(examples: Examples, fraction: float) -> tuple[Examples, Examples | None]:
    """Training and validation examples: ``fraction`` of each label's examples (at least one
    of a label with two or more) drawn with a fixed seed, the rest to train on."""
    if fraction <= 0:
        return examples, None
    rng = np.random.default_rng(VAL_SEED)
    labels = np.asarray(examples.labels, dtype=object)
    held = np.zeros(len(labels), dtype=bool)
    for name in label_order(examples.labels):
        rows = np.flatnonzero(labels == name)
        take = min(max(int(round(fraction * len(rows))), 1 if len(rows) >= 2 else 0),
                   len(rows) - 1)
        held[rng.permutation(rows)[:take]] = True
    if not held.any():
        return examples, None

    def pick(mask):
        rows = np.flatnonzero(mask)
        return Examples([examples.texts[i] for i in rows], [examples.labels[i] for i in rows],
                        examples.sources, 0, examples.format)
    return pick(~held), pick(held)


def _char_vocab(texts: list[str]) -> CharVocab:
    counts = np.zeros(0x110000, dtype=np.int64)
    for text in texts:
        cps = codepoints(text)
        if len(cps):
            counts[: int(cps.max()) + 1] += np.bincount(cps)
    return CharVocab.from_counts(counts)


def _labelled_set(vocab, examples: Examples, labels: tuple[str, ...]) -> tuple[LabelledSet, dict]:
    encoded = encode(vocab, examples.texts)
    ids, unseen = label_ids(examples.labels, labels)
    return LabelledSet(encoded, ids), unseen


def imbalance_note(counts: dict[str, int], balance: bool) -> str | None:
    """A line about imbalanced classes, or None."""
    most, least = max(counts.values()), min(counts.values())
    if most < IMBALANCE * least:
        return None
    total = sum(counts.values())
    shares = ", ".join(f"{k} {v / total:.0%}" for k, v in sorted(counts.items(),
                                                                  key=lambda kv: -kv[1]))
    advice = "the loss is weighted (--balance)" if balance else \
        "--balance weights the loss by inverse frequency"
    return f"classes are imbalanced ({shares}); {advice}"


def load_classifier(path: Path, device: str = "cpu"):
    """A classifier's checkpoint (a run directory's best, or a file)."""
    ckpt = load_checkpoint(find_checkpoint(path, kind=RecurrentClassifier.kind),
                           resolve_device(device))
    if ckpt.kind != RecurrentClassifier.kind:
        raise CharLMError(f"{ckpt.path}: a {ckpt.kind} checkpoint, not a classifier's")
    return ckpt


def _configs(values: dict) -> tuple[dict, ClassifyTaskConfig, TrainConfig]:
    groups = split_by_owner(values, CLASSIFY_OPTIONS)
    return (groups[ClassifierConfig], ClassifyTaskConfig(**groups[ClassifyTaskConfig]),
            TrainConfig(**groups[TrainConfig]))


def new_classifier_run(data: list[Path], val: list[Path] | None, out: Path | None,
                       preset_name: str | None, reading: dict, options: dict,
                       init_from: Path | None = None, report: Report | None = None,
                       warn: Warn | None = None) -> Trainer:
    """A new classifier run on the labelled ``data`` (validated on ``val``, or on a share
    held out), from scratch or on the language model ``init_from``'s backbone. Nothing is
    written until the trainer runs."""
    options = {k: v for k, v in options.items() if v is not None}
    check_given(options, CLASSIFY_OPTIONS)
    reading = LabelledConfig.from_given(**reading)
    name = preset_name or DEFAULT_PRESET
    values = dict(preset(name, CLASSIFY_PRESETS))
    lm = load_language_model(init_from) if init_from is not None else None
    if lm is not None:  # its backbone fixes the sizes and the cell, and keeps its regularisers
        check_fixed(options, lm.model.config)
        values = {k: v for k, v in values.items() if k not in SHAPE_OPTIONS + REGULARISERS}
    model_values, task_config, train_config = _configs(TrainConfig.over(values, options))
    # Every check of the model's options before any data is read (its labels and vocab come
    # later: stand-ins here).
    base = {f: getattr(lm.model.config, f) for f in SHAPE_OPTIONS} if lm is not None else {}
    ClassifierConfig(**{"vocab_size": 3, **base, **model_values, "labels": ("a", "b")})
    world = join_world(train_config.device)

    examples = read_examples(data, reading, warn)
    if val:
        train, held = examples, read_examples(val, reading, warn, "validation data")
    else:
        train, held = hold_out(examples, task_config.val_fraction)
    check_trainable(train, ", ".join(str(p) for p in data))
    labels = label_order(train.labels)
    note = imbalance_note(dict(train.counts()), task_config.balance)
    if note and warn:
        warn(note)
    vocab = lm.vocab if lm is not None else _char_vocab(train.texts)
    train_set, _ = _labelled_set(vocab, train, labels)
    val_set, unseen = _labelled_set(vocab, held, labels) if held is not None else (None, {})
    if unseen and warn:
        warn(f"validation labels the training data lacks (counted as wrong): "
             + ", ".join(f"{k} ({v:,})" for k, v in sorted(unseen.items())))
    checked = (("training", train_set), ("validation", val_set)) if lm is not None and warn else ()
    for which, part in checked:
        if part is not None and part.encoded.unknown:
            warn(f"{part.encoded.unknown:,} character(s) of the {which} texts are unknown to "
                 f"the language model's vocab (read as UNK)")

    if lm is not None:
        torch.manual_seed(train_config.seed)
        model = from_language_model(lm.model, labels, **model_values)
        model = model.to(resolve_device(train_config.device))
    else:
        config = ClassifierConfig.for_vocab(vocab, labels=labels, **model_values)
        model = fresh_model(RecurrentClassifier, config, train_config)
    record = {
        "train": {"paths": [str(Path(p).resolve()) for p in data], "files": len(train.sources),
                  "sha256": data_digest(examples), "examples": len(train),
                  "unknown_chars": train_set.encoded.unknown,
                  "counts": dict(sorted(train.counts().items()))},
        "val": ({"paths": [str(Path(p).resolve()) for p in val],
                 "sha256": data_digest(held)} if val else
                {"held_out": task_config.val_fraction}) | {"examples": len(held) if held else 0},
        "reading": reading.to_dict(),
        "init_from": str(Path(lm.path).resolve()) if lm is not None else None,
    }
    task = ClassificationTask(train_set, val_set, labels, vocab, task_config,
                              train_config.seed, record)
    first = Path(data[0])
    run_dir = world.main_decides(
        lambda: new_run_dir(first.stem if first.is_file() else first.resolve().name, out))
    return Trainer(run_dir, model, task, train_config, report, world, preset=name)


def probe_run(data: list[Path], val: list[Path] | None, out: Path | None, reading: dict,
               options: dict, init_from: Path, penalty: str = "l2",
               report: Report | None = None, warn: Warn | None = None) -> dict:
    """A linear probe (``charlm.probe``) on the frozen language model ``init_from``, saved as
    a classifier run (its best checkpoint, no trainer state: there is nothing to resume).
    Returns the summary: the probe's choice and its validation figures."""
    from .probe import check_probe, fit_probe

    check_probe(penalty, options.get("head_hidden") or 0)
    if launched_ranks() > 1:
        raise CharLMError("--probe fits in one process; run it without torchrun")
    trainer = new_classifier_run(data, val, out, None, reading, options, init_from, report,
                                 warn)
    task, model = trainer.task, trainer.model
    # Fitted before the run directory is made: a fit that fails leaves nothing behind.
    choice = fit_probe(model, task.train.encoded.ids, task.train.labels,
                       task.val.encoded.ids if task.val else None,
                       task.val.labels if task.val else None, penalty,
                       trainer.config.seed, report)
    trainer.files.acquire()
    try:
        if trainer.files.holds_run():
            raise CharLMError(f"{trainer.run_dir} already holds a run")
        trainer.recorded = {"probe": choice}
        trainer.write_run_files()
        record = task.validate(model) or {"val_accuracy": choice["val_accuracy"]}
        trainer.pos.best = dict(record)
        trainer.log({"step": 0, **record, "best": True, "probe": choice})
        trainer.save(BEST)
    finally:
        trainer.files.release()
    return {"status": "done", "run_dir": str(trainer.run_dir), "best": record, "probe": choice}


def resume_classifier_run(run_dir: Path, options: dict, report: Report | None = None,
                          warn: Warn | None = None) -> Trainer:
    """Continue the classifier run in ``run_dir`` from its last checkpoint, on the same data
    (read again from where it was, and checked unchanged)."""
    run_dir = Path(run_dir)
    options = {k: v for k, v in options.items() if v is not None}
    if not (run_dir / LAST).is_file():
        if (run_dir / BEST).is_file():
            raise CharLMError(f"--resume {run_dir}: the run has no {LAST} to resume from (a "
                              f"linear probe's run is fitted at once)")
        raise CharLMError(f"--resume {run_dir}: not a charlm run directory (no {LAST})")
    check_given(options, CLASSIFY_OPTIONS)
    ckpt = load_checkpoint(run_dir / LAST)
    if ckpt.kind != RecurrentClassifier.kind:
        raise CharLMError(f"--resume {run_dir}: a {ckpt.kind} run, not a classifier's; "
                          f"continue it with charlm train --resume")
    check_resumable(options, ckpt.run_config, CLASSIFY_OPTIONS)
    world = join_world(options.get("device"), ckpt.run_config)
    data = ckpt.run_config.get("data", {})
    try:
        reading = LabelledConfig.from_dict(data["reading"])
        train_paths = [Path(p) for p in data["train"]["paths"]]
        val_info = data["val"]
    except (KeyError, TypeError) as exc:
        raise CharLMError(f"{run_dir}/{LAST}: the run's data record is damaged ({exc})") from None

    def same(examples: Examples, digest: str, paths) -> None:
        if data_digest(examples) != digest:
            raise CharLMError(f"the data in {', '.join(str(p) for p in paths)} changed since "
                              f"the run started; a resumed run needs the same data")

    labels = ckpt.model.config.labels

    def make_task(checkpoint) -> ClassificationTask:
        train_cfg = checkpoint.run_config["train"]
        task_config = ClassifyTaskConfig.from_dict(train_cfg)
        examples = read_examples(train_paths, reading, None)
        same(examples, data["train"]["sha256"], train_paths)
        if "paths" in val_info:
            val_paths = [Path(p) for p in val_info["paths"]]
            held = read_examples(val_paths, reading, None)
            same(held, val_info["sha256"], val_paths)
            train = examples
        else:
            train, held = hold_out(examples, val_info.get("held_out", 0.0))
        train_set, _ = _labelled_set(checkpoint.vocab, train, labels)
        val_set = _labelled_set(checkpoint.vocab, held, labels)[0] if held is not None else None
        return ClassificationTask(train_set, val_set, labels, checkpoint.vocab, task_config,
                                  train_cfg.get("seed", TrainConfig.default("seed")), data)
    overrides = {k: v for k, v in options.items() if resumable(k, CLASSIFY_OPTIONS)}
    return Trainer.resume(run_dir, make_task, overrides, report, world)
