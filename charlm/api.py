"""The Python API; the CLI is a thin layer over it.

    import charlm
    charlm.train("corpus.txt", out="checkpoints/mine", preset="tiny")
    lm = charlm.load("checkpoints/mine")
    print(lm.sample("ROMEO:", length=200, temperature=0.8, seed=1))
    print(lm.evaluate("Some held-out text.")["bpc"])

Options left as None take their declared defaults (see ``charlm.options``).
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from .checkpoint import Checkpoint, load_checkpoint
from .devices import resolve_device
from .errors import CharLMError
from .evaluate import EvalConfig, evaluate
from .lm_runs import new_run, resume_run
from .models import LM_KINDS
from .options import check_given
from .sample import SampleConfig, generate
from .text.corpus import PrepareConfig, PreparedCorpus, Split, text_split
from .text.corpus import prepare as prepare_corpus
from .training.loop import Report, Trainer
from .training.run_dir import find_checkpoint


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


class LanguageModel:
    """A trained model with its vocab, ready to sample and evaluate."""

    def __init__(self, checkpoint: Checkpoint):
        if checkpoint.kind not in LM_KINDS:
            raise CharLMError(f"{checkpoint.path}: a {checkpoint.kind} checkpoint, not a "
                              f"language model's")
        self.checkpoint = checkpoint
        self.model = checkpoint.model
        self.vocab = checkpoint.vocab

    @property
    def config(self):
        """The model's config (LMConfig for a recurrent model, or a baseline's)."""
        return self.model.config

    @property
    def kind(self) -> str:
        return self.checkpoint.kind

    @property
    def path(self) -> Path:
        return self.checkpoint.path

    @property
    def doc_separator(self) -> str | None:
        """The run's document separator (None: each file was one document)."""
        return self.checkpoint.run_config.get("corpus", {}).get("doc_separator")

    @property
    def separator(self) -> str:
        """What sampling writes when the model ends a document."""
        return self.doc_separator or "\n\n"

    def generate(self, config: SampleConfig, on_text: Callable[[int, str], None] | None = None,
                 on_warning: Callable[[str], None] | None = None,
                 collect: bool = True) -> list[str]:
        """Texts generated as ``config`` says (a seed is drawn if it has none)."""
        return generate(self.model, self.vocab, config.with_seed(), self.separator, on_text,
                        on_warning, collect)

    def sample(self, prime: str | None = None, length: int | None = None,
               temperature: float | None = None, top_k: int | None = None,
               top_p: float | None = None, stop: str | Iterable[str] | None = None,
               seed: int | None = None, num_samples: int | None = None,
               on_text: Callable[[int, str], None] | None = None,
               on_warning: Callable[[str], None] | None = None,
               collect: bool = True) -> str | list[str]:
        """Generated text after ``prime`` (a list when ``num_samples`` > 1). See SampleConfig
        for the options and their defaults.

        With ``on_text`` set and ``collect=False`` the text is only streamed, not kept.
        """
        stop = (stop,) if isinstance(stop, str) else None if stop is None else tuple(stop)
        config = SampleConfig.from_given(prime=prime, length=length, temperature=temperature,
                                         top_k=top_k, top_p=top_p, stop=stop, seed=seed,
                                         num_samples=num_samples)
        texts = self.generate(config, on_text, on_warning, collect)
        return texts[0] if config.num_samples == 1 else texts

    def encode(self, texts: str | Iterable[str]) -> Split:
        """A split of the texts, each cut into documents by the run's document separator."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return text_split(self.vocab, texts, self.doc_separator)

    def evaluate(self, text: str | Iterable[str] | Split | None = None, lanes: int | None = None,
                 bptt_len: int | None = None, burn_in: int | None = None,
                 precision: str | None = None) -> dict:
        """Loss figures on held-out text (a string, several strings, or a Split); with no
        text, the run's own validation split. See EvalConfig for the options and their
        defaults (``precision="bf16"``: faster, figures approximate)."""
        config = EvalConfig.from_given(lanes=lanes, bptt_len=bptt_len, burn_in=burn_in,
                                       precision=precision)
        if text is None:
            split = self.validation_split()
        elif isinstance(text, Split):
            split = text
        else:
            split = self.encode(text)
        return evaluate(self.model, self.vocab, split, config)

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
        with self.model.inference():
            return self.model.next_logits(torch.tensor([ids], device=self.model.device))[0][0]


def load(path: Path | str | None = None, device: str = "cpu", which: str = "best") -> LanguageModel:
    """Load a run directory (its best checkpoint, else its last), or one checkpoint file."""
    return LanguageModel(load_checkpoint(find_checkpoint(path, which, kind=LM_KINDS),
                                         resolve_device(device)))


def _paths(corpus: list[Path] | Path | str | None) -> list[Path] | None:
    if isinstance(corpus, (str, Path)):
        return [Path(corpus)]
    return [Path(p) for p in corpus] if corpus else None


def build_trainer(corpus: list[Path] | Path | str | None = None, out: Path | str | None = None,
                  preset: str | None = None, resume: Path | str | None = None,
                  report: Report | None = None, prepare_progress=None, warn=None,
                  init_from: Path | str | None = None, kind: str = "rnn-lm",
                  **options) -> Trainer:
    """Set up a run (new, or resumed from a run directory) without starting it; ``init_from``:
    a language model's run to go on training on this corpus (its vocab and weights).

    ``options`` are the options of ``charlm train`` by field name: the model's (LMConfig),
    the loop's (TrainConfig), the task's (LMTaskConfig) and the corpus preparation's
    (PrepareConfig); None means "not given". A new run with no ``preset`` and no size option
    takes settings chosen for its time budget (``max_time``, else ``training.config``'s
    ``DEFAULT_BUDGET`` unless ``max_steps`` or ``epochs`` is given) and the text; else the
    ``default`` preset.
    ``kind="window-lm"``: the fixed-window baseline through the same loop (WindowConfig's
    options for the model's).
    """
    prepare_given = {k: options.pop(k) for k in list(options) if k in PrepareConfig.declared()}
    paths = _paths(corpus)
    if resume is not None:
        if preset is not None or out is not None or init_from is not None:
            raise CharLMError("--preset, --out and --init-from do not apply to --resume: the "
                              "run keeps its settings and its directory")
        return resume_run(Path(resume), paths, prepare_given, options, report, prepare_progress,
                          warn, kind=kind)
    return new_run(paths or [bundled_corpus()], None if out is None else Path(out), preset,
                   prepare_given, options, report, prepare_progress, warn,
                   None if init_from is None else Path(init_from), kind=kind)


def train(corpus: list[Path] | Path | str | None = None, out: Path | str | None = None,
          preset: str | None = None, resume: Path | str | None = None,
          report: Report | None = None, init_from: Path | str | None = None,
          **options) -> LanguageModel:
    """Train (or resume) a run and return its best model."""
    trainer = build_trainer(corpus, out, preset, resume, report=report, init_from=init_from,
                            **options)
    trainer.run()
    return load(trainer.run_dir)


def prepare(corpus: list[Path] | Path | str, out: Path | str, progress=None, warn=None,
            **options) -> PreparedCorpus:
    """Prepare a corpus into ``out`` (see ``charlm.text.corpus.prepare``); ``options`` are
    PrepareConfig's (vocab, vocab_size, val_fraction, doc_separator), None or left out taking
    its defaults."""
    check_given(options, (PrepareConfig,))
    return prepare_corpus(_paths(corpus), Path(out), PrepareConfig.from_given(**options),
                          progress=progress, warn=warn)
