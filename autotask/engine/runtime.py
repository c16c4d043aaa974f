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
import copy
import gc
import types
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import torch
import torch._functorch.config
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
    "eager_copy",
    "fp32_precision",
    "free_device_memory",
    "parse_runtime",
    "place_splits",
    "resident_nbytes",
    "split_nbytes",
]

#: Balancers whose update scales linearly with the losses and that never inspect gradients
#: for finiteness, so a GradScaler's scaled losses and skipped steps are exact for them.
FP16_BALANCERS = ("equal", "static")
#: Compiled variants kept per compiled module (dynamo's ``recompile_limit``, default 8):
#: training and evaluation, with and without gradients, a last short batch (3 in a
#: plain run), autocast, channels-last; past it the module silently runs eager.
COMPILE_VARIANTS = 32
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

    @contextlib.contextmanager
    def backend_flags(self) -> Iterator[None]:
        """TF32 on or off for CUDA matmuls and cuDNN, and cuDNN's autotuner on (batches keep
        one shape, so each convolution is timed once); the process's own settings are
        restored on exit (a no-op off CUDA). Only torch's ``fp32_precision`` API is used:
        mixing it with the legacy ``allow_tf32`` setters makes torch raise."""
        if self.device.type != "cuda":
            yield
            return
        benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = True
        try:
            with fp32_precision("tf32" if self.tf32 else "ieee"):
                yield
        finally:
            torch.backends.cudnn.benchmark = benchmark

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
        feature taps) stay as they are. Each module gets compiled graphs of its own and
        holds them without a reference cycle (:func:`_compiled_forward`). A copy of the
        network must be made by :func:`eager_copy`. A no-op without a compile backend.
        """
        if self.compile_backend is None:
            return _nothing
        modules = [
            m for name in ("blocks", "heads") for m in getattr(net, name, nn.ModuleDict()).values()
        ] or [net]
        # gradient balancers run several backward passes through one graph (retain_graph),
        # which compiled backward functions with donated buffers refuse
        torch._functorch.config.donated_buffer = False
        dynamo_config = torch._dynamo.config
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, COMPILE_VARIANTS)
        for module in modules:
            module.forward = _compiled_forward(module, self.compile_backend)

        def restore() -> None:
            for module in modules:
                module.__dict__.pop("forward", None)

        return restore


def _nothing() -> None:
    return None


def _compiled_forward(module: nn.Module, backend: str) -> Callable[..., Any]:
    """``module``'s (class) forward through torch.compile, compiled for this module alone.

    Dynamo keeps compiled graphs on the code object it runs and limits how many one code
    object holds (``accumulated_recompile_limit``, 256). ``torch.compile(module.forward)``
    would put every block of a class, of every network the process trains, on one code
    object (the class's ``forward``, or torch's one wrapper of bound methods): past the
    limit each further structure silently runs eager, for the rest of the process. Here
    each module runs through a function with a code object of its own, so its graphs (and
    its recompilations, :data:`COMPILE_VARIANTS`) are its own and are freed with it. The
    function holds the module weakly, so a module and its compiled forward form no
    reference cycle: a network dropped in the middle of training (a pruned trial) is freed
    at once, compiled graphs included, without ``gc.collect``.
    """
    forward = type(module).forward
    owner = weakref.ref(module)

    def call(*args: Any, **kwargs: Any) -> Any:
        return forward(owner(), *args, **kwargs)

    code = call.__code__.replace(co_name=f"{type(module).__name__}_forward")  # a new object
    own = types.FunctionType(code, call.__globals__, code.co_name, None, call.__closure__)
    return torch.compile(own, backend=backend)


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def eager_copy(net: ModuleT) -> ModuleT:
    """A deep copy of ``net`` whose modules run their own class ``forward``, uncompiled.

    The forwards :meth:`Runtime.compile_network` sets run the modules they were compiled
    for: a plain :func:`copy.deepcopy` would share them, and the copy would compute with
    the original's parameters and buffers (``torch.func.functional_call`` on the copy
    would substitute nothing, and its BatchNorm would update the original's statistics).
    """
    twin = copy.deepcopy(net)
    for module in twin.modules():
        module.__dict__.pop("forward", None)
    return twin


@contextlib.contextmanager
def fp32_precision(precision: Literal["tf32", "ieee"]) -> Iterator[None]:
    """Set the fp32 precision of CUDA matmuls and cuDNN (convolutions and RNNs alike) and
    restore the previous values on exit."""
    backends: tuple[Any, ...] = (
        torch.backends.cuda.matmul,
        torch.backends.cudnn.conv,  # type: ignore[attr-defined]
        torch.backends.cudnn.rnn,
    )
    saved = [backend.fp32_precision for backend in backends]
    for backend in backends:
        backend.fp32_precision = precision
    try:
        yield
    finally:
        for backend, value in zip(backends, saved, strict=True):
            backend.fp32_precision = value


class HostSplit(Split):
    """A split kept on the host (too large for the device's data budget): training gathers
    each batch there, into pinned memory where the device is CUDA, and copies it over."""


#: Copies of a split training holds at once: the training split is shuffled by one gather
#: per epoch (``x[order]`` beside ``x``); the others are read in place.
RESIDENT_COPIES = {"train": 2}


def split_nbytes(split: Split) -> int:
    """Bytes of a split's inputs, targets and masks."""
    tensors = [split.x, *split.targets.values(), *split.masks.values()]
    return sum(t.numel() * t.element_size() for t in tensors)


def resident_nbytes(name: str, split: Split) -> int:
    """Device bytes a split needs while training runs (its epoch's shuffled copy included)."""
    return split_nbytes(split) * RESIDENT_COPIES.get(name, 1)


def place_splits(splits: Mapping[str, Split], runtime: Runtime) -> dict[str, Split]:
    """Splits on the device while they fit its data budget (smallest first, the training
    split counted with its shuffled copy); the others stay on the host, where training
    gathers each batch and copies it to the device."""
    budget = runtime.data_budget
    placed: dict[str, Split] = {}
    used = 0
    for name in sorted(splits, key=lambda s: resident_nbytes(s, splits[s])):
        split, size = splits[name], resident_nbytes(name, splits[name])
        if budget is None or used + size <= budget:
            placed[name], used = split.to(runtime.device), used + size
        else:
            placed[name] = _on_host(split)
    return {name: placed[name] for name in splits}


def _on_host(split: Split) -> HostSplit:
    """The split's tensors on the host, not copied where they already are there (and not
    pinned: each batch is gathered into a pinned buffer of its own)."""
    return HostSplit(
        x=split.x.to("cpu"),
        targets={k: v.to("cpu") for k, v in split.targets.items()},
        masks={k: v.to("cpu") for k, v in split.masks.items()},
    )


def free_device_memory(device: torch.device | None = None, *, collect: bool = True) -> None:
    """Return cached CUDA blocks to the driver (after a network, a trial, an OOM)."""
    if collect:
        gc.collect()
    if torch.cuda.is_available() and (device is None or device.type == "cuda"):
        torch.cuda.empty_cache()
