"""``autotask affinity``: estimate inter-task affinity for a study and store it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
import yaml

from autotask.cli.app import app
from autotask.cli.console import out, progress_bar, table
from autotask.cli.stages import affinity_stage
from autotask.errors import ConfigError

#: The registered estimators (``list_estimators()``), named here so that the help needs no
#: torch; a test keeps the two equal.
ESTIMATOR_NAMES = ("gradcos", "lookahead", "pairwise", "rsa")
STORAGE_HELP = "SQLAlchemy URL of the study database (default: sqlite:///studies/<name>.db)."


def _parse_settings(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are read as YAML scalars (``10`` -> int, ``null``)."""
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            settings[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: cannot read value {value!r}") from None
    return settings


@app.command()
def affinity(
    study_file: Path = typer.Argument(..., help="Study YAML (see studies/)."),
    estimator: str = typer.Option(
        "lookahead", "--estimator", "-e", help=f"One of: {', '.join(ESTIMATOR_NAMES)}."
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Estimator setting key=value (repeatable), e.g. --set every=5."
    ),
    storage: str | None = typer.Option(None, help=STORAGE_HELP),
    study_name: str | None = typer.Option(None, help="Study name (default: the YAML's name: key)."),
    seed: int | None = typer.Option(None, min=0, help="Override the study's seed."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1, mps (default: best)."),
    candidates: int = typer.Option(5, min=0, help="Best partitions to list (TAG rule)."),
    force: bool = typer.Option(False, "--force", help="Estimate again even if stored."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Estimate a study's inter-task affinity; rank partitions by it.

    Stores the matrix with the study, draws it on the dashboard, lists the best partitions."""
    from autotask.affinity.estimators import build_estimator
    from autotask.report.dashboard import publish_affinity
    from autotask.search.seeding import (
        community_for_session,
        estimate_affinity,
        rank_for_session,
    )
    from autotask.search.study import SearchSession
    from autotask.search.study_config import load_study_config
    from autotask.select.branching import propose_trees

    config = load_study_config(study_file)
    settings = _parse_settings(set_)
    build_estimator(estimator, **settings)  # unknown names and settings fail before any work
    session = SearchSession.open(
        config, storage=storage, study_name=study_name, seed=seed, device=device
    )
    with progress_bar(quiet or json_out) as progress:
        report, finish = affinity_stage(progress, estimator)
        matrix, fresh = estimate_affinity(
            session, estimator, settings, reuse=not force, progress=report
        )
        finish(matrix, fresh)
    ranked = rank_for_session(session, matrix, candidates)
    community = community_for_session(session, matrix)
    figures = publish_affinity(session, matrix, ranked[0].groups if ranked else None)
    trees = []
    if matrix.estimator == "rsa" and ranked:
        trees = [
            tree.describe()
            for group in ranked[0].groups
            if len(group) > 1
            for tree in propose_trees(matrix, group)
        ]
    summary = {
        "study": session.study.study_name,
        "storage": session.storage_url,
        "estimated_now": fresh,
        "matrix": matrix.to_dict(),
        "candidates": [
            {"groups": [list(g) for g in c.groups], "score": c.score, "exact": c.exact}
            for c in ranked
        ],
        "modularity": (
            None
            if community is None
            else {"groups": [list(g) for g in community.groups], "score": community.score}
        ),
        "figures": figures,
        "branch_proposals": trees,
    }
    if json_out:
        out.print_json(json.dumps(summary, default=str))
        return
    _print(summary)


def _print(summary: dict[str, Any]) -> None:
    from autotask.select.grouping import describe_groups

    m = summary["matrix"]
    tasks = m["tasks"]
    source = "estimated" if summary["estimated_now"] else "stored earlier"
    out.print(
        f"{m['estimator']} affinity ({source}: {m['steps']} measurements, "
        f"{m['seconds']:.1f} s) for study {summary['study']}",
        style="bold",
    )
    rows = [[f"from {s}", *row] for s, row in zip(tasks, m["values"], strict=True)]
    out.print(table("rows: from (source), columns: onto (target)", ["", *tasks], rows))
    ranked = [
        (i + 1, describe_groups(c["groups"]), c["score"])
        for i, c in enumerate(summary["candidates"])
    ]
    if ranked:
        out.print(table("Best partitions (TAG rule)", ["rank", "groups", "score"], ranked))
    community = summary["modularity"]
    if community is not None:
        out.print(
            f"most modularity (a study seeds it too): {describe_groups(community['groups'])} "
            f"(score {community['score']:.4g})"
        )
    for tree in summary["branch_proposals"]:
        out.print(f"proposed tree: {tree}")
    out.print("score: mean affinity onto each task from its group's other tasks (alone: 0)")
    out.print(
        f"Stored in {summary['storage']}; figures on the dashboard: {', '.join(summary['figures'])}"
    )
