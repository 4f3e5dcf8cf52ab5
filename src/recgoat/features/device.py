"""The device check shared by the feature store, the text and image encoders, and the trainer (``trainer.device``)
and the benchmark (``train.device``).

Why it exists: torch accepts any string as a device until it first moves something there, so a typo
(``cuda:7`` on a one-GPU machine, ``nonsense``, ``CPU``) or a device that computes nothing (``meta``) failed
deep inside the first ``.to(device)`` of model loading, with an AssertionError or RuntimeError that names
neither the option nor the fix. :func:`check_device` says what is wrong as a :class:`ConfigError` before any
model is loaded. It lives in its own module so that the encoders (``text``, ``image``) need not import the
store, which imports them; the training layer, downstream of the features, imports it from here.
"""
from __future__ import annotations

from recgoat.errors import ConfigError


def check_device(device: str, name: str = "device", purpose: str = "encode on", fix: str = "--device cpu") -> None:
    """A ConfigError for a device torch cannot parse, one that computes nothing (``meta``) or one this
    machine lacks (no CUDA GPU, a GPU index past those torch sees, no MPS/XPU); None for a usable one.
    ``name``, ``purpose`` and ``fix`` word the message for the option checked (the trainer's is
    ``trainer.device``, set by ``--set trainer.device=cpu``)."""
    if device == "cpu":
        return
    import torch

    dev = parse_device(device)
    if dev is None:
        raise ConfigError(f"{name} {device!r} is not a torch device to {purpose} (e.g. cpu, cuda, cuda:1, mps)")
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ConfigError(f"{name} {device!r}: no CUDA GPU is available to torch here; use {fix}")
        if dev.index is not None and dev.index >= n:
            raise ConfigError(f"{name} {device!r}: torch sees only {n} CUDA GPU(s) (cuda:0..cuda:{n - 1})")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{name} {device!r}: MPS is not available to torch here; use {fix}")
    elif dev.type == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        raise ConfigError(f"{name} {device!r}: no XPU is available to torch here; use {fix}")


def parse_device(device: str):
    """``torch.device(device)`` when it names a device that computes (cpu, cuda, mps, xpu), else None (a typo,
    ``CPU``, ``meta``): whether or not this machine has it."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        return None
    return dev if dev.type in ("cpu", "cuda", "mps", "xpu") else None  # meta, lazy…: no real computation
