"""Models by kind. A checkpoint records its model's kind; this table turns it back into a class.

Each class has ``kind`` (its name in checkpoints), ``config_class`` (an Options dataclass saved
as the checkpoint's model config) and ``count_parameters(config)``: the number of values in its
``state_dict`` (tied tensors once), counted without allocating, which ``checkpoint`` compares
with a file before building anything.
"""

from __future__ import annotations

from ..errors import CharLMError
from .classifier import ClassifierConfig, RecurrentClassifier
from .hmm import HiddenMarkovLM, HMMConfig
from .language_model import LMConfig, RecurrentLM
from .ngram import NgramConfig, NgramLM
from .window import WindowConfig, WindowLM

KINDS = {cls.kind: cls for cls in (RecurrentLM, RecurrentClassifier, NgramLM, WindowLM,
                                        HiddenMarkovLM)}
# The kinds that predict the next symbol (NextSymbolModels): `charlm eval`, `sample`,
# `inspect` and `compare` read them all.
LM_KINDS = (RecurrentLM.kind, NgramLM.kind, WindowLM.kind, HiddenMarkovLM.kind)


def model_class(kind: str) -> type:
    try:
        return KINDS[kind]
    except KeyError:
        raise CharLMError(f"unknown model kind {kind!r} (this charlm knows "
                          f"{', '.join(KINDS)})") from None


__all__ = ["KINDS", "LM_KINDS", "HMMConfig", "HiddenMarkovLM", "ClassifierConfig", "LMConfig", "NgramConfig", "NgramLM",
           "RecurrentClassifier", "RecurrentLM", "WindowConfig", "WindowLM", "model_class"]
