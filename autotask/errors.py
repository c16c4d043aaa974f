"""The exception hierarchy: every error a user can cause is an :class:`AutotaskError`.

The CLI maps these to one-line messages and non-zero exit codes; anything else is a bug.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "AutotaskError",
    "ConfigError",
    "DataError",
    "DeviceFailed",
    "StorageError",
    "TrialDiverged",
    "UnknownNameError",
    "closest",
]


class AutotaskError(Exception):
    """Base class of all user-facing errors."""

    exit_code: int = 2


class ConfigError(AutotaskError):
    """A study, search space or architecture file is malformed or inconsistent."""


class DataError(AutotaskError):
    """A dataset file is missing, malformed or unusable for the declared tasks."""


class UnknownNameError(ConfigError):
    """A name (suite, task, balancer, backbone, ...) that is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        self.kind, self.name = kind, name
        self.known = sorted(known)
        hint = closest(name, self.known)
        suggestion = f" Did you mean {hint!r}?" if hint else ""
        listing = ", ".join(self.known) if self.known else "(none)"
        super().__init__(f"unknown {kind} {name!r}.{suggestion} Known: {listing}")


class StorageError(AutotaskError):
    """The study database cannot be reached, read or written."""


class DeviceFailed(AutotaskError):
    """The accelerator reported an error that leaves this process's device unusable (a
    device-side assert, an illegal memory access): the trial is recorded as failed and the
    process stops, so that a new one (a restarted worker) starts with a fresh context."""

    exit_code = 3


class TrialDiverged(AutotaskError):
    """Training produced a non-finite loss; the network is recorded as diverged."""


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most similar to ``name``, if any is reasonably close."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None
