"""Tests and benchmarks stay inside the repository: the source scan and the open audit."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import OPENED, REPO
from tests.repository_paths import OpenAudit, climbing_paths

#: The scan's own code and tests hold the patterns it looks for, as data.
SCANNER = {REPO / "tests" / "repository_paths.py", Path(__file__).resolve()}
SOURCES = sorted(
    p
    for folder in ("tests", "benchmarks")
    for p in (REPO / folder).rglob("*.py")
    if "__pycache__" not in p.parts and p not in SCANNER
)


def test_no_test_or_benchmark_source_climbs_above_the_repository() -> None:
    assert len(SOURCES) > 40
    found = {str(p.relative_to(REPO)): climbing_paths(p) for p in SOURCES}
    assert {path: lines for path, lines in found.items() if lines} == {}


@pytest.mark.parametrize(
    ("line", "climbs"),
    [
        ('DATA = Path(__file__).resolve().parents[1] / "tests" / "data"', False),
        ('DATA = Path(__file__).resolve().parents[2] / "shared" / "papers"', True),
        ('DATA = Path(__file__).resolve().parents[1].parent / "outside"', True),
        ('REPO = Path(__file__).resolve().parents[1]\nOUTSIDE = REPO.parent / "outside"', True),
        ("HERE = os.path.dirname(os.path.abspath(__file__))\nUP = Path(HERE).parent", False),
        (
            "T = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))\nX = Path(T).parent",
            True,
        ),
        ('TABLE = "../outside/papers/standley/results.txt"', True),
        ('PARTS = os.path.join("data", "..", "..")', True),
        ('URL = "/api/studies/1"', False),
        ('SPACE = "../search_spaces/celeba.yaml"', False),  # from studies/: inside
        ('SPACE = "../search_spaces/../../x.yaml"', True),
        ('README = "/work/shared/papers/README.md"', Path("/work").is_dir()),
    ],
)
def test_the_scan_finds_paths_that_climb(line: str, climbs: bool, tmp_path: Path) -> None:
    source = tmp_path / "benchmarks" / "example.py"
    source.parent.mkdir()
    (tmp_path / "search_spaces").mkdir()
    source.write_text(line + "\n")
    assert bool(climbing_paths(source, root=tmp_path)) == climbs


def test_the_audit_records_opens_outside_the_allowed_folders(tmp_path: Path) -> None:
    audit = OpenAudit(roots=[str(tmp_path / "repo") + "/", "/usr/"])
    audit("open", (str(tmp_path / "repo" / "a.txt"), "r", 0))
    audit("open", ("/usr/lib/x.so", "rb", 0))
    audit("open", (3, "r", 0))  # a file descriptor
    audit("import", ("x",))
    audit("open", (str(tmp_path / "repo" / ".." / "elsewhere.txt").encode(), "w", 0))
    audit("open", ("/usr-local/file", "r", 0))
    audit("open", (tmp_path / "pathlike.txt", "r", 0))
    expected = [str(tmp_path / "elsewhere.txt"), str(tmp_path / "pathlike.txt"), "/usr-local/file"]
    assert audit.since(0) == sorted(expected)


def test_the_installed_audit_sees_this_process(tmp_path: Path) -> None:
    """The hook of conftest is live: an open in a folder it does not allow is recorded."""
    start = len(OPENED.outside)
    saved = OPENED.roots
    OPENED.roots = tuple(r for r in saved if not str(tmp_path).startswith(r.rstrip("/")))
    try:
        (tmp_path / "probe.txt").write_text("x")
    finally:
        OPENED.roots = saved
    assert OPENED.since(start) == [str(tmp_path / "probe.txt")]
    del OPENED.outside[start:]  # recorded on purpose: not this test's failure
    assert sys.prefix + "/" in OPENED.roots or sys.prefix.rstrip("/") + "/" in OPENED.roots
