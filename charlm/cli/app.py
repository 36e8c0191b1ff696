"""The ``charlm`` command: the root of the command tree and its entry point.

stdout carries data (generated text, evaluation results); stderr carries progress, status and
errors. Exit codes: 0 ok, 1 a charlm error (one line, no traceback), 2 a usage error, 130 after
Ctrl-C and 143 after SIGTERM (training: once the checkpoint is safely written).
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from .. import __version__
from .common import quiet_stdout

app = typer.Typer(
    name="charlm", add_completion=False, no_args_is_help=True, rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Train recurrent character-level language models on your own text, then evaluate and "
         "sample from them.")


def _version(value: bool):
    if value:
        print(f"charlm {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None,
):
    pass


def group(name: str, help: str) -> typer.Typer:
    """A command group (``charlm NAME ...``)."""
    sub = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help=help)
    app.add_typer(sub, name=name)
    return sub


def main():
    try:
        app()
    except BrokenPipeError:
        quiet_stdout()
        sys.exit(0)
