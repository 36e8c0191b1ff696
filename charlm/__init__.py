"""charlm: recurrent character-level language models trained on your own text."""

__version__ = "0.5.0"

from .api import LanguageModel, build_trainer, bundled_corpus, load, prepare, train  # noqa: E402
from .errors import CharLMError  # noqa: E402

__all__ = ["CharLMError", "LanguageModel", "build_trainer", "bundled_corpus", "load", "prepare",
           "train", "__version__"]
