"""``charlm ... --nproc N``: the same command in N processes on this machine, started by
torchrun (torch.distributed.run, in this process) so that they train one run together."""

from __future__ import annotations

import logging
import os

from ..errors import CharLMError

LAUNCHED_BY = "CHARLM_NPROC"  # set for the processes that --nproc started


def without_option(argv: list[str], flag: str) -> list[str]:
    """``argv`` with ``flag VALUE`` (or ``flag=VALUE``) taken out."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        elif not arg.startswith(flag + "="):
            out.append(arg)
    return out


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``python -m charlm ARGV`` in ``nproc`` processes through torchrun (standalone:
    one machine, a free port); returns the exit status. Each process gets an equal share of
    the CPU threads unless OMP_NUM_THREADS says otherwise. Ctrl-C reaches every process
    (they save and stop together); torchrun's own report of a failed process is one line."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    # The processes speak for themselves (the main one alone); torchrun's own notes of
    # sending signals and of exit statuses would say it again.
    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    os.environ[LAUNCHED_BY] = str(nproc)  # for the processes' "continue with" hint
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    try:
        torchrun(["--standalone", "--nproc_per_node", str(nproc), "-m", "charlm", *argv])
    except SignalException as exc:  # Ctrl-C or SIGTERM: the processes saved and stopped
        return 128 + int(exc.sigval)
    except ChildFailedError as exc:
        codes = sorted({f.exitcode for f in exc.failures.values()})
        reported = [code for code in codes if code in (1, 130, 143)]
        if reported:  # a charlm error or an interruption, which a process reported (the
            return reported[-1]  # others were then stopped by torchrun: negative statuses)
        raise CharLMError(f"a process of the run died (exit status "
                          f"{', '.join(map(str, codes))}); its last checkpoint is kept: "
                          f"continue with --resume") from None
    return 0
