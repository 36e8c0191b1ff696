"""Setting up a language-model run: from what a user gives to a ready ``Trainer``.

    new run:     options (None: not given) -> preset -> configs -> prepared corpus -> run dir
                 -> LanguageModelTask + a fresh RecurrentLM -> Trainer
    resume:      run dir -> its checkpoint -> the options given checked against the run's ->
                 the corpus (the run's, or the files given again) -> Trainer.resume
"""

from __future__ import annotations

from pathlib import Path

from .checkpoint import load_checkpoint
from .errors import CharLMError
from .models import LMConfig, RecurrentLM
from .options import check_given, check_resumable, resumable, split_by_owner
from .presets import choose_preset, preset
from .text.corpus import PrepareConfig, PreparedCorpus, Progress, is_prepared, open_or_prepare
from .text.sources import collect_files
from .training.config import TrainConfig
from .training.lm_task import LanguageModelTask, LMTaskConfig
from .training.loop import Report, Trainer, fresh_model
from .training.run_dir import LAST, RunDirectory, new_run_path

# The options of `charlm train`, by the config that declares them.
TRAIN_OPTIONS = (LMConfig, LMTaskConfig, TrainConfig)


def new_run(corpus: list[Path], out: Path | None, preset_name: str | None,
            prepare_given: dict, options: dict, report: Report | None = None,
            progress: Progress | None = None, warn=None) -> Trainer:
    """A new run on ``corpus`` (text files, or one prepared corpus directory)."""
    options = {k: v for k, v in options.items() if v is not None}
    check_given(options, TRAIN_OPTIONS)  # before any corpus is prepared
    name = choose_preset(preset_name, options)
    groups = split_by_owner(TrainConfig.over(preset(name), options), TRAIN_OPTIONS)
    train_config = TrainConfig(**groups[TrainConfig])
    task_config = LMTaskConfig(**groups[LMTaskConfig])
    prepared = open_or_prepare(corpus, prepare_given, progress, warn)
    model_config = LMConfig.for_vocab(prepared.vocab, **groups[LMConfig])
    run_dir = _new_run_dir(corpus, out)
    task = LanguageModelTask(prepared, task_config)
    model = fresh_model(RecurrentLM, model_config, train_config)
    return Trainer(run_dir, model, task, train_config, report, preset=name)


def _new_run_dir(corpus: list[Path], out: Path | None) -> Path:
    if out is None:
        if is_prepared(corpus):
            name = Path(corpus[0]).resolve().name
        else:
            files = collect_files(corpus)
            name = files[0].stem if len(files) == 1 else Path(corpus[0]).resolve().name
        return new_run_path(name or "run")
    run = RunDirectory(out)
    if run.path.exists() and not run.path.is_dir():
        raise CharLMError(f"--out {run.path} exists and is not a directory")
    if run.holds_run():
        raise CharLMError(f"--out {run.path} already holds a run; continue it with "
                          f"--resume {run.path} or choose another --out")
    foreign = run.foreign_files()
    if foreign:
        raise CharLMError(f"--out {run.path} holds files charlm did not write "
                          f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); "
                          f"choose a new or empty directory")
    return run.path


def resume_run(run_dir: Path, corpus: list[Path] | None, prepare_given: dict, options: dict,
               report: Report | None = None, progress: Progress | None = None,
               warn=None) -> Trainer:
    """Continue the run in ``run_dir`` from its last checkpoint. Options given must equal the
    run's unless declared resumable; the corpus files may be given again (prepared as the
    run's were, unless told otherwise)."""
    run_dir = Path(run_dir)
    options = {k: v for k, v in options.items() if v is not None}
    if not (run_dir / LAST).is_file():
        raise CharLMError(f"--resume {run_dir}: not a charlm run directory (no {LAST})")
    check_given(options, TRAIN_OPTIONS)
    ckpt = load_checkpoint(run_dir / LAST)
    if ckpt.kind != RecurrentLM.kind:
        raise CharLMError(f"--resume {run_dir}: a {ckpt.kind} run, not a language model's")
    check_resumable(options, ckpt.run_config, TRAIN_OPTIONS)
    prepared = _resumed_corpus(run_dir, ckpt, corpus, prepare_given, progress, warn)
    if prepared.vocab.to_json() != ckpt.vocab.to_json():
        raise CharLMError("cannot resume on this corpus: its vocab differs from the run's")

    def make_task(checkpoint) -> LanguageModelTask:
        try:
            config = LMTaskConfig.from_dict(checkpoint.run_config["train"])
        except (KeyError, TypeError) as exc:
            raise CharLMError(f"{run_dir}/{LAST}: the run's training config is damaged "
                              f"({type(exc).__name__}: {exc})") from None
        return LanguageModelTask(prepared, config)
    overrides = {k: v for k, v in options.items() if resumable(k, TRAIN_OPTIONS)}
    return Trainer.resume(run_dir, make_task, overrides, report)


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
                     "doc_separator": saved.get("doc_separator")}
        return open_or_prepare(corpus, {**as_before, **given}, progress, warn)
    if not isinstance(saved.get("path"), str):
        raise CharLMError(f"{run_dir}/{LAST} does not name its prepared corpus; pass the corpus "
                          f"files again with --resume")
    path = Path(saved["path"])
    if not (path / "meta.json").exists():
        raise CharLMError(f"the run's prepared corpus {path} is gone; pass the corpus files "
                          f"again with --resume")
    return PreparedCorpus.open(path)
