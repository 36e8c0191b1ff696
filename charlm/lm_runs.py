"""Setting up a language-model run: from what a user gives to a ready ``Trainer``.

    new run:     options (None: not given) -> preset, or for a time budget the budget's
                 model -> configs checked -> prepared corpus -> run dir -> [for a budget: a
                 few seconds of that model's steps -> settings for the passes the budget
                 allows] -> LanguageModelTask + a fresh RecurrentLM -> Trainer
    resume:      run dir -> its checkpoint -> the options given checked against the run's ->
                 the corpus (the run's, or the files given again) -> Trainer.resume
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from . import budget
from .budget import AUTO
from .checkpoint import load_checkpoint
from .devices import resolve_device
from .errors import CharLMError
from .models import LMConfig, RecurrentLM, WindowConfig, WindowLM, model_class
from .options import check_given, check_resumable, resumable, split_by_owner
from .models.backbone import check_fixed
from .presets import DEFAULT_PRESET, WINDOW_TRAINING, choose_preset, preset
from .text.corpus import PrepareConfig, PreparedCorpus, Progress, is_prepared, open_or_prepare
from .text.sources import collect_files
from .training.config import DEFAULT_BUDGET, TrainConfig
from .training.lm_task import LanguageModelTask, LMTaskConfig
from .training.loop import Report, Trainer, fresh_model
from .training.run_dir import LAST, RunDirectory, find_checkpoint, new_run_dir
from .training.world import World, launched_ranks

# A new run refuses a --max-time budget that preparing the corpus and setting up (measuring
# speeds included) took more than this share of.
SETUP_SHARE = 0.5

# The options of `charlm train`, by the config that declares them.
TRAIN_OPTIONS = (LMConfig, LMTaskConfig, TrainConfig)
# ... and of `charlm baseline window`: the same loop and task, another model.
WINDOW_OPTIONS = (WindowConfig, LMTaskConfig, TrainConfig)
# The language models trained by gradient through the loop: their options, by model kind.
LOOP_OPTIONS = {RecurrentLM.kind: TRAIN_OPTIONS, WindowLM.kind: WINDOW_OPTIONS}


def load_language_model(path: Path):
    """The checkpoint of a language model (a run directory's best, or a file), for
    --init-from."""
    ckpt = load_checkpoint(find_checkpoint(path))
    if ckpt.kind != RecurrentLM.kind:
        raise CharLMError(f"--init-from {path}: a {ckpt.kind} checkpoint, not a language "
                          f"model's")
    return ckpt


def check_within_text(flag: str, length: int, prepared: PreparedCorpus) -> None:
    """A model that reads ``length`` symbols back (a window, an n-gram's order) must have a
    training text longer than that."""
    symbols = prepared.split("train").symbols
    if length > symbols:
        raise CharLMError(f"{flag} {length} is longer than the training text ({symbols:,} "
                          f"symbols): choose at most {symbols:,}, or train on more text")


def new_run(corpus: list[Path], out: Path | None, preset_name: str | None,
            prepare_given: dict, options: dict, report: Report | None = None,
            progress: Progress | None = None, warn=None,
            init_from: Path | None = None, kind: str = RecurrentLM.kind) -> Trainer:
    """A new run on ``corpus`` (text files, or one prepared corpus directory). Its clock
    starts here: preparing the corpus and choosing settings for a budget count in
    ``--max-time``. ``init_from``: a language model to go on training on this text (its
    vocab, cell, sizes and weights; the training options from the preset and those given).
    ``kind``: the model (a recurrent LM, or the window baseline: no presets, no budget
    rule)."""
    t0 = time.perf_counter()
    options = {k: v for k, v in options.items() if v is not None}
    option_classes = LOOP_OPTIONS[kind]
    check_given(options, option_classes)
    lm = load_language_model(init_from) if init_from is not None else None
    if kind != RecurrentLM.kind:
        name, values = None, WINDOW_TRAINING
    elif lm is not None:
        check_fixed(options, lm.model.config)
        if options.get("tie_weights", lm.model.config.tie_weights) != \
                lm.model.config.tie_weights:
            raise CharLMError("the model given with --init-from fixes --tie-weights (its "
                              "weights are copied); leave it out")
        name = preset_name or DEFAULT_PRESET
        kept = ("vocab_size", "never_predict")  # the vocab's, the same as the model's
        values = {**{k: v for k, v in preset(name).items() if k not in LMConfig.declared()},
                  **{k: getattr(lm.model.config, k) for k in LMConfig.declared()
                     if k not in kept}}
    else:
        name = choose_preset(preset_name, options)
        values = ({**budget.SMALL, **budget.COMMON, "max_time": DEFAULT_BUDGET}
                  if name == AUTO else preset(name))
    checked = _configs(TrainConfig.over(values, options), option_classes)  # every check,
    world = join_world(checked[0].device)                    # before any corpus is prepared
    with world.main_first():  # the others find it in the cache
        prepared = open_or_prepare(corpus, prepare_given, progress, warn,
                                   vocab=lm.vocab if lm is not None else None)
    if kind == WindowLM.kind:
        check_within_text("--context", options.get("context") or WindowConfig.default("context"),
                          prepared)
    run_dir = world.main_decides(lambda: _new_run_dir(corpus, out, prepare_given.get("encoding")))
    choice = None
    if name == AUTO:  # measured and chosen by the main process, for all
        chosen, choice = world.main_decides(lambda: _choose_for_budget(
            prepared, checked[0].max_time, options, lambda: time.perf_counter() - t0))
        values = {**values, **chosen}  # the budget stays
    train_config, task_config, model_config = _configs(TrainConfig.over(values, options),
                                                       option_classes, prepared.vocab)
    task = LanguageModelTask(prepared, task_config)
    model = fresh_model(model_class(kind), model_config, train_config)
    if lm is not None:
        model.load_state_dict(lm.model.state_dict())
    trainer = Trainer(run_dir, model, task, train_config, report, world, preset=name,
                      choice=choice)
    if lm is not None:
        trainer.recorded = {"init_from": str(Path(lm.path).resolve())}
    setup = world.from_main(time.perf_counter() - t0)
    trainer.pos.elapsed = trainer.pos.setup = setup
    if train_config.max_time and setup > SETUP_SHARE * train_config.max_time:
        raise CharLMError(f"setting the run up took {setup:.1f} s of the {train_config.max_time:g}"
                          f" s budget (--max-time counts it), leaving too little to train; give "
                          f"a larger --max-time")
    return trainer


def join_world(device: str | None, run_config: dict | None = None) -> World:
    """This process's place among those torchrun started for the run (alone without it; the
    device is checked with the rest of the run's options then). ``device``: the option's
    value, else (None) the one a resumed run's ``run_config`` records."""
    if launched_ranks() == 1:
        return World()
    saved = (run_config or {}).get("train") or {}
    return World.join(resolve_device(device or saved.get("device", "auto")))


def _configs(values: dict, option_classes: tuple = TRAIN_OPTIONS, vocab=None
             ) -> tuple[TrainConfig, LMTaskConfig, LMConfig | WindowConfig | None]:
    """The run's configs from option values by field name (the model's, the first of
    ``option_classes``, once the vocab is known)."""
    groups = split_by_owner(values, option_classes)
    model_config = option_classes[0]
    model = model_config.for_vocab(vocab, **groups[model_config]) if vocab is not None else None
    return TrainConfig(**groups[TrainConfig]), LMTaskConfig(**groups[LMTaskConfig]), model


def _choose_for_budget(prepared: PreparedCorpus, seconds: float, options: dict,
                       spent: Callable[[], float]) -> tuple[dict, dict]:
    """Settings for a budget of ``seconds`` and this corpus (``charlm.budget``): a model's
    speed is measured by a few seconds of its real training steps on the corpus, with the
    options given. Returns the settings and the record of the choice."""
    def speed(settings: dict) -> float:
        train_config, task_config, model_config = _configs(TrainConfig.over(settings, options),
                                                           TRAIN_OPTIONS, prepared.vocab)
        task = LanguageModelTask(prepared, task_config)
        model = fresh_model(RecurrentLM, model_config, train_config)
        with tempfile.TemporaryDirectory() as tmp:  # nothing is written there
            trainer = Trainer(RunDirectory(Path(tmp), writes=False), model, task, train_config,
                              world=World())  # this process alone
            return budget.measure(trainer.train_step, seconds)

    symbols = prepared.split("train").symbols
    chosen, record = budget.choose(seconds, symbols, speed, spent, options)
    if "max_time" not in options:
        record["default_budget"] = True  # no stopping rule given
    given = sorted(k for k in options if k in chosen)
    if given:  # options given win over the choice: the record says what the run uses
        record["settings"] = {**chosen, **{k: options[k] for k in given}}
        record["given"] = given
    return chosen, record


def _new_run_dir(corpus: list[Path], out: Path | None, encoding: str | None = None) -> Path:
    name = None
    if out is None:
        if is_prepared(corpus):
            name = Path(corpus[0]).resolve().name
        else:
            files = collect_files(corpus, encoding=encoding or PrepareConfig.default("encoding"))
            name = files[0].stem if len(files) == 1 else Path(corpus[0]).resolve().name
    return new_run_dir(name, out)


def resume_run(run_dir: Path, corpus: list[Path] | None, prepare_given: dict, options: dict,
               report: Report | None = None, progress: Progress | None = None,
               warn=None, kind: str = RecurrentLM.kind) -> Trainer:
    """Continue the run in ``run_dir`` (of a model of ``kind``) from its last checkpoint.
    Options given must equal the run's unless declared resumable; the corpus files may be
    given again (prepared as the run's were, unless told otherwise)."""
    run_dir = Path(run_dir)
    options = {k: v for k, v in options.items() if v is not None}
    if not (run_dir / LAST).is_file():
        raise CharLMError(f"--resume {run_dir}: not a charlm run directory (no {LAST})")
    option_classes = LOOP_OPTIONS[kind]
    check_given(options, option_classes)
    ckpt = load_checkpoint(run_dir / LAST)
    if ckpt.kind != kind:
        what = "a language model's" if kind == RecurrentLM.kind else f"a {kind} run"
        raise CharLMError(f"--resume {run_dir}: a {ckpt.kind} run, not {what}")
    check_resumable(options, ckpt.run_config, option_classes)
    world = join_world(options.get("device"), ckpt.run_config)
    with world.main_first():
        prepared = _resumed_corpus(run_dir, ckpt, corpus, prepare_given, progress, warn)
    if prepared.vocab.to_json() != ckpt.vocab.to_json():
        raise CharLMError("cannot resume on this corpus: its vocab differs from the run's")

    def make_task(checkpoint) -> LanguageModelTask:
        try:
            config = LMTaskConfig.from_dict({**LMTaskConfig.SAVED_BEFORE,
                                             **checkpoint.run_config["train"]})
        except (KeyError, TypeError) as exc:
            raise CharLMError(f"{run_dir}/{LAST}: the run's training config is damaged "
                              f"({type(exc).__name__}: {exc})") from None
        return LanguageModelTask(prepared, config)
    overrides = {k: v for k, v in options.items() if resumable(k, option_classes)}
    return Trainer.resume(run_dir, make_task, overrides, report, world)


def _resumed_corpus(run_dir: Path, ckpt, corpus: list[Path] | None, given: dict,
                    progress: Progress | None, warn) -> PreparedCorpus:
    saved = ckpt.run_config.get("corpus", {})
    given = {k: v for k, v in given.items() if v is not None}
    if given.get("vocab", ckpt.vocab.kind) != ckpt.vocab.kind:
        raise CharLMError(f"cannot resume with a different --vocab ({given['vocab']!r}; the run "
                          f"has {ckpt.vocab.kind!r})")
    if given and not corpus:
        raise CharLMError(f"{', '.join(PrepareConfig.flag(k) for k in given)} apply only when "
                          f"the corpus files are given again with --resume")
    if corpus and is_prepared(corpus):
        return open_or_prepare(corpus, given)
    if corpus:  # raw text again: prepared as the run's was, unless told otherwise
        kind = ckpt.vocab.kind
        as_before = {"vocab": kind,
                     "vocab_size": ckpt.vocab.size if kind == "bpe" else None,
                     "val_fraction": saved.get("val_fraction"),
                     "doc_separator": saved.get("doc_separator"),
                     "encoding": saved.get("encoding")}
        if ckpt.run_config.get("init_from"):  # encoded with the model's vocab, as before
            return open_or_prepare(corpus, {k: v for k, v in {**as_before, **given}.items()
                                            if k not in ("vocab", "vocab_size")},
                                   progress, warn, vocab=ckpt.vocab)
        return open_or_prepare(corpus, {**as_before, **given}, progress, warn)
    if not isinstance(saved.get("path"), str):
        raise CharLMError(f"{run_dir}/{LAST} does not name its prepared corpus; pass the corpus "
                          f"files again with --resume")
    path = Path(saved["path"])
    if not (path / "meta.json").exists():
        raise CharLMError(f"the run's prepared corpus {path} is gone; pass the corpus files "
                          f"again with --resume")
    return PreparedCorpus.open(path)
