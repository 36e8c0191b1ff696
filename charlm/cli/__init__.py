"""The command line: one module per command group, only option parsing and rendering here.

    app.py       the root command, --version, the entry point
    common.py    consoles, the error guard (one line, exit 1), progress bars, shared options
    params.py    Typer options derived from the option declarations (charlm.options)
    lm.py        prepare, train, eval, sample
    diagnose.py  diagnose gradients
    plot.py      plot (training curves)
    report.py    inspect (the HTML report)
    baseline.py  baseline ngram, hmm, window
    compare.py   compare (several runs on one text)
"""

from . import baseline, classify, compare, diagnose, lm, plot, report  # noqa: F401  (their commands join the app)
from .app import app, main

__all__ = ["app", "main"]
