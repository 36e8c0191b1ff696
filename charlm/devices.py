"""Where and in what precision a model computes: device choice, bf16 support, memory."""

from __future__ import annotations

import os

import torch

from .errors import CharLMError, ProcessError

DEVICES = ("auto", "cpu", "cuda", "mps")
DEVICE_HELP = "Where to compute; auto: cuda, then mps, then cpu."
PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 where the hardware computes it natively
EVAL_PRECISIONS = ("fp32", "bf16")
# What each precision computes in (None: the weights' own float32).
COMPUTE_DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(name: str) -> torch.device:
    """The device for ``--device`` (auto: cuda, then mps, then cpu); one that is not there is
    refused. (Which names exist is the option's own check.) Under torchrun each process takes
    its own GPU, the one of its LOCAL_RANK."""
    if name in ("auto", "cuda") and torch.cuda.is_available():
        from .training.world import local_rank

        index = local_rank()
        if index is not None:
            if index >= torch.cuda.device_count():
                raise ProcessError(f"process {index} on this machine has no GPU of its own "
                                  f"({torch.cuda.device_count()} here); start at most that "
                                  f"many per machine (--nproc_per_node)")
            torch.cuda.set_device(index)
            return torch.device("cuda", index)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CharLMError("--device cuda: no CUDA device is available")
    if name == "mps" and not _mps_available():
        raise CharLMError("--device mps: no MPS device is available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise CharLMError(f"--device {name!r} is not a device") from None


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 products in hardware (on CPU: AVX512-BF16 or AMX);
    elsewhere bf16 is emulated and slower than float32."""
    if device.type != "cpu":
        return False  # GPUs: not measured yet, so float32
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` made concrete for ``device``; bf16 refused where it cannot run."""
    if precision == "auto":
        precision = "bf16" if native_bf16(device) else "fp32"
    if precision == "bf16" and device.type not in ("cpu", "cuda"):
        raise CharLMError(f"--precision bf16 is not supported on {device.type}; "
                          f"use --precision fp32 (or auto)")
    return precision


def device_memory(device: torch.device) -> int | None:
    """Bytes of memory on ``device`` (None where it cannot be told)."""
    try:
        if device.type == "cuda":
            return torch.cuda.get_device_properties(device).total_memory
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError, RuntimeError):
        return None


def check_fits(parameters: int, device: torch.device, exact: bool = True) -> None:
    """Refuse, before allocating anything, a model of ``parameters`` (with ``exact`` False: of
    more than that) whose weights, gradients and two optimizer moments (4 float32 copies)
    would not fit in the device's memory."""
    need, have = 16 * parameters, device_memory(device)
    if have is not None and need > have:
        a_model, about = ("a model of ", "about") if exact else ("a model of more than ",
                                                                  "more than")
        raise ProcessError(f"{a_model}{parameters:,} parameters needs {about} "
                          f"{need / 2**30:,.1f} GiB to train (weights, gradients, optimizer "
                          f"state) but the {device.type} has {have / 2**30:,.1f} GiB; use a "
                          f"smaller --hidden, --layers or --embed")
