"""Count the torch calls that would make the host wait for an accelerator, on any device.

A CUDA (or MPS) kernel runs asynchronously; the host only waits when it needs a value
(``item``, ``float(t)``, ``if t.any():``), a blocking copy to the host, a blocking
host-to-device copy (``torch.tensor(..., device=...)``), or an output whose size depends
on the data (``nonzero``, ``masked_select``, ``t[bool_mask]``, ``bincount``). Those calls
are what :class:`SyncCounter` counts, so a CPU-only test can check that code is free of
them, or that their number does not grow with the number of batches or chunks.

On the CPU every tensor lives on the host, so the counter cannot tell a device tensor
from a host one: a copy counts when its *target* is the CPU (``.cpu()``, ``.numpy()``,
``.to("cpu")``, ``.to(t.device)`` for a CPU tensor ``t``, ``dst.copy_(src)`` into a CPU
tensor), unless it is ``non_blocking``. That over-counts copies of tensors already on the
host, which is the safe side for "does not grow with the chunks" checks.

Example::

    with SyncCounter() as syncs:
        evaluate_metrics(net, split, kinds)
    assert syncs.count == 2, syncs.calls
"""

from __future__ import annotations

import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["SYNCING", "SyncCounter", "mark_host"]

#: Names of torch functions and tensor methods that read a value on the host (always a
#: device synchronisation) or size their output by the data (a synchronisation on CUDA).
SYNCING: frozenset[str] = frozenset(
    {
        "item",
        "__float__",
        "__int__",
        "__bool__",
        "__index__",
        "__complex__",
        "__array__",
        "__format__",
        "tolist",
        "numpy",
        "cpu",
        "nonzero",
        "argwhere",
        "masked_select",
        "masked_scatter",
        "bincount",
        "unique",
        "unique_consecutive",
        "repeat_interleave",
    }
)
_HERE = str(Path(__file__).resolve())
_TORCH = str(Path(torch.__file__).resolve().parent)


def _is_bool_index(index: object) -> bool:
    """``index`` (or an element of an index tuple) is a boolean or uint8 mask tensor."""
    parts = index if isinstance(index, tuple | list) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype in (torch.bool, torch.uint8) for p in parts)


def _to_host(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
    """``Tensor.to(*args, **kwargs)`` is a blocking copy whose target is the CPU."""
    device, _, non_blocking, _ = torch._C._nn._parse_to(*args[1:], **kwargs)
    return device is not None and device.type == "cpu" and not non_blocking


def _syncs(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
    if name in SYNCING:
        return True
    if name == "to":
        return _to_host(args, kwargs)
    if name == "copy_":
        dst = args[0]
        blocking = not (kwargs.get("non_blocking") or (len(args) > 2 and args[2]))
        return isinstance(dst, torch.Tensor) and dst.device.type == "cpu" and blocking
    if name in ("__getitem__", "__setitem__", "index_put_", "index_put"):
        return len(args) > 1 and _is_bool_index(args[1])
    if name == "where":
        return len(args) + len(kwargs) == 1  # torch.where(condition) is nonzero
    if name in ("tensor", "as_tensor"):
        return kwargs.get("device") is not None  # a blocking host-to-device copy
    return False


def _caller() -> str:
    """``path:line`` of the innermost frame outside torch and this file."""
    for frame in reversed(traceback.extract_stack()):
        path = str(Path(frame.filename).resolve())
        if path != _HERE and not path.startswith(_TORCH):
            return f"{Path(frame.filename).name}:{frame.lineno}"
    return "?"


class SyncCounter(TorchFunctionMode):
    """A torch function mode that counts (and names, with their caller) syncing calls.

    ``calls`` lists ``"name @ file:line"`` per syncing call; ``count`` is its length and
    ``by_site`` counts them per call site. ``ignore`` skips callers whose ``file:line``
    string it accepts (e.g. a test's own reads of the results).
    """

    def __init__(
        self, ignore: Callable[[str], bool] | None = None, *, host_aware: bool = False
    ) -> None:
        super().__init__()
        self.calls: list[str] = []
        self._ignore = ignore
        #: with ``host_aware``, tensors that came through a blocking copy to the host, or
        #: were computed from such tensors (and constants made by factories) only, are
        #: host tensors: reading them is free (the first copy to the host is counted)
        self._host_aware = host_aware
        self._paused = 0

    @contextmanager
    def host_only(self) -> Iterator[None]:
        """Code inside runs on host tensors by contract (e.g. a solver given a Gramian
        already copied to the host): nothing is counted, and the tensors it returns must
        be marked with :func:`mark_host` by the caller."""
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    @property
    def count(self) -> int:
        return len(self.calls)

    @property
    def by_site(self) -> Counter[str]:
        return Counter(self.calls)

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if self._paused:
            return func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        inputs = [t for t in _flat((args, kwargs)) if isinstance(t, torch.Tensor)]
        made = [t for t in inputs if not _is_made(t)]  # constants made on the way drop out
        on_host = self._host_aware and bool(made) and all(_is_host(t) for t in made)
        if _syncs(name, args, kwargs) and not on_host:
            site = _caller()
            if self._ignore is None or not self._ignore(site):
                self.calls.append(f"{name} @ {site}")
        result = func(*args, **kwargs)
        if self._host_aware and (on_host or _copies_to_host(name, args, kwargs)):
            if any(result is t for t in inputs):  # on the CPU, x.cpu() is x: tag a view
                result = result.view_as(result)
            for out in _flat(result):
                if isinstance(out, torch.Tensor):
                    setattr(out, _HOST, True)
        elif self._host_aware and not made:  # a factory's constant, or made from those
            for out in _flat(result):
                if isinstance(out, torch.Tensor):
                    setattr(out, _MADE, True)
        return result


_HOST = "_sync_counter_host"
_MADE = "_sync_counter_constant"


def _is_made(t: torch.Tensor) -> bool:
    return bool(getattr(t, _MADE, False))


def mark_host(t: torch.Tensor) -> torch.Tensor:
    """``t`` counted as a host tensor by a host-aware :class:`SyncCounter`."""
    setattr(t, _HOST, True)
    return t


def _is_host(t: torch.Tensor) -> bool:
    return bool(getattr(t, _HOST, False))


def _copies_to_host(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
    if name in ("cpu", "numpy"):
        return True
    return name == "to" and bool(args) and _to_host(args, kwargs)


def _flat(value: Any) -> list[Any]:
    """Tensors and other leaves of nested tuples, lists and dicts."""
    if isinstance(value, dict):
        return [x for v in value.values() for x in _flat(v)]
    if isinstance(value, tuple | list):
        return [x for v in value for x in _flat(v)]
    return [value]
