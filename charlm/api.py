"""The Python API; the CLI is a thin layer over it.

    import charlm
    charlm.train("corpus.txt", out="checkpoints/mine", preset="tiny")
    lm = charlm.load("checkpoints/mine")
    print(lm.sample("ROMEO:", length=200, temperature=0.8, seed=1))
    print(lm.evaluate("Some held-out text.")["bpc"])
"""

from __future__ import annotations

import importlib.resources
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from .checkpoint import Checkpoint, load_checkpoint
from .config import TrainConfig, check_precision, flag, preset as get_preset, preset_for_budget
from .corpus import (PreparedCorpus, Split, collect_files, encode_texts, is_prepared_dir,
                     prepare_cached, split_documents)
from .errors import CharLMError
from .evaluate import evaluate
from .model import ModelConfig
from .sample import generate
from .runlock import LOCK_NAME, RUN_FILES, stale_temp_files
from .train import BEST, LAST, Report, Trainer, resolve_device

DEFAULT_RUNS = Path("checkpoints")
MODEL_OPTIONS = ("cell", "num_layers", "hidden_dim", "embed_dim", "dropout", "weight_drop",
                 "tie_weights", "learn_init_state", "layer_norm", "recurrent_dropout", "leak",
                 "learn_leak")
SIZE_OPTIONS = ("cell", "num_layers", "hidden_dim", "embed_dim")  # what a preset sizes
# Options that may change when a run is resumed; everything else must match the checkpoint.
RESUMABLE_OPTIONS = ("max_steps", "epochs", "max_time", "eval_every", "save_every", "device",
                     "precision", "max_bad_steps")
STOP_OPTIONS = ("max_steps", "epochs", "max_time")


def bundled_corpus() -> Path:
    """Tiny Shakespeare, shipped with charlm (in the wheel, or in a source checkout)."""
    try:
        res = importlib.resources.files("charlm.data") / "tinyshakespeare.txt"
        if res.is_file():
            return Path(str(res))
    except (ModuleNotFoundError, TypeError):
        pass
    local = Path(__file__).resolve().parent.parent / "data" / "tinyshakespeare.txt"
    if local.is_file():
        return local
    raise CharLMError("the bundled corpus tinyshakespeare.txt is missing from this installation")


def find_checkpoint(path: Path | str | None = None, which: str = "best") -> Path:
    """The checkpoint file for a run directory (best, else last), a file, or the newest run."""
    if path is None:
        runs = []
        if DEFAULT_RUNS.is_dir():
            for d in DEFAULT_RUNS.iterdir():
                files = [d / f for f in (LAST, BEST) if (d / f).is_file()]
                if files:
                    runs.append((max(f.stat().st_mtime for f in files), d))
        if not runs:
            raise CharLMError(f"no trained run under ./{DEFAULT_RUNS}/; train one with "
                              f"'charlm train' or pass --checkpoint DIR")
        path = max(runs)[1]
    path = Path(path)
    if path.is_dir():
        order = (BEST, LAST) if which == "best" else (LAST, BEST)
        for name in order:
            if (path / name).is_file():
                return path / name
        raise CharLMError(f"{path}: not a charlm run (no {BEST} or {LAST})")
    if not path.exists():
        raise CharLMError(f"{path}: checkpoint not found")
    return path


class LanguageModel:
    """A trained model with its vocab, ready to sample and evaluate."""

    def __init__(self, checkpoint: Checkpoint):
        self.checkpoint = checkpoint
        self.model = checkpoint.model
        self.vocab = checkpoint.vocab
        self.model.eval()

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def path(self) -> Path:
        return self.checkpoint.path

    @property
    def separator(self) -> str:
        sep = self.checkpoint.run_config.get("corpus", {}).get("doc_separator")
        return sep if sep else "\n\n"

    def sample(self, prime: str = "", length: int = 500, temperature: float = 0.8,
               top_k: int | None = None, seed: int | None = None, num_samples: int = 1,
               on_text: Callable[[int, str], None] | None = None,
               on_warning: Callable[[str], None] | None = None,
               collect: bool = True) -> str | list[str]:
        """Generated text after ``prime`` (a list when ``num_samples`` > 1).

        With ``on_text`` set and ``collect=False`` the text is only streamed, not kept.
        """
        if seed is None:
            seed = int.from_bytes(os.urandom(4), "little")
        texts = generate(self.model, self.vocab, length, prime, temperature, top_k, seed,
                         num_samples, self.separator, on_text, on_warning, collect)
        return texts[0] if num_samples == 1 else texts

    def encode(self, texts: str | Iterable[str]) -> Split:
        """A split of the texts, each cut into documents by the run's document separator."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        sep = self.checkpoint.run_config.get("corpus", {}).get("doc_separator")
        return encode_texts(self.vocab, [d for t in texts for d in split_documents(t, sep)])

    def evaluate(self, text: str | Iterable[str] | Split | None = None, lanes: int | None = None,
                 bptt_len: int = 256, burn_in: int = 256, precision: str = "fp32") -> dict:
        """Loss figures on held-out text (a string, several strings, or a Split).

        With no text, the run's own validation split. ``precision="bf16"``: faster, figures
        approximate (see ``charlm.evaluate.evaluate``).
        """
        if text is None:
            split = self.validation_split()
        elif isinstance(text, Split):
            split = text
        else:
            split = self.encode(text)
        return evaluate(self.model, self.vocab, split, lanes, bptt_len, burn_in,
                        precision=precision)

    def validation_split(self) -> Split:
        corpus_path = self.checkpoint.run_config.get("corpus", {}).get("path")
        if not corpus_path or not (Path(corpus_path) / "meta.json").exists():
            raise CharLMError("the run's prepared corpus is no longer on disk; pass text files "
                              "to evaluate")
        corpus = PreparedCorpus.open(Path(corpus_path))
        if corpus.vocab.to_json() != self.vocab.to_json():
            raise CharLMError(f"{corpus_path}: its vocab does not match the checkpoint's")
        if not corpus.has_split("val"):
            raise CharLMError("the run has no validation split; pass text files to evaluate")
        return corpus.split("val")

    @torch.no_grad()
    def logits(self, text: str) -> torch.Tensor:
        """Logits (T, V) for each position of EOD + text, from the initial state."""
        ids = [self.vocab.eod_id] + [int(i) for i in self.vocab.encode(text)]
        x = torch.tensor([ids], device=next(self.model.parameters()).device)
        return self.model(x)[0][0]


def load(path: Path | str | None = None, device: str = "cpu", which: str = "best") -> LanguageModel:
    """Load a run directory (its best checkpoint, else its last), or one checkpoint file."""
    return LanguageModel(load_checkpoint(find_checkpoint(path, which), resolve_device(device)))


def _new_run_dir(name: str) -> Path:
    base = DEFAULT_RUNS / name
    candidate, n = base, 1
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = DEFAULT_RUNS / f"{name}-{n}"
    return candidate


def _foreign_files(run_dir: Path) -> list[str]:
    """Names in ``run_dir`` that a charlm run killed before its first checkpoint would not
    have left there (a new run may replace only those)."""
    if not run_dir.is_dir():
        return []
    ours = set(RUN_FILES) | {LOCK_NAME} | {p.name for p in stale_temp_files(run_dir)}
    foreign = []
    for p in sorted(run_dir.iterdir()):
        if p.name == "config.json":
            try:
                mine = "charlm_version" in json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError, TypeError):
                mine = False
            if not mine:
                foreign.append(p.name)
        elif p.name not in ours:
            foreign.append(p.name)
    return foreign


def _is_prepared(paths: list[Path]) -> bool:
    return len(paths) == 1 and is_prepared_dir(Path(paths[0]))


def prepare_corpus(paths: list[Path], vocab: str | None = None, vocab_size: int | None = None,
                   val_fraction: float | None = None, doc_separator: str | None = None,
                   progress=None, warn=None) -> PreparedCorpus:
    """Open a prepared corpus directory, or prepare text files (cached by content).

    ``None`` means "not given"; preparation options given for an already prepared corpus are
    refused rather than silently ignored.
    """
    given = {"--vocab": vocab, "--vocab-size": vocab_size, "--val-fraction": val_fraction,
             "--doc-separator": doc_separator}
    if _is_prepared(paths):
        named = [k for k, v in given.items() if v is not None]
        if named:
            raise CharLMError(f"{paths[0]} is a prepared corpus; {', '.join(named)} apply only "
                              f"to raw text (prepare it again to change them)")
        return PreparedCorpus.open(Path(paths[0]))
    kind = vocab or "char"
    if kind == "char" and vocab_size is not None:
        raise CharLMError("--vocab-size applies only to --vocab bpe")
    return prepare_cached(paths, kind, 1024 if vocab_size is None else vocab_size,
                          0.1 if val_fraction is None else val_fraction, doc_separator, progress,
                          warn)


def build_trainer(corpus: list[Path] | Path | str | None = None, out: Path | str | None = None,
                  preset: str | None = None, resume: Path | str | None = None,
                  vocab: str | None = None, vocab_size: int | None = None,
                  val_fraction: float | None = None, doc_separator: str | None = None,
                  report: Report | None = None, prepare_progress=None, warn=None,
                  **options) -> Trainer:
    """Set up a run (new, or resumed from a run directory) without starting it.

    ``options`` are ModelConfig and TrainConfig fields; ``None`` means "not given". A new run
    uses the ``default`` preset unless ``preset`` names another.
    """
    options = {k: v for k, v in options.items() if v is not None}
    if options.get("precision") is not None:
        check_precision(options["precision"])  # before any corpus is prepared
    unknown = set(options) - set(MODEL_OPTIONS) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise CharLMError(f"unknown training options: {', '.join(sorted(unknown))}")
    if isinstance(corpus, (str, Path)):
        corpus = [Path(corpus)]

    if resume is not None:
        run_dir = Path(resume)
        if preset is not None or out is not None:
            raise CharLMError("--preset and --out do not apply to --resume: the run keeps its "
                              "settings and its directory")
        if not (run_dir / LAST).is_file():
            raise CharLMError(f"--resume {run_dir}: not a charlm run directory (no {LAST})")
        ckpt = load_checkpoint(run_dir / LAST)
        saved_model = ckpt.run_config.get("model", {})
        saved_train = ckpt.run_config.get("train", {})
        for k, v in options.items():
            # A field missing from an older checkpoint had its default value there.
            default = (ModelConfig.__dataclass_fields__[k].default if k in MODEL_OPTIONS
                       else getattr(TrainConfig, k, None))
            saved = saved_model.get(k, default) if k in MODEL_OPTIONS else \
                saved_train.get(k, default)
            if k not in RESUMABLE_OPTIONS and saved != v:
                raise CharLMError(f"cannot resume with a different {flag(k)} "
                                  f"({v!r}; the run has {saved!r}); options that may change on "
                                  f"resume: {', '.join(flag(o) for o in RESUMABLE_OPTIONS)}")
        saved_corpus = ckpt.run_config.get("corpus", {})
        if corpus and _is_prepared(corpus):
            prepared = prepare_corpus(corpus)
        elif corpus:  # raw text again: prepared as the run's was, unless told otherwise
            kind = vocab or ckpt.vocab.kind
            prepared = prepare_corpus(
                corpus, kind,
                vocab_size if vocab_size is not None or kind == "char" else ckpt.vocab.size,
                val_fraction if val_fraction is not None else saved_corpus.get("val_fraction"),
                doc_separator if doc_separator is not None else saved_corpus.get("doc_separator"),
                prepare_progress, warn)
        if corpus:
            if prepared.vocab.to_json() != ckpt.vocab.to_json():
                raise CharLMError("cannot resume on this corpus: its vocab differs from the run's")
        else:
            if not isinstance(saved_corpus.get("path"), str):
                raise CharLMError(f"{run_dir}/{LAST} does not name its prepared corpus; pass "
                                  f"the corpus files again with --resume")
            path = Path(saved_corpus["path"])
            if not (path / "meta.json").exists():
                raise CharLMError(f"the run's prepared corpus {path} is gone; pass the corpus "
                                  f"files again with --resume")
            prepared = PreparedCorpus.open(path)
        overrides = {k: v for k, v in options.items() if k in RESUMABLE_OPTIONS}
        return Trainer.resume(run_dir, prepared, overrides, report)

    paths = corpus or [bundled_corpus()]
    prepared = prepare_corpus(paths, vocab, vocab_size, val_fraction, doc_separator,
                              prepare_progress, warn)
    if preset is None:
        # A time budget with no size given: the preset made for budgets of that length.
        sized = any(k in options for k in SIZE_OPTIONS)  # a regulariser alone is no size
        timed = options.get("max_time") is not None
        preset = preset_for_budget(options["max_time"]) if timed and not sized else "default"
    chosen = get_preset(preset)
    model_opts = {**chosen["model"], **{k: v for k, v in options.items() if k in MODEL_OPTIONS}}
    train_opts = dict(chosen["train"])
    if any(k in options for k in STOP_OPTIONS):
        for k in STOP_OPTIONS:
            train_opts.pop(k, None)  # the user's stopping rule replaces the preset's
    train_opts.update({k: v for k, v in options.items() if k not in MODEL_OPTIONS})
    v = prepared.vocab
    model_config = ModelConfig(vocab_size=v.size,
                               never_predict=tuple(i for i in (v.pad_id, v.unk_id)
                                                   if i is not None),
                               **model_opts)
    train_config = TrainConfig(**train_opts)
    if out is None:
        if _is_prepared(paths):
            name = Path(paths[0]).resolve().name
        else:
            files = collect_files(paths)
            name = files[0].stem if len(files) == 1 else Path(paths[0]).resolve().name
        run_dir = _new_run_dir(name or "run")
    else:
        run_dir = Path(out)
        if run_dir.exists() and not run_dir.is_dir():
            raise CharLMError(f"--out {run_dir} exists and is not a directory")
        if (run_dir / LAST).exists() or (run_dir / BEST).exists():
            raise CharLMError(f"--out {run_dir} already holds a run; continue it with "
                              f"--resume {run_dir} or choose another --out")
        foreign = _foreign_files(run_dir)
        if foreign:
            raise CharLMError(f"--out {run_dir} holds files charlm did not write "
                              f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); "
                              f"choose a new or empty directory")
    trainer = Trainer(run_dir, prepared, model_config, train_config, report)
    trainer.preset = preset
    return trainer


def train(corpus: list[Path] | Path | str | None = None, out: Path | str | None = None,
          preset: str | None = None, resume: Path | str | None = None,
          report: Report | None = None, **options) -> LanguageModel:
    """Train (or resume) a run and return its best model."""
    trainer = build_trainer(corpus, out, preset, resume, report=report, **options)
    trainer.run()
    return load(trainer.run_dir)


def prepare(corpus: list[Path] | Path | str, out: Path | str, vocab: str = "char",
            vocab_size: int = 1024, val_fraction: float = 0.1,
            doc_separator: str | None = None) -> PreparedCorpus:
    """Prepare a corpus into ``out`` (see ``charlm.corpus.prepare``)."""
    from .corpus import prepare as _prepare

    if isinstance(corpus, (str, Path)):
        corpus = [Path(corpus)]
    return _prepare([Path(p) for p in corpus], Path(out), vocab, vocab_size, val_fraction,
                    doc_separator)
