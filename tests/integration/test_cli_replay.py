"""``autotask replay`` through the CLI: published tables, a study's exported tables, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.data import MTGNET, STANDLEY, TAG_MATRICES
from tests.integration.cli_runner import run_main_output

run = run_main_output


def test_replay_a_gain_table_with_tag_predictions(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "replay", str(MTGNET / "taskonomy_x.csv"), "--gains", str(MTGNET / "taskonomy.csv"),
        "--tag-hoa", str(MTGNET / "taskonomy_TAGHOA.csv"), "--seeds", "1",
        "--budgets", "20,60", "--strategies", "study,hoa,tag-hoa",
    ]  # fmt: skip
    code, out, err = run([*args, "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["tasks"] == ["t0", "t1", "t2", "t3", "t4"] and data["exhaustive"]
    assert data["optimum"]["partition"] == "t0+t2+t4 | t1+t3"
    assert data["optimum"]["delta_m_val"] == pytest.approx(9.672, abs=1e-3)
    rows = {(r["strategy"], r["budget_percent"]): r for r in data["rows"]}
    assert set(rows) == {(s, b) for s in ("study", "hoa", "tag-hoa") for b in (20.0, 60.0)}
    # hoa trains the ten pairs (38.5 %) first: at 20 % it only knows every task alone
    assert rows[("hoa", 20.0)]["answers"] == ["t0 | t1 | t2 | t3 | t4"]
    assert rows[("hoa", 20.0)]["regret_val"] == [pytest.approx(9.672, abs=1e-3)]
    assert rows[("hoa", 60.0)]["regret_val"][0] < rows[("hoa", 20.0)]["regret_val"][0]
    assert all(r["regret_test"] is None for r in data["rows"])  # one split only
    code, out, err = run(args, capsys)
    assert code == 0, err
    assert "optimum t0+t2+t4 | t1+t3" in out and "no worse than hoa" in out


def test_replay_standley_with_the_tag_matrix(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "replay", str(STANDLEY / "results.txt"), "--score-on", str(STANDLEY / "results_test.txt"),
        "--affinity", str(TAG_MATRICES), "--key", "taskonomy_TAG",
        "--affinity-tasks", "s,d,n,k,t", "--seeds", "1", "--budgets", "50",
        "--strategies", "tag-hoa,study+refine", "--json",
    ]  # fmt: skip
    code, out, err = run(args, capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["tasks"] == ["s", "d", "n", "k", "t"]
    assert any("half-size" in note for note in data["notes"])
    for row in data["rows"]:
        assert row["regret_test"] is not None and row["spent_percent"][0] <= 50 + 1e-9


def test_bad_replay_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = ["replay", str(MTGNET / "taskonomy_x.csv"), "--gains", str(MTGNET / "taskonomy.csv")]
    cases = [
        ([*table, "--strategies", "tpe"], "unknown replay strategy 'tpe'"),
        ([*table, "--strategies", "tag-hoa"], "needs an affinity estimate"),
        ([*table, "--budgets", "0,20"], "--budgets"),
        ([*table, "--affinity", str(TAG_MATRICES), "--key", "taskonomy_HOA"], "HOA matrix"),
        ([*table, "--affinity", str(TAG_MATRICES), "--key", "taskonomy_TAG"], "no row for task"),
        (["replay", str(tmp_path / "none.csv")], "does not exist"),
    ]
    for args, message in cases:
        code, _, err = run(args, capsys)
        assert code == 2, (args, err)
        assert message in err and len(err.strip().splitlines()) == 1, err


GROUPING_STUDY = """
name: tiny-replay
suite: {name: synthetic, n_tasks: 3, n_groups: 1, n_samples: 200, seed: 0}
search_space:
  partition: {max_groups: 3}
  branching: {depths: [null]}
  balancers: [{name: equal}]
  optimizer: {lr: 0.003, epochs: 2, batch_size: 64, patience: 2}
trials: 5
seed: 0
confirm: 0
"""


@pytest.mark.slow
def test_a_study_exported_as_tables_replays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """search -> select --export-table -> replay: every partition of three tasks was a
    trial, so the exported table holds every subset and the replay's optimum is the
    study's best trial."""
    study = tmp_path / "tiny.yaml"
    study.write_text(GROUPING_STUDY)
    url = f"sqlite:///{tmp_path / 'tiny.db'}"
    code, _, err = run(["search", str(study), "--storage", url, "--quiet"], capsys)
    assert code == 0, err
    exported = tmp_path / "nets.csv"
    select = ["select", "--study", "tiny-replay", "--storage", url, "--export-table"]
    code, out, err = run([*select, str(exported)], capsys)
    assert code == 0, err
    assert (tmp_path / "nets.test.csv").is_file()
    code, _, err = run([*select, str(exported)], capsys)
    assert code == 2 and "--force" in err
    code, out, err = run(
        ["replay", str(exported), "--values", "contributions", "--score-on",
         str(tmp_path / "nets.test.csv"), "--seeds", "1", "--budgets", "100",
         "--strategies", "study,hoa", "--json"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert data["exhaustive"] and len(data["tasks"]) == 3
    code, status, err = run(["status", "tiny-replay", "--storage", url, "--json"], capsys)
    assert code == 0, err
    best = json.loads(status)["best"]
    assert data["optimum"]["delta_m_val"] == pytest.approx(best["delta_m_val"], abs=1e-6)
    for row in data["rows"]:  # all of it affordable: both find the optimum
        assert row["regret_val"] == [pytest.approx(0.0, abs=1e-9)]
