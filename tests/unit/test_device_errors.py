"""Which accelerator errors end a worker (sticky CUDA errors) and which do not."""

from __future__ import annotations

import pytest
import torch

from autotask.engine.device_errors import is_sticky_device_error


@pytest.mark.parametrize(
    "exc",
    [
        torch.AcceleratorError("CUDA error: device-side assert triggered"),
        RuntimeError("CUDA error: an illegal memory access was encountered"),
        RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
        RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED"),
        RuntimeError("CUDA error: unspecified launch failure"),
    ],
)
def test_errors_that_poison_the_context_are_sticky(exc: BaseException) -> None:
    assert is_sticky_device_error(exc)


@pytest.mark.parametrize(
    "exc",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("CUDA error: out of memory"),
        RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x2)"),
        IndexError("target 7 is out of bounds"),
        ValueError("CUDA error: in a message of another kind"),
    ],
)
def test_recoverable_and_ordinary_errors_are_not(exc: BaseException) -> None:
    assert not is_sticky_device_error(exc)
