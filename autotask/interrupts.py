"""SIGTERM handled like Ctrl-C: the process stops cleanly instead of dying on the spot.

Schedulers stop a job with SIGTERM (Slurm on ``scancel`` or at the time limit,
Kubernetes on eviction), then SIGKILL after a grace period. Python's default SIGTERM
action ends the process at once: a running trial would stay RUNNING until its heartbeat
went stale and its network claims until their own grace period. Under
:func:`interrupt_on_signals` SIGTERM and SIGINT both raise :class:`Interrupted` (a
:class:`KeyboardInterrupt`), so every ``except KeyboardInterrupt`` / ``finally`` on the way
out runs: the trial ends FAIL with ``fail_reason: interrupted`` and the claims are
released. The process then exits with ``128 + signal`` (130 for SIGINT, 143 for SIGTERM).

A signal that arrives during a database call takes effect once the call returns (it is
looked at again every few milliseconds), so that no connection or lock is left half used.
Only the first signal interrupts: later ones (a scheduler or a terminal often signals
every process of a job or process group, and ``autotask search --workers`` forwards the
signal to its workers as well) are ignored while the process stops, so they cannot cut
the recording of the interrupted trial short. SIGKILL still stops it at once.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

__all__ = [
    "SIGNALS",
    "Interrupted",
    "Received",
    "interrupt_on_signals",
    "interrupt_signal",
]

#: The signals that stop autotask cleanly.
SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Modules whose code an interrupt must not cut short: an exception raised in the middle
#: of a database call can leave a connection checked out or a SQLite write lock held, and
#: the process then hangs on it while it stops.
DATABASE_MODULES = ("sqlalchemy", "optuna.storages", "psycopg", "sqlite3")
#: Seconds after which a signal that arrived during a database call is looked at again.
DEFER_S = 0.05


def _in_database_code(frame: FrameType | None) -> bool:
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if module.startswith(DATABASE_MODULES):
            return True
        frame = frame.f_back
    return False


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by SIGINT or SIGTERM under :func:`interrupt_on_signals`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def interrupt_signal(exc: BaseException) -> int:
    """The signal behind an interrupt (or an exception raised from one, such as Click's
    ``Abort``): SIGINT for a plain :class:`KeyboardInterrupt`."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, Interrupted):
            return current.signum
        current = current.__cause__ or current.__context__
    return int(signal.SIGINT)


@dataclass
class Received:
    """The first signal :func:`interrupt_on_signals` turned into :class:`Interrupted`."""

    signum: int | None = None

    def exit_code(self) -> int:
        """``128 + signal``: 130 for SIGINT (Ctrl-C, also when none was received), 143 for
        SIGTERM."""
        return 128 + (self.signum or signal.SIGINT)


@contextmanager
def interrupt_on_signals() -> Iterator[Received]:
    """Turn the first SIGINT or SIGTERM into :class:`Interrupted`; ignore later ones.

    Yields the :class:`Received` record. The previous handlers are restored on exit.
    Outside the main thread (where handlers cannot be installed) this does nothing.
    """
    received = Received()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    pending = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal pending
        if received.signum is not None and not pending:
            name = signal.Signals(signum).name
            os.write(2, f"autotask: {name} ignored, already stopping\n".encode())
            return
        received.signum = received.signum or signum
        if _in_database_code(frame):  # finish the statement first, then stop
            pending = True
            timer = threading.Timer(DEFER_S, os.kill, (os.getpid(), received.signum))
            timer.daemon = True
            timer.start()
            return
        pending = False
        raise Interrupted(received.signum)

    previous = {signum: signal.signal(signum, handler) for signum in SIGNALS}
    try:
        yield received
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
