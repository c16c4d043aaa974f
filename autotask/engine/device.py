"""Device choice (cuda > mps > cpu) and seeding."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from autotask.errors import ConfigError

__all__ = ["configure_threads", "pick_device", "seed_everything"]


def pick_device(preference: str | None = None) -> torch.device:
    """``preference`` (or ``$AUTOTASK_DEVICE``) if given, else the best device present.

    An indexed CUDA device (``cuda:1``) becomes the process's current device
    (``torch.cuda.set_device``), so nothing opens a CUDA context on GPU 0 beside it; its
    index counts within ``$CUDA_VISIBLE_DEVICES`` and must be below the devices visible."""
    wanted = preference or os.environ.get("AUTOTASK_DEVICE")
    if wanted:
        try:
            device = torch.device(wanted)
        except RuntimeError:
            raise ConfigError(f"unknown device {wanted!r}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {wanted!r} requested but CUDA is not available")
        if device.type == "cuda" and device.index is not None:
            _use_cuda_device(device.index, wanted)
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _use_cuda_device(index: int, wanted: str) -> None:
    """Make CUDA device ``index`` the current one, once it is known to be visible."""
    count = torch.cuda.device_count()
    if index >= count:
        mask = os.environ.get("CUDA_VISIBLE_DEVICES")
        where = f" (CUDA_VISIBLE_DEVICES={mask!r})" if mask is not None else ""
        seen = f"{count} CUDA device(s), cuda:0 to cuda:{count - 1}" if count else "no CUDA device"
        raise ConfigError(f"device {wanted!r} requested but this process sees {seen}{where}")
    torch.cuda.set_device(index)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator for data order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


#: Intra-op threads the CLI uses when ``$AUTOTASK_THREADS`` is not set.
DEFAULT_THREADS = 1


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads``, else ``$AUTOTASK_THREADS``, else 1.

    Candidate networks are small: one thread trains them fastest, and with two or more a
    busy core stalls every step at the thread barriers (measured: 0.5 s -> 30-40 s per
    digits network on two cores with one core busy). autotask parallelises across trials
    and workers instead; raise it for large models trained on CPU.
    """
    wanted: int | str = (
        threads if threads is not None else os.environ.get("AUTOTASK_THREADS", DEFAULT_THREADS)
    )
    try:
        count = int(wanted)
    except ValueError:
        raise ConfigError(f"AUTOTASK_THREADS must be an integer, got {wanted!r}") from None
    if count < 1:
        raise ConfigError(f"thread count must be >= 1, got {count}")
    torch.set_num_threads(count)
    return count
