"""File locks beside a SQLite database: exclusive across holders, and no file left behind."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path

from autotask.store.locks import FileLock, study_lock

HOLDERS = 4
CYCLES = 300


def test_no_lock_file_remains_after_release(tmp_path: Path) -> None:
    lock = study_lock(f"sqlite:///{tmp_path}/study.db", "study:gate")
    assert isinstance(lock, FileLock)
    for _ in range(3):
        with lock:
            assert lock.path.exists()
        assert not lock.path.exists()
    assert list(tmp_path.iterdir()) == []
    lock.release()  # idempotent, also when the file is gone


def test_separate_locks_exclude_each_other_while_files_come_and_go(tmp_path: Path) -> None:
    path = tmp_path / "study.db-autotask-x.lock"
    inside = 0
    overlaps: list[int] = []
    entered = [0] * HOLDERS
    counter = threading.Lock()  # guards the counters, not the critical section

    def holder(index: int) -> None:
        nonlocal inside
        lock = FileLock(path)  # one lock object (and file description) per holder
        for _ in range(CYCLES):
            with lock:
                with counter:
                    inside += 1
                    if inside > 1:
                        overlaps.append(inside)
                entered[index] += 1
                time.sleep(0.0002)  # let the others queue on this very file
                with counter:
                    inside -= 1

    threads = [threading.Thread(target=holder, args=(i,)) for i in range(HOLDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == []
    assert entered == [CYCLES] * HOLDERS
    assert not path.exists()


def _hold_repeatedly(path: str, marker: str, cycles: int) -> int:
    """In a child process: take the lock ``cycles`` times; while holding it, create
    ``marker`` exclusively (it exists only if another holder is inside). Returns overlaps."""
    lock = FileLock(Path(path))
    overlaps = 0
    for _ in range(cycles):
        with lock:
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                overlaps += 1
                continue
            os.close(fd)
            time.sleep(0.0002)
            os.unlink(marker)
    return overlaps


def test_separate_processes_exclude_each_other(tmp_path: Path) -> None:
    path, marker = tmp_path / "study.db-autotask-p.lock", tmp_path / "inside"
    context = multiprocessing.get_context("fork")
    with context.Pool(3) as pool:
        overlaps = pool.starmap(_hold_repeatedly, [(str(path), str(marker), CYCLES)] * 3)
    assert overlaps == [0, 0, 0]
    assert not path.exists() and not marker.exists()
