"""Global RNG streams of networks trained interleaved (grouped, or in lockstep).

Dropout and balancers that draw random numbers use torch's global generators. A network
that trains interleaved with others keeps its own stream: :class:`RngStream` swaps it in
around that network's work, so each draws exactly what it would draw training alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

__all__ = ["RngState", "RngStream"]


@dataclass
class RngState:
    """The CPU generator's state and the current CUDA device's, once this process uses CUDA
    (asking for it earlier would start CUDA in CPU runs, and every device's state would
    open a context on every visible GPU)."""

    cpu: torch.Tensor
    cuda: torch.Tensor | None

    @classmethod
    def capture(cls) -> RngState:
        initialized = torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
        cuda = torch.cuda.get_rng_state() if initialized else None
        return cls(torch.random.get_rng_state(), cuda)

    def restore(self) -> None:
        torch.random.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda)


class RngStream:
    """One network's own global RNG stream.

    ``state`` None: the stream starts from whatever the global generators hold when it is
    first active (a run that seeds itself).
    """

    def __init__(self, state: RngState | None = None) -> None:
        self.state = state

    @contextmanager
    def active(self) -> Iterator[None]:
        """Swap this stream in; on exit keep where it got to and put the outer one back."""
        outer = RngState.capture()
        if self.state is not None:
            self.state.restore()
        try:
            yield
        finally:
            self.state = RngState.capture()
            outer.restore()
