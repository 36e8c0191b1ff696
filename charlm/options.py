"""Options, each declared once: as a field of a frozen config dataclass.

A declaration holds everything charlm knows about an option: its default (the one home of it),
its command-line flag, its help text, the check its value must pass, and whether a resumed run
may change it. Everything else is read from the declarations: the ``__post_init__`` checks of
every config class, the Typer options of the commands (``charlm.cli.params``), the resume rule
(``resumable``) and the per-preset values in the help text.

    @dataclass(frozen=True)
    class TrainConfig(Options):
        lr: float = option(3e-3, "Peak learning rate.", check=positive_number)

A config class may add checks between fields in ``check()``.
"""

from __future__ import annotations

import functools
import math
import typing
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

from .errors import CharLMError

MAX_SEED = 2**63 - 1

Check = Callable[[str, Any], None]  # (flag, value) -> None, or raises CharLMError


@dataclass(frozen=True)
class Declaration:
    """What is declared about one option (see ``option``)."""

    help: str
    flag: str | None = None              # default: --field-name
    check: Check | None = None
    choices: tuple[str, ...] = ()
    resumable: bool = False              # may change when a run is resumed
    command_line: bool = True            # offered as a command-line option
    default_help: str | None = None      # how --help words the default, where the value alone
                                         # would not say it (e.g. "auto" or "off")
    parse: Callable[[str], Any] | None = None  # from the command line's text to the value


def option(default: Any = MISSING, help: str = "", *, flag: str | None = None,
           check: Check | None = None, choices: tuple[str, ...] = (), resumable: bool = False,
           command_line: bool = True, default_help: str | None = None,
           parse: Callable[[str], Any] | None = None):
    """A dataclass field that declares an option (``default`` omitted: a required field)."""
    declaration = Declaration(help, flag, check, choices, resumable, command_line, default_help,
                              parse)
    if isinstance(default, (list, dict, set)):
        raise TypeError("option defaults must be immutable")
    return field(default=default, metadata={"option": declaration})


# ----- checks -----------------------------------------------------------------------------------
def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive_int(flag: str, value) -> None:
    if not _is_int(value):
        raise CharLMError(f"{flag} must be an integer >= 1, got {value!r}")
    if value < 1:
        raise CharLMError(f"{flag} must be >= 1, got {value!r}")


def non_negative_int(flag: str, value) -> None:
    if not _is_int(value) or value < 0:
        raise CharLMError(f"{flag} must be >= 0, got {value!r}")


def positive_number(flag: str, value) -> None:
    if not _is_number(value) or not (value > 0) or math.isinf(value):  # NaN fails "> 0"
        raise CharLMError(f"{flag} must be a finite number > 0, got {value}")


def non_negative_number(flag: str, value) -> None:
    if not _is_number(value) or not (value >= 0) or math.isinf(value):
        raise CharLMError(f"{flag} must be a finite number >= 0, got {value}")


def fraction(flag: str, value) -> None:
    """In [0, 1): a share that must leave something."""
    if not _is_number(value) or not 0.0 <= value < 1.0:
        raise CharLMError(f"{flag} must be in [0, 1), got {value}")


def open_fraction(flag: str, value) -> None:
    if not _is_number(value) or not 0.0 < value < 1.0:
        raise CharLMError(f"{flag} must be in (0, 1), got {value}")


def seed(flag: str, value) -> None:
    if not _is_int(value) or not 0 <= value <= MAX_SEED:
        raise CharLMError(f"{flag} must be between 0 and {MAX_SEED}, got {value}")


def at_most(limit: float, first: Check) -> Check:
    """``first``, then an upper bound."""
    def check(flag: str, value) -> None:
        first(flag, value)
        if value > limit:
            raise CharLMError(f"{flag} must be at most {limit:,}, got {value:g}")
    return check


def one_of(flag: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise CharLMError(f"{flag} must be one of {', '.join(choices)}, not {value!r}")


# ----- config classes ---------------------------------------------------------------------------
class Options:
    """Base of the frozen config dataclasses whose fields are declared options.

    Construction checks every declared field (None, where allowed, means "not set"), then
    ``check()``, the checks between fields.
    """

    # The name of the section of a run's config.json that holds these options ("model",
    # "train"...), where a resumed run's options are compared.
    section: ClassVar[str] = ""

    def __post_init__(self):
        for name in self.declared():
            self.check_value(name, getattr(self, name))
        self.check()

    @classmethod
    def check_value(cls, name: str, value) -> None:
        """The declared check of option ``name`` (None, where allowed, is "not set")."""
        decl = cls.declared()[name]
        if value is None:
            return
        if decl.choices:
            one_of(cls.flag(name), value, decl.choices)
        if decl.check:
            decl.check(cls.flag(name), value)

    def check(self) -> None:
        """Checks between fields; subclasses add theirs."""

    @classmethod
    @functools.cache
    def declared(cls) -> dict[str, Declaration]:
        return {f.name: f.metadata["option"] for f in fields(cls) if "option" in f.metadata}

    @classmethod
    def flag(cls, name: str) -> str:
        decl = cls.declared().get(name)
        return (decl.flag if decl and decl.flag else None) or "--" + name.replace("_", "-")

    @classmethod
    def default(cls, name: str):
        f = next(f for f in fields(cls) if f.name == name)
        return f.default

    @classmethod
    def field_type(cls, name: str) -> type:
        """The field's type, without ``None``: int, float, str, bool..."""
        hint = typing.get_type_hints(cls)[name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if typing.get_origin(hint) in (typing.Union, _UnionType) and args \
            else hint

    def to_dict(self) -> dict:
        """The options as JSON keeps them (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict, strict: bool = False):
        """The config saved as ``d`` (lists back to tuples where a field is one); keys of other
        configs are ignored unless ``strict``."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if strict and unknown:
            raise CharLMError(f"{cls.section or cls.__name__} config has unknown fields: "
                              f"{', '.join(sorted(unknown))}")
        return cls(**{k: tuple(v) if isinstance(v, list) and cls._is_tuple(k) else v
                      for k, v in d.items() if k in names})

    @classmethod
    def _is_tuple(cls, name: str) -> bool:
        kind = cls.field_type(name)
        return kind is tuple or typing.get_origin(kind) is tuple

    @classmethod
    def from_given(cls, **given):
        """The config with the options given (None: not given, the default applies)."""
        return cls(**{k: v for k, v in given.items() if v is not None})

    def with_options(self, **given):
        """A copy with the options given (None: not given) changed."""
        return replace(self, **{k: v for k, v in given.items() if v is not None})


_UnionType = type(int | None)


def owner(name: str, classes: tuple[type[Options], ...]) -> type[Options] | None:
    """The config class among ``classes`` that declares option ``name``."""
    return next((c for c in classes if name in c.declared()), None)


def check_given(given: dict, classes: tuple[type[Options], ...]) -> None:
    """Refuse unknown options and values that fail their own check, before any work is done
    (checks between options wait for the whole config)."""
    unknown = sorted(k for k in given if owner(k, classes) is None)
    if unknown:
        raise CharLMError(f"unknown options: {', '.join(unknown)}")
    for name, value in given.items():
        owner(name, classes).check_value(name, value)


def split_by_owner(given: dict, classes: tuple[type[Options], ...]) -> dict[type, dict]:
    """The options given, grouped by the config class that declares each."""
    check_given(given, classes)
    groups = {c: {} for c in classes}
    for name, value in given.items():
        groups[owner(name, classes)][name] = value
    return groups


def resumable(name: str, classes: tuple[type[Options], ...]) -> bool:
    """Whether a resumed run may change option ``name`` (declared by one of ``classes``)."""
    cls = owner(name, classes)
    return cls is not None and cls.declared()[name].resumable


def resumable_flags(classes: tuple[type[Options], ...]) -> list[str]:
    """The flags of the options among ``classes`` that a resumed run may change."""
    return [c.flag(n) for c in classes for n in c.declared() if resumable(n, classes)]


def check_resumable(given: dict, saved: dict, classes: tuple[type[Options], ...]) -> None:
    """Refuse an option given on resume that differs from the run's (``saved``: the run's
    config sections) unless it is declared resumable. A field missing from an older run had
    its default there."""
    for name, value in given.items():
        cls = owner(name, classes)
        if cls is None or resumable(name, classes):
            continue
        was = saved.get(cls.section, {}).get(name, cls.default(name))
        if was != value:
            raise CharLMError(f"cannot resume with a different {cls.flag(name)} ({value!r}; the "
                              f"run has {was!r}); options that may change on resume: "
                              f"{', '.join(resumable_flags(classes))}")
