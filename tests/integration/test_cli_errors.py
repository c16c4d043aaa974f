"""Bad input: each is one line on stderr and exit code 2, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotask.cli import main

GOOD_SPACE = "search_space: {optimizer: {epochs: 2}}\ntrials: 1\n"


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    return int(info.value.code or 0), capsys.readouterr().err


CASES = {
    "malformed-yaml": ("name: x\nsuite: {name: digits\n", "malformed YAML"),
    "unknown-suite": (
        "name: x\nsuite: {name: digitz}\n" + GOOD_SPACE,
        "unknown suite 'digitz'. Did you mean 'digits'?",
    ),
    "unknown-task": (
        "name: x\nsuite: {name: digits, tasks: [digit, nope]}\n" + GOOD_SPACE,
        "unknown task 'nope'",
    ),
    "task-twice": (
        "name: x\nsuite: {name: digits, tasks: [digit, parity, digit]}\n" + GOOD_SPACE,
        "task listed twice",
    ),
    "unknown-balancer": (
        "name: x\nsuite: digits\nsearch_space: {balancers: [{name: eqaul}]}\n",
        "unknown balancer 'eqaul'. Did you mean 'equal'?",
    ),
    "empty-partition": (
        "name: x\nsuite: digits\nsearch_space: {partition: {max_groups: 0}}\n",
        "max_groups",
    ),
    "typo-key": (
        "name: x\nsuite: digits\ntrails: 3\n",
        "unknown key 'trails' (did you mean 'trials'?)",
    ),
    "bad-depth": (
        "name: x\nsuite: digits\nsearch_space: {branching: {depths: [7]}}\n",
        "branch depth 7",
    ),
    "negative-trials": ("name: x\nsuite: digits\ntrials: -3\n", "trials"),
    "bad-suite-param": ("name: x\nsuite: {name: synthetic, n_groups: 9, n_tasks: 3}\n", "n_groups"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_study_files(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text, message = CASES[case]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "study.yaml").write_text(text)
    code, err = run_cli(["search", "study.yaml"], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / "studies").exists()  # rejected before anything is written


def test_bad_csv_names_the_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.csv").write_text("a,b,y\n1,2,3\n4,5,6\n7,8,9\n")
    (tmp_path / "study.yaml").write_text(
        "name: x\nsuite:\n  name: tabular\n  path: data.csv\n"
        "  tasks: [{name: yield, column: yld, kind: regression}]\n"
    )
    code, err = run_cli(["search", "study.yaml"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "yld" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "missing.yaml"], "no such study file"),
        (["status", "nope"], "no study 'nope'"),
        (["export", "nope", "--storage", "sqlite:///x.db"], "no study 'nope'"),
        (
            ["status", "nope", "--storage", "postgresql+psycopg://u:secret@127.0.0.1:1/db"],
            "cannot open database",
        ),
        (["status", "nope", "--storage", "not-a-url"], "not a database URL"),
        (["evaluate", "missing.yaml"], "no such file"),
        (["evaluate", "arch.yaml", "--seeds", "a,b"], "--seeds"),
        (["search", "study.yaml", "--trials", "-1"], "Invalid value for '--trials'"),
        (["search", "study.yaml", "--workers", "0"], "Invalid value for '--workers'"),
        (["search", "study.yaml", "--gpus", "x"], "--gpus: expected comma-separated GPU indices"),
        (["serch", "study.yaml"], "No such command 'serch'. Did you mean 'search'?"),
        (["status"], "Missing argument"),
    ],
)
def test_bad_commands(
    args: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "arch.yaml").write_text("suite: digits\nnetworks: [{tasks: [digit]}]\n")
    (tmp_path / "study.yaml").write_text("name: x\nsuite: digits\n")
    code, err = run_cli(args, capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert "secret" not in err
    assert not (tmp_path / "studies").exists()


def test_status_reports_retried_trials() -> None:
    import optuna

    from autotask.cli.search import _retries

    failed = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL)
    retry = optuna.trial.create_trial(
        value=1.0, system_attrs={"failed_trial": 0, "retry_history": [0]}
    )
    study = optuna.create_study()
    study.add_trials([failed, retry])
    assert _retries(study.get_trials()) == {0: 1}
