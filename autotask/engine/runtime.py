"""How networks are trained on a device: precision, TF32, channels-last, torch.compile and
where each data split lives.

:class:`RuntimeSpec` is the validated setting (study YAML ``runtime:``, architecture files
for ``autotask evaluate``); :meth:`RuntimeSpec.resolve` turns it into a :class:`Runtime` for
one device, with every ``auto`` decided. Only the settings that change numerics
(precision, TF32) enter the group-result cache key (:meth:`Runtime.numerics`); the fp32
default adds nothing, so keys of plain fp32 runs are the keys they always were.

Example::

    runtime:
      precision: auto        # auto (bf16 on CUDA when supported, else fp32) | bf16 | fp16 | fp32
      tf32: null             # null: on for CUDA
      channels_last: null    # null: on for CUDA with image inputs and a convolutional backbone
      compile: false         # true: torch.compile (inductor); or a backend name, e.g. aot_eager
      data_fraction: 0.5     # splits larger than this share of free device memory stay on the host
      data_budget_mb: null   # a fixed budget instead ($AUTOTASK_DATA_BUDGET_MB)
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from autotask.engine.runtime_spec import DATA_BUDGET_ENV, Precision, RuntimeSpec, parse_runtime
from autotask.errors import ConfigError
from autotask.suites.base import Split

__all__ = [
    "DATA_BUDGET_ENV",
    "FP16_BALANCERS",
    "HostSplit",
    "Precision",
    "Runtime",
    "RuntimeSpec",
    "free_device_memory",
    "parse_runtime",
    "place_splits",
    "split_nbytes",
]

#: Balancers whose update scales linearly with the losses and that never inspect gradients
#: for finiteness, so a GradScaler's scaled losses and skipped steps are exact for them.
FP16_BALANCERS = ("equal", "static")
#: Compiled variants kept per forward function (dynamo's ``recompile_limit``, default 8).
COMPILE_VARIANTS = 256
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    """Resolved runtime of one device (see :meth:`RuntimeSpec.resolve`)."""

    device: torch.device
    precision: Literal["bf16", "fp16", "fp32"] = "fp32"
    tf32: bool = False
    channels_last: bool = False
    compile_backend: str | None = None
    #: bytes of split data allowed on the device; None: no limit
    data_budget: int | None = None

    def numerics(self) -> dict[str, Any]:
        """The settings that change results, for cache keys; empty for plain fp32."""
        out: dict[str, Any] = {}
        if self.precision != "fp32":
            out["precision"] = self.precision
        if self.tf32:
            out["tf32"] = True
        return out

    @staticmethod
    def all_numerics() -> list[dict[str, Any]]:
        """Every value :meth:`numerics` can take, plain fp32 first."""
        return [
            Runtime(torch.device("cuda"), precision=p, tf32=t).numerics()
            for p in ("fp32", "bf16", "fp16")
            for t in (False, True)
        ]

    def describe(self) -> str:
        """One line for the console, e.g. ``cuda:0, bf16 autocast, tf32, channels-last``."""
        parts = [
            str(self.device),
            "fp32" if self.precision == "fp32" else f"{self.precision} autocast",
        ]
        parts += ["tf32"] if self.tf32 else []
        parts += ["channels-last"] if self.channels_last else []
        parts += [f"compile ({self.compile_backend})"] if self.compile_backend else []
        return ", ".join(parts)

    def check_balancer(self, name: str) -> None:
        """fp16 trains with a GradScaler, exact only for :data:`FP16_BALANCERS`."""
        if self.precision == "fp16" and name not in FP16_BALANCERS:
            raise ConfigError(
                f"runtime: precision fp16 (loss scaling) supports the balancers "
                f"{', '.join(FP16_BALANCERS)}, not {name!r}; use bf16"
            )

    def apply_backend_flags(self) -> None:
        """Set the process-wide TF32 flags (CUDA only)."""
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = self.tf32
            torch.backends.cudnn.allow_tf32 = self.tf32

    def autocast(self) -> AbstractContextManager[Any]:
        """Autocast to the resolved precision (a no-op for fp32)."""
        dtype = _DTYPES.get(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A GradScaler for fp16, else None."""
        if self.precision != "fp16":
            return None
        return torch.amp.GradScaler(self.device.type)

    def uses_channels_last(self, net: nn.Module, input_shape: tuple[int, ...]) -> bool:
        """Channels-last applies to image inputs ``(C, H, W)`` into convolutional networks."""
        return (
            self.channels_last
            and len(input_shape) == 3
            and any(isinstance(m, nn.Conv2d) for m in net.modules())
        )

    def batch(self, x: torch.Tensor, channels_last: bool) -> torch.Tensor:
        """``x`` on the device (asynchronously from pinned memory), channels-last if asked."""
        x = x.to(self.device, non_blocking=True)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def compile_network(self, net: nn.Module) -> Callable[[], None]:
        """Run every block and head of ``net`` through torch.compile; returns the undo.

        Each submodule's ``forward`` is compiled, not the modules themselves, so module
        identity, parameters, state-dict keys and forward hooks (the gradient balancers'
        feature taps) stay as they are. A no-op without a compile backend.
        """
        if self.compile_backend is None:
            return _nothing
        modules = [
            m for name in ("blocks", "heads") for m in getattr(net, name, nn.ModuleDict()).values()
        ] or [net]
        # gradient balancers run several backward passes through one graph (retain_graph),
        # which compiled backward functions with donated buffers refuse
        torch._functorch.config.donated_buffer = False
        # every block shares its class's forward: one compiled variant per block structure
        # (stage slice, head kind) of the trees a search trains, more than dynamo's default
        dynamo_config = torch._dynamo.config
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, COMPILE_VARIANTS)
        for module in modules:
            module.forward = torch.compile(module.forward, backend=self.compile_backend)

        def restore() -> None:
            for module in modules:
                module.__dict__.pop("forward", None)

        return restore


def _nothing() -> None:
    return None


class HostSplit(Split):
    """A split kept on the host (too large for the device's data budget), pinned where CUDA
    is present: training gathers each batch there and copies it to the device."""


def split_nbytes(split: Split) -> int:
    """Bytes of a split's inputs, targets and masks."""
    tensors = [split.x, *split.targets.values(), *split.masks.values()]
    return sum(t.numel() * t.element_size() for t in tensors)


def place_splits(splits: Mapping[str, Split], runtime: Runtime) -> dict[str, Split]:
    """Splits on the device while they fit its data budget (smallest first); the others stay
    on the host, pinned where CUDA is present, and training copies them batch by batch."""
    budget = runtime.data_budget
    placed: dict[str, Split] = {}
    used = 0
    for name in sorted(splits, key=lambda s: split_nbytes(splits[s])):
        split, size = splits[name], split_nbytes(splits[name])
        if budget is None or used + size <= budget:
            placed[name], used = split.to(runtime.device), used + size
        else:
            placed[name] = _on_host(split, pin=torch.cuda.is_available())
    return {name: placed[name] for name in splits}


def _on_host(split: Split, *, pin: bool) -> HostSplit:
    def host(t: torch.Tensor) -> torch.Tensor:
        t = t.to("cpu")
        return t.pin_memory() if pin else t

    return HostSplit(
        x=host(split.x),
        targets={k: host(v) for k, v in split.targets.items()},
        masks={k: host(v) for k, v in split.masks.items()},
    )


def free_device_memory(device: torch.device | None = None, *, collect: bool = True) -> None:
    """Return cached CUDA blocks to the driver (after a network, a trial, an OOM)."""
    if collect:
        gc.collect()
    if torch.cuda.is_available() and (device is None or device.type == "cuda"):
        torch.cuda.empty_cache()
