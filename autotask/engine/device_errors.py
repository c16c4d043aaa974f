"""Accelerator errors that leave the process's device context unusable.

A device-side assert, an illegal memory access or a failed cuBLAS/cuDNN allocation is
sticky: CUDA reports it again on every later call in the process, so a worker that went on
would fail every trial after it. Out-of-memory errors are not sticky (the allocator frees
its cache and the next trial runs).
"""

from __future__ import annotations

import torch

__all__ = ["STICKY_MARKERS", "is_sticky_device_error"]

#: Parts of the messages of CUDA errors that poison the context.
STICKY_MARKERS = (
    "device-side assert",
    "illegal memory access",
    "illegal address",
    "illegal instruction",
    "misaligned address",
    "unspecified launch failure",
    "uncorrectable ECC error",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUBLAS_STATUS_EXECUTION_FAILED",
    "CUBLAS_STATUS_INTERNAL_ERROR",
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_EXECUTION_FAILED",
    "CUDNN_STATUS_INTERNAL_ERROR",
    "CUDA error",
)


def is_sticky_device_error(exc: BaseException) -> bool:
    """True for an accelerator error after which this process cannot use the device."""
    if isinstance(exc, torch.OutOfMemoryError):
        return False
    text = str(exc)
    if "out of memory" in text:
        return False
    if isinstance(exc, torch.AcceleratorError):
        return True
    return isinstance(exc, RuntimeError) and any(marker in text for marker in STICKY_MARKERS)
