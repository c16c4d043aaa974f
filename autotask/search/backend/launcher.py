"""``autotask search --workers K`` / ``--gpus``: local worker processes with one progress bar.

Each worker is an ``autotask worker`` process joined to the same study through the same
storage URL, so they share the study's budget exactly (see :mod:`autotask.search.backend.workers`)
and train every network once. With ``--gpus 0,1`` there is one worker per GPU, each with
``CUDA_VISIBLE_DEVICES`` set to its GPU. The storage URL reaches the workers through their
environment (``AUTOTASK_STORAGE``), never their command line, which ``ps`` shows to every
user of the machine. On Ctrl-C or SIGTERM every worker gets the same signal: running
trials end FAIL with ``fail_reason: interrupted`` (and are re-run when the study
resumes), finished ones are kept.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from autotask.errors import ConfigError

__all__ = ["STORAGE_ENV", "WorkerPool", "parse_gpus"]

#: The storage URL of the workers started here (``autotask worker --storage`` reads it too).
STORAGE_ENV = "AUTOTASK_STORAGE"

#: Seconds the workers get to stop after SIGINT or SIGTERM before they are killed.
STOP_GRACE_S = 30.0
#: Exit codes of a worker stopped by SIGINT or SIGTERM (see :mod:`autotask.interrupts`).
INTERRUPTED_CODES = frozenset(
    code for s in (signal.SIGINT, signal.SIGTERM) for code in (128 + s, -s)
)


def parse_gpus(text: str | None) -> list[str]:
    """``"0,1"`` -> ``["0", "1"]``; each entry must be a GPU index."""
    if text is None:
        return []
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    if not gpus or not all(g.isdigit() for g in gpus):
        raise ConfigError(f"--gpus: expected comma-separated GPU indices, got {text!r}")
    if len(set(gpus)) != len(gpus):
        raise ConfigError(f"--gpus: a GPU is listed twice in {text!r}")
    return gpus


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
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)

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
        """Start the workers (one per GPU when GPUs are given)."""
        if self.gpus:
            for gpu in self.gpus:
                env = {**os.environ, STORAGE_ENV: self.storage_url, "CUDA_VISIBLE_DEVICES": gpu}
                self._spawn(self.command("cuda"), env)
        else:
            for _ in range(self.workers):
                self._spawn(self.command(None), {**os.environ, STORAGE_ENV: self.storage_url})

    def _spawn(self, cmd: list[str], env: dict[str, str]) -> None:
        # a file, not a pipe: a chatty worker never blocks; closed by close()
        log = tempfile.TemporaryFile()  # noqa: SIM115
        self.logs.append(log)
        self.processes.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log))

    def running(self) -> bool:
        return any(p.poll() is None for p in self.processes)

    def wait(self, on_tick: Callable[[], None], interval: float = 1.0) -> list[int]:
        """Call ``on_tick`` every ``interval`` seconds until every worker has exited."""
        while self.running():
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
