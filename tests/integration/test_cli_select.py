"""``autotask select`` through the real CLI (in process): tables, matrices, studies, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autotask.cli import main
from autotask.search.scoring import relative_change
from autotask.search.study import BASELINES_ATTR, SearchSession
from autotask.search.study_config import load_study_config
from autotask.spec import BalancerSpec, TaskTree
from autotask.train.result import NetworkResult
from tests.data import TAG_MATRICES as MATRICES

TABLE = """name,tasks,cost,seg,depth,normals
all,seg+depth+normals,1,0.31,0.52,0.20
seg-depth,seg+depth,1,0.29,0.50,
normals,normals,0.5,,,0.18
seg,seg,0.5,0.28,,
"""


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def table(tmp_path: Path) -> Path:
    path = tmp_path / "nets.csv"
    path.write_text(TABLE)
    return path


def test_select_from_a_table(table: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["select", str(table), "--budget", "2", "--direction", "minimize"], capsys)
    assert code == 0, err
    assert "exact: dynamic programme over task subsets" in out
    assert "seg-depth" in out and "normals" in out
    assert "total 0.96  cost 2" in out


def test_sweep_and_json(table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "out.json"
    args = ["select", str(table), "--budget", "2", "--direction", "minimize", "--sweep"]
    code, out, err = run([*args, "--json", str(report)], capsys)
    assert code == 0, err
    assert "Best total at every budget" in out
    data = json.loads(report.read_text())
    assert data["selection"]["total"] == pytest.approx(0.96)
    assert data["selection"]["exact"] is True
    assert [n["name"] for n in data["selection"]["networks"]] == ["seg-depth", "normals", "seg"]
    sweep = {row["budget"]: row["total"] for row in data["sweep"]}
    assert sweep[0.5] is None
    assert sweep[1.0] == pytest.approx(1.03)
    assert sweep[1.5] == pytest.approx(0.97)
    assert sweep[2.0] == pytest.approx(0.96)


def test_partition_and_group_limit(table: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["select", str(table), "--partition", "--max-groups", "2", "--direction", "minimize"]
    code, out, err = run(args, capsys)
    assert code == 0, err
    assert "partition, minimise the sum" in out
    assert "total 0.97" in out  # seg-depth + normals


def test_grouping_from_an_affinity_matrix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "groups.json"
    args = ["select", "--affinity", str(MATRICES), "--key", "taskonomy_HOA", "--max-groups", "3"]
    code, out, err = run([*args, "--json", str(report)], capsys)
    assert code == 0, err
    assert "minimise the mean of per-task scores" in out
    data = json.loads(report.read_text())["selection"]
    assert [n["name"] for n in data["networks"]] == ["s+d+n", "n+k", "t+k"]
    assert data["total"] == pytest.approx(0.09792)


BAD = {
    "missing-task-column": ("tasks,a\na+b,1\n", [], "task column 'b' missing"),
    "serves-no-task": ("name,a,b\nx,1,2\ny,,\n", [], "row 2 ('y') serves no task"),
    "negative-cost": ("a,b,cost\n1,2,-0.5\n", [], "negative cost -0.5"),
    "budget-below-cover": (TABLE, ["--budget", "0.5"], "budget 0.5 is below the cheapest"),
    "bad-direction": (TABLE, ["--direction", "up"], "--direction must be minimize or maximize"),
    "two-sources": (TABLE, ["--affinity", "m.json", "--max-groups", "2"], "give exactly one of"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_exit_code_2(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, extra, message = BAD[case]
    path = tmp_path / "nets.csv"
    path.write_text(text)
    code, _, err = run(["select", str(path), *extra], capsys)
    assert code == 2
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1


def test_affinity_needs_max_groups(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["select", "--affinity", str(MATRICES), "--key", "celeba_TAG"], capsys)
    assert code == 2 and "--affinity needs --max-groups K" in err


STUDY = """
name: sel
suite: {name: digits, seed: 0, tasks: [digit, parity, ink]}
search_space: {optimizer: {epochs: 2}}
trials: 1
"""


def test_select_over_a_study_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A study whose cache holds hand-made results: the selection is scored by Δm."""
    (tmp_path / "sel.yaml").write_text(STUDY)
    url = f"sqlite:///{tmp_path / 'sel.db'}"
    session = SearchSession.open(load_study_config(tmp_path / "sel.yaml"), storage=url)
    ctx = session.context
    higher = ctx.higher_is_better()
    base = {"digit": (0.90, 0.88), "parity": (0.95, 0.94), "ink": (0.50, 0.52)}
    for task, job in ctx.baseline_jobs().items():
        val, test = base[task]
        ctx.cache.put(job, NetworkResult([task], "ok", {task: val}, {task: test}, macs=100), "sel")
    session.study.set_user_attr(
        BASELINES_ATTR, {t: {"val": v, "test": te} for t, (v, te) in base.items()}
    )

    def put(tasks: tuple[str, ...], val: dict[str, float], macs: int, status: str = "ok") -> None:
        job = ctx.job(
            TaskTree(tasks=tasks), ctx.baseline_backbone, ctx.baseline_optimizer, BalancerSpec()
        )
        test = {t: v * 0.99 for t, v in val.items()}
        ctx.cache.put(job, NetworkResult(list(tasks), status, val, test, macs=macs), "sel")

    put(("digit", "parity"), {"digit": 0.93, "parity": 0.96}, 110)
    put(("digit", "parity", "ink"), {"digit": 0.91, "parity": 0.90, "ink": 0.60}, 120)
    put(("ink", "parity"), {"ink": 0.30, "parity": 0.99}, 110, status="diverged")

    report = tmp_path / "sel.json"
    args = ["select", "--study", "sel", "--storage", url, "--budget", "2.2"]
    code, out, err = run([*args, "--json", str(report)], capsys)
    assert code == 0, err
    data = json.loads(report.read_text())["selection"]
    # best within 2.2 single-task units: digit+parity (1.1) with the ink baseline (1.0)
    assert [n["serves"] for n in data["networks"]] == [["ink"], ["digit", "parity"]]
    expected_val = (
        relative_change(0.93, 0.90, higher["digit"])
        + relative_change(0.96, 0.95, higher["parity"])
        + 0.0
    ) / 3
    assert data["delta_m_val"] == pytest.approx(expected_val)
    assert data["total"] == pytest.approx(expected_val)
    assert data["cost"] == pytest.approx(2.1)
    expected_test = (
        relative_change(0.93 * 0.99, 0.88, higher["digit"])
        + relative_change(0.96 * 0.99, 0.94, higher["parity"])
        + 0.0
    ) / 3
    assert data["delta_m_test"] == pytest.approx(expected_test)
    assert "Δm val" in out and "5 cached networks" in out

    code, _, err = run(["select", "--study", "sel", "--storage", url, "--budget", "0.5"], capsys)
    assert code == 2 and "below the cheapest selection" in err
