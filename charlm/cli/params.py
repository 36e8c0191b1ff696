"""Typer options derived from the option declarations (``charlm.options``).

``@with_options(TrainConfig, ...)`` gives a command one ``--flag`` per declared option of those
config classes, with the declared help and default (or each preset's value) in its help text.
The command's own parameters stay as written; the declared ones arrive together as
``options``: a dict of those given on the command line (a value left out is simply absent, so
the library applies the declared default, or a preset's value).
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..options import Options
from .common import Guard


def _shown(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def help_text(cls: type[Options], name: str, presets: dict[str, dict] | None = None) -> str:
    """The option's help, with its default, or each of ``presets``' values where they set
    it."""
    decl = cls.declared()[name]
    default = cls.default(name)
    text = decl.help + (f" One of: {', '.join(decl.choices)}." if decl.choices else "")
    if presets and any(name in p for p in presets.values()):
        values = {p: _shown(v.get(name, default)) for p, v in presets.items()}
        shown = (f"all {next(iter(values.values()))}" if len(set(values.values())) == 1 else
                 ", ".join(f"{p} {v}" for p, v in values.items()))
        return f"{text} Presets: {shown}."
    shown = decl.default_help or ("none" if default is None else _shown(default))
    return f"{text} Default: {shown}."


def _parameter(cls: type[Options], name: str, presets: dict | None) -> inspect.Parameter:
    kind = cls.field_type(name)
    flag = cls.flag(name)
    decls = (f"{flag}/--no-{flag[2:]}",) if kind is bool else (flag,)
    repeated = cls._is_tuple(name)
    if repeated:
        kind = list[str]  # the option may be given several times
    elif kind not in (bool, int, float, Path):
        kind = str
    info = typer.Option(*decls, help=help_text(cls, name, presets),
                        metavar="<str>" if repeated else None)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[Optional[kind], info])


def with_options(*classes: type[Options], skip: tuple[str, ...] = (),
                 presets: dict[str, dict] | None = None):
    """Decorate a command to take the command-line options declared by ``classes`` (all but
    ``skip``; an option declared by two of them is offered once); the command receives those
    given as ``options`` (see the module doc). ``presets``: the command's presets, whose
    values the help shows."""
    declared, seen = [], set(skip)
    for cls in classes:
        for name, decl in cls.declared().items():
            if decl.command_line and name not in seen:
                declared.append((cls, name))
                seen.add(name)

    def decorate(command):
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "options"]
        extra = [_parameter(cls, name, presets) for cls, name in declared]
        parse = {name: cls.declared()[name].parse for cls, name in declared}

        @functools.wraps(command)
        def run(**kwargs):
            options = {}
            with Guard():
                for name, parser in parse.items():
                    value = kwargs.pop(name, None)
                    if isinstance(value, list):  # a repeatable option: given if given once
                        value = tuple(value) or None
                    if value is not None:
                        options[name] = parser(value) if parser else value
            return command(**kwargs, options=options)
        run.__signature__ = signature.replace(parameters=own + extra)
        return run
    return decorate
