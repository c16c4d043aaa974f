"""The ``runtime:`` setting (:class:`RuntimeSpec`), validated without importing torch.

Study and architecture files are read by commands that train nothing (``autotask
status``); :meth:`RuntimeSpec.resolve` imports torch when a device is chosen. See
:mod:`autotask.engine.runtime` for the settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from autotask.errors import ConfigError
from autotask.validation import format_validation_error

if TYPE_CHECKING:
    import torch

    from autotask.engine.runtime import Runtime

__all__ = [
    "BF16_CAPABILITY",
    "DATA_BUDGET_ENV",
    "Precision",
    "RuntimeSpec",
    "native_bf16",
    "parse_runtime",
]

Precision = Literal["auto", "bf16", "fp16", "fp32"]
#: Environment variable: data budget on the device in MiB (overrides ``data_fraction``).
DATA_BUDGET_ENV = "AUTOTASK_DATA_BUDGET_MB"


class RuntimeSpec(BaseModel):
    """Training-runtime settings (see :mod:`autotask.engine.runtime`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    precision: Precision = "auto"
    tf32: bool | None = None
    channels_last: bool | None = None
    compile: bool | str = False
    data_fraction: float = Field(default=0.5, gt=0, le=1)
    data_budget_mb: float | None = Field(default=None, ge=0)

    def resolve(self, device: torch.device | str) -> Runtime:
        """Every ``auto`` decided for ``device``; impossible combinations are ConfigErrors."""
        import torch

        from autotask.engine.runtime import Runtime

        device = torch.device(device)
        cuda = device.type == "cuda"
        precision = self.precision
        if precision == "auto":
            precision = "bf16" if cuda and native_bf16(device) else "fp32"
        elif precision == "bf16" and cuda and not native_bf16(device):
            major, minor = _capability(device)
            raise ConfigError(
                f"runtime: precision bf16 is emulated on {device} (compute capability "
                f"{major}.{minor}; bf16 needs 8.0): use fp16 or fp32"
            )
        if precision in ("bf16", "fp16") and device.type not in ("cuda", "cpu", "mps", "xpu"):
            raise ConfigError(f"runtime: precision {precision} needs autocast, not on {device}")
        if self.tf32 and not cuda:
            raise ConfigError(f"runtime: tf32 is a CUDA setting; the device is {device}")
        return Runtime(
            device=device,
            precision=precision,
            tf32=cuda if self.tf32 is None else self.tf32,
            channels_last=cuda if self.channels_last is None else self.channels_last,
            compile_backend=_compile_backend(self.compile),
            data_budget=self._data_budget(device),
        )

    def _data_budget(self, device: torch.device) -> int | None:
        """Bytes of split data the device may hold; None: no limit (host-memory devices)."""
        mb: float | str | None = self.data_budget_mb
        if mb is None:
            mb = os.environ.get(DATA_BUDGET_ENV) or None
        if mb is not None:
            try:
                value = float(mb)
            except ValueError:
                raise ConfigError(f"{DATA_BUDGET_ENV} must be a number, got {mb!r}") from None
            if value < 0:
                raise ConfigError(f"the data budget must be >= 0 MiB, got {value}")
            return int(value * 2**20)
        if device.type == "cuda":
            import torch

            free, _ = torch.cuda.mem_get_info(device)
            return int(free * self.data_fraction)
        return None


#: The first CUDA compute capability with bf16 tensor cores (Ampere, sm_80).
BF16_CAPABILITY = (8, 0)


def native_bf16(device: torch.device) -> bool:
    """bf16 runs natively on ``device`` (not emulated in fp32, as on V100 and T4): compute
    capability 8.0 or later, asked of that device, not of the process's current one; any
    ROCm device."""
    import torch

    if torch.version.hip:
        return True
    return _capability(device) >= BF16_CAPABILITY


def _capability(device: torch.device) -> tuple[int, int]:
    import torch

    index = device.index if device.index is not None else torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return (major, minor)


def _compile_backend(value: bool | str) -> str | None:
    if value is False:
        return None
    if value is True:
        return "inductor"
    import torch

    known = torch.compiler.list_backends(exclude_tags=())
    if value not in known:
        raise ConfigError(
            f"runtime: unknown torch.compile backend {value!r}; known: {', '.join(sorted(known))}"
        )
    return value


def parse_runtime(data: Any, source: str) -> RuntimeSpec:
    """A ``runtime:`` mapping (None: the defaults) as a :class:`RuntimeSpec`."""
    if data is None:
        return RuntimeSpec()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: runtime must be a mapping")
    try:
        return RuntimeSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, (RuntimeSpec,))) from None
