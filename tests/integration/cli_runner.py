"""Running the real ``autotask`` CLI in a subprocess, single-threaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_cli(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AUTOTASK_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "autotask", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
