"""``autotask search --workers K`` / ``--gpus``: local worker processes with one progress bar.

Each worker is an ``autotask worker`` process joined to the same study through the same
storage URL, so they share the study's budget exactly (see :mod:`autotask.search.backend.workers`)
and train every network once. With ``--gpus 0,1`` there is one worker per entry (an entry
listed twice puts two workers on one GPU), each with ``CUDA_VISIBLE_DEVICES`` set to its GPU
and ``--device cuda``. The entries are indices into the GPUs this process sees: under an
inherited ``CUDA_VISIBLE_DEVICES=2,3`` (a Slurm allocation), ``--gpus 0,1`` means physical
GPUs 2 and 3, and an entry of that mask may be a UUID (``GPU-...``, ``MIG-...``). Without
``--gpus``, :func:`plan_placement` puts every worker on an explicit ``--device``, or else
spreads them round-robin over the visible GPUs when there are several. The process that
started the pool trains on the first GPU of the list and, while the workers run, holds its
data on the host and returns its GPU memory
(:meth:`~autotask.engine.runner.Runner.device_data_released`). The storage URL reaches the workers
through their environment (``AUTOTASK_STORAGE``), never their command line, which ``ps``
shows to every user of the machine. On Ctrl-C or SIGTERM every worker gets the same signal:
running trials end FAIL with ``fail_reason: interrupted`` (and are re-run when the study
resumes), finished ones are kept.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from autotask.errors import ConfigError, DeviceFailed

__all__ = [
    "STORAGE_ENV",
    "VISIBLE_DEVICES_ENV",
    "Placement",
    "WorkerPool",
    "parse_gpus",
    "physical_gpus",
    "plan_placement",
    "visible_devices",
    "worker_environments",
]

#: The storage URL of the workers started here (``autotask worker --storage`` reads it too).
STORAGE_ENV = "AUTOTASK_STORAGE"
#: The CUDA device mask: a process sees only the GPUs it lists, renumbered from 0.
VISIBLE_DEVICES_ENV = "CUDA_VISIBLE_DEVICES"

#: Seconds the workers get to stop after SIGINT or SIGTERM before they are killed.
STOP_GRACE_S = 30.0
#: Times one worker is started again after a sticky device error ended it.
DEVICE_RESTARTS = 3
#: Exit codes of a worker stopped by SIGINT or SIGTERM (see :mod:`autotask.interrupts`).
INTERRUPTED_CODES = frozenset(
    code for s in (signal.SIGINT, signal.SIGTERM) for code in (128 + s, -s)
)


def parse_gpus(text: str | None) -> list[str]:
    """``"0,1"`` -> ``["0", "1"]``; each entry must be a GPU index, one worker per entry
    (``"0,0"``: two workers share GPU 0)."""
    if text is None:
        return []
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    if not gpus or not all(g.isdigit() for g in gpus):
        raise ConfigError(f"--gpus: expected comma-separated GPU indices, got {text!r}")
    return [str(int(g)) for g in gpus]


def visible_devices(env: Mapping[str, str]) -> list[str] | None:
    """The entries of an inherited ``CUDA_VISIBLE_DEVICES`` (indices or UUIDs), None when it
    is unset (every GPU visible). Like CUDA, the list ends at an empty or negative entry
    (``CUDA_VISIBLE_DEVICES=-1`` hides every GPU)."""
    mask = env.get(VISIBLE_DEVICES_ENV)
    if mask is None:
        return None
    entries: list[str] = []
    for entry in (e.strip() for e in mask.split(",")):
        if not entry or entry.startswith("-"):
            break
        entries.append(entry)
    return entries


def physical_gpus(
    gpus: Sequence[str], env: Mapping[str, str], device_count: int | None = None
) -> list[str]:
    """What each ``--gpus`` index names in a worker's ``CUDA_VISIBLE_DEVICES``: the index-th
    entry of the inherited mask, else the index itself. An index beyond the GPUs this process
    sees (the mask, and ``device_count`` when given) is a :class:`ConfigError`."""
    visible = visible_devices(env)
    limit = len(visible) if visible is not None else device_count
    if visible is not None and device_count is not None:
        limit = min(len(visible), device_count)
    for gpu in gpus:
        if limit is not None and int(gpu) >= limit:
            raise ConfigError(f"--gpus {gpu}: {_seen(visible, limit, env)}")
    if visible is None:
        return list(gpus)
    return [visible[int(gpu)] for gpu in gpus]


def _seen(visible: list[str] | None, limit: int, env: Mapping[str, str]) -> str:
    """The GPUs this process sees, for an error message."""
    if visible is not None:
        mask = f"{VISIBLE_DEVICES_ENV}={env.get(VISIBLE_DEVICES_ENV, '')!r}"
        if limit == 0:
            return f"this process sees no GPU ({mask})"
        named = ", ".join(f"{i} is {device}" for i, device in enumerate(visible[:limit]))
        return f"this process sees {limit} GPU(s) ({mask}); --gpus counts within them: {named}"
    if limit == 0:
        return "this process sees no GPU"
    return f"this process sees {limit} GPU(s), --gpus 0 to {limit - 1}"


def worker_environments(
    gpus: Sequence[str],
    inherited: Mapping[str, str],
    *,
    workers: int,
    storage_url: str,
    device_count: int | None = None,
) -> list[dict[str, str]]:
    """The environment of each worker: ``inherited`` with the storage URL, and with ``gpus``
    one worker per entry whose ``CUDA_VISIBLE_DEVICES`` is its GPU (see :func:`physical_gpus`);
    without ``gpus``, ``workers`` workers that inherit the mask unchanged."""
    base = {**inherited, STORAGE_ENV: storage_url}
    if not gpus:
        return [dict(base) for _ in range(workers)]
    return [
        {**base, VISIBLE_DEVICES_ENV: gpu} for gpu in physical_gpus(gpus, inherited, device_count)
    ]


@dataclass(frozen=True)
class Placement:
    """Where ``autotask search`` trains: its own device and its workers' GPUs."""

    #: One worker per entry, each an index into the visible GPUs (empty: no GPU placement).
    gpus: list[str]
    #: The device of the process that starts the pool (None: :func:`pick_device`'s choice).
    parent_device: str | None
    #: The ``--device`` every worker gets (an explicit CPU or MPS device; a CUDA device
    #: becomes ``gpus``), None to leave it to each worker.
    worker_device: str | None = None
    #: A line for the console on a placement the user did not spell out.
    note: str | None = None


_CUDA_DEVICE = re.compile(r"cuda(?::(\d+))?")


def plan_placement(
    gpus: Sequence[str],
    workers: int,
    device: str | None,
    env: Mapping[str, str],
    device_count: int,
) -> Placement:
    """Place the search and its workers. ``gpus`` (from ``--gpus``): one worker per entry,
    the search itself on the first; else with ``workers`` > 1: an explicit ``device``
    (``--device`` or ``$AUTOTASK_DEVICE``) for every worker, or, when ``device_count`` > 1
    GPUs are visible, the workers round-robin over them (worker j on GPU j mod N).
    ``device_count`` is 0 without CUDA."""
    if gpus:
        if device_count == 0:
            raise ConfigError(f"--gpus {','.join(gpus)}: CUDA is not available")
        physical_gpus(gpus, env, device_count)
        return Placement(list(gpus), f"cuda:{gpus[0]}")
    if workers <= 1:
        return Placement([], device)
    if device is not None:
        cuda = _CUDA_DEVICE.fullmatch(device.strip())
        if cuda is None:
            return Placement([], device, worker_device=device)
        # its index is checked where the search itself opens it (pick_device)
        return Placement([cuda.group(1) or "0"] * workers, device)
    if device_count > 1:
        spread = [str(j % device_count) for j in range(workers)]
        note = (
            f"{workers} workers spread round-robin over {device_count} GPUs "
            f"(--gpus {','.join(spread)}); --gpus or --device to choose"
        )
        return Placement(spread, "cuda:0", note=note)
    return Placement([], None)


@dataclass
class WorkerPool:
    """K ``autotask worker`` processes for one study."""

    study_file: Path
    storage_url: str
    study_name: str
    trials: int
    workers: int
    timeout: float | None = None
    seed: int | None = None
    gpus: Sequence[str] = ()
    #: the workers' ``--device`` when no GPUs are given (None: each picks the best)
    device: str | None = None
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)
    #: times each worker was started again after its device failed
    restarts: list[int] = field(default_factory=list)
    _launches: list[tuple[list[str], dict[str, str]]] = field(default_factory=list)

    def command(self, device: str | None) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "autotask",
            "worker",
            str(self.study_file),
            "--study-name",
            self.study_name,
            "--trials",
            str(self.trials),
            "--quiet",
            "--no-confirm",  # the process that started the pool confirms once they end
        ]
        if self.timeout is not None:
            cmd += ["--timeout", str(self.timeout)]
        if self.seed is not None:
            cmd += ["--seed", str(self.seed)]
        if device is not None:
            cmd += ["--device", device]
        return cmd

    def start(self) -> None:
        """Start the workers (one per entry of ``gpus`` when given, see
        :func:`worker_environments`)."""
        environments = worker_environments(
            self.gpus, os.environ, workers=self.workers, storage_url=self.storage_url
        )
        # with GPUs: the one GPU its CUDA_VISIBLE_DEVICES leaves each worker
        device = "cuda" if self.gpus else self.device
        for env in environments:
            self._launches.append((self.command(device), env))
            self.restarts.append(0)
            self._spawn(len(self._launches) - 1)

    def _spawn(self, slot: int) -> None:
        cmd, env = self._launches[slot]
        # a file, not a pipe: a chatty worker never blocks; closed by close()
        log = tempfile.TemporaryFile()  # noqa: SIM115
        process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
        if slot < len(self.processes):
            self.logs[slot].close()
            self.processes[slot], self.logs[slot] = process, log
        else:
            self.processes.append(process)
            self.logs.append(log)

    def restart_failed_devices(self) -> list[int]:
        """Start again each worker that stopped because its device context failed (exit
        code :attr:`DeviceFailed.exit_code`: its trial is recorded FAIL, the study goes
        on), at most :data:`DEVICE_RESTARTS` times a worker; the slots restarted."""
        restarted = []
        for slot, process in enumerate(self.processes):
            code = process.poll()
            if code == DeviceFailed.exit_code and self.restarts[slot] < DEVICE_RESTARTS:
                self.restarts[slot] += 1
                self._spawn(slot)
                restarted.append(slot)
        return restarted

    def running(self) -> bool:
        return any(p.poll() is None for p in self.processes)

    def wait(self, on_tick: Callable[[], None], interval: float = 1.0) -> list[int]:
        """Call ``on_tick`` every ``interval`` seconds until every worker has exited
        (restarting those whose device failed, see :meth:`restart_failed_devices`)."""
        while self.running() or self.restart_failed_devices():
            on_tick()
            time.sleep(interval)
        on_tick()
        return [int(p.returncode) for p in self.processes]

    def interrupt(self, signum: int = signal.SIGINT) -> None:
        """``signum`` (SIGINT or SIGTERM) to every worker, then SIGKILL to those still
        running after a grace period (they ignore a second SIGINT or SIGTERM)."""
        for p in self.processes:
            if p.poll() is None:
                p.send_signal(signum)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in self.processes:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def errors(self) -> list[str]:
        """The last stderr line of each worker that exited with an error."""
        lines = []
        for p, log in zip(self.processes, self.logs, strict=True):
            if p.returncode and p.returncode not in INTERRUPTED_CODES:
                log.seek(0)
                text = log.read().decode(errors="replace").strip().splitlines()
                lines.append(text[-1] if text else f"worker exited with code {p.returncode}")
        return lines

    def close(self) -> None:
        """Close the workers' log files."""
        for log in self.logs:
            log.close()
