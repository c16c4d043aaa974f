"""What the CLI prints: stage progress bars, evaluate's tables, the export hint."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console
from rich.progress import Progress

from autotask.cli.evaluate import _print_summary
from autotask.cli.search import export_command
from autotask.cli.stages import affinity_stage, network_stage
from autotask.select.matrix import AffinityMatrix
from autotask.spec import ArchitectureSpec, OptimizerSpec, TaskTree
from autotask.suites.base import TaskSuite
from tests.conftest import make_context

OPT = OptimizerSpec(lr=0.01, epochs=2, batch_size=32, patience=2)


def _progress() -> tuple[Progress, io.StringIO]:
    sink = io.StringIO()
    console = Console(file=sink, force_terminal=False, width=120)
    return Progress(console=console, disable=False), sink


@pytest.mark.parametrize("fused", [True, False])
def test_network_stage_counts_the_networks_trained(tiny_suite: TaskSuite, fused: bool) -> None:
    ctx = make_context(tiny_suite, OPT)
    ctx.runner.fused = fused
    events = ctx.runner.events
    jobs = list(ctx.baseline_jobs().values())
    pending = ctx.runner.pending(jobs)
    assert pending == len(tiny_suite.tasks)
    progress, _ = _progress()
    started: list[str] = []
    with progress, network_stage(progress, ctx, "baselines", pending) as bar:
        assert events.listeners == 1  # the stage's bar
        with events.subscribed(on_network=started.append):
            ctx.baselines()
        assert progress.tasks[bar].completed == pending  # one step per network that ended
    assert sorted(started) == ["[bin]", "[cls]", "[reg]"]
    assert events.listeners == 0
    assert ctx.runner.pending(jobs) == 0


def test_pending_counts_an_architecture_against_the_cache(tiny_suite: TaskSuite) -> None:
    ctx = make_context(tiny_suite, OPT)
    spec = ArchitectureSpec(networks=(TaskTree(tasks=("bin", "cls")), TaskTree(tasks=("reg",))))
    ctx.score(spec)
    assert ctx.runner.pending(ctx.network_jobs(spec)) == 0
    other = ArchitectureSpec(networks=(TaskTree(tasks=("bin", "cls", "reg")),))
    assert ctx.runner.pending([*ctx.network_jobs(spec), *ctx.network_jobs(other)]) == 1


def test_affinity_stage_reports_epochs_and_a_reused_matrix_in_one_line() -> None:
    progress, sink = _progress()
    matrix = AffinityMatrix(("a", "b"), [[0.0, 1.0], [1.0, 0.0]], "lookahead", steps=12)
    with progress:
        report, finish = affinity_stage(progress, "lookahead")
        report(3, 10, "lookahead")
        task = progress.tasks[0]
        assert (task.completed, task.total, task.fields["status"]) == (
            3,
            10,
            "epochs of the joint network",
        )
        finish(matrix, False)
        assert progress.tasks == []  # no 0/? bar for a stored matrix
    assert "reusing the matrix stored with the study (12 measurements)" in sink.getvalue()


def _summary(seeds: list[int]) -> dict[str, Any]:
    def stats(mean: float, std: float) -> dict[str, float]:
        return {"mean": mean, "std": std}

    def reading(reference: float, contribution: float) -> dict[str, Any]:
        return {"reference": reference, "contribution_to_delta_m": contribution}

    return {
        "architecture": "[a,b]  balancer=equal",
        "seeds": seeds,
        "reference": "paired",
        "metrics": {
            "a": {"metric": "accuracy", "higher_is_better": True},
            "b": {"metric": "mae", "higher_is_better": False},
        },
        "delta_m_val": {**stats(1.5, 0.25 if len(seeds) > 1 else 0.0), "ci95": 0.62},
        "delta_m_test": {**stats(1.25, 0.5 if len(seeds) > 1 else 0.0), "ci95": 1.24},
        "per_task": {
            "val": {"a": reading(0.88, 1.137), "b": reading(0.31, 1.613)},
            "test": {"a": reading(0.79, 0.633), "b": reading(0.41, 1.219)},
        },
        "cost": 0.6,
        "val": {"a": stats(0.9, 0.01), "b": stats(0.3, 0.02)},
        "test": {"a": stats(0.8, 0.01), "b": stats(0.4, 0.02)},
        "val_secondary": {},
        "test_secondary": {},
        "per_seed": {str(s): {"delta_m_val": 1.0 + s, "delta_m_test": 2.0 + s} for s in seeds},
    }


def test_evaluate_with_one_seed_prints_no_spread(capsys: pytest.CaptureFixture[str]) -> None:
    _print_summary(_summary([7]), ["a", "b"])
    text = capsys.readouterr().out
    assert "seed 7;" in text and "[7]" not in text
    assert "±" not in text and "std" not in text
    assert "one seed: no spread measured" in text
    assert "accuracy ↑" in text and "mae ↓" in text and "lower is better" in text
    # each task's reference and contribution to Δm, and what the reference is
    assert "pts" in text and "contribution to Δm" in text
    assert "1.14" in text and "1.61" in text and "0.88" in text
    assert "at the architecture's own training settings" in text


def test_evaluate_with_several_seeds_prints_each_seed(capsys: pytest.CaptureFixture[str]) -> None:
    _print_summary(_summary([0, 1, 2]), ["a", "b"])
    text = capsys.readouterr().out
    assert "seeds 0, 1, 2;" in text
    assert "Per seed" in text
    for seed in (0, 1, 2):
        assert f"+{1.0 + seed:.2f}" in text and f"+{2.0 + seed:.2f}" in text
    assert "Δm val +1.50% ± 0.62" in text and "95 % interval over 3 seeds" in text
    assert "std val 0.25" in text


def test_export_command_is_pasteable_and_never_holds_a_password() -> None:
    assert export_command("digits", "sqlite:///studies/digits.db") == (
        "autotask export digits -o best.yaml"
    )
    line = export_command("my study", "postgresql+psycopg://bob:***@db.example:5432/studies")
    assert line.startswith(
        "autotask export 'my study' -o best.yaml "
        "--storage postgresql+psycopg://bob@db.example:5432/studies"
    )
    assert "***" not in line and "%2A" not in line and "PGPASSWORD" in line
    assert export_command("x", "sqlite:////tmp/a b.db").endswith(
        "--storage 'sqlite:////tmp/a b.db'"
    )
