"""Running the real ``autotask`` CLI: in a subprocess, single-threaded (:func:`run_cli`), or
in this process (:func:`run_main`, for quick error cases)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from autotask.cli import main


def run_cli(
    *args: str, cwd: Path, timeout: float = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AUTOTASK_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "autotask", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``autotask ARGS`` in this process: its exit code and what it wrote to stderr."""
    code, _, err = run_main_output(args, capsys)
    return code, err


def run_main_output(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``autotask ARGS`` in this process: its exit code, stdout and stderr."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
