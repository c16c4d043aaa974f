"""Affinity for a study: estimate (or reuse) a matrix, store it, and enqueue the
partitions it ranks best as the study's first trials (drawing it is
:mod:`autotask.report.dashboard`'s)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from autotask.affinity.estimators import ProgressCallback, build_estimator
from autotask.affinity.store import load_matrices, save_matrix
from autotask.errors import StorageError
from autotask.search.backend.stored import TAG_ATTR, set_study_record, study_record
from autotask.search.record import trial_attrs
from autotask.search.sampling import partition_params, task_units
from autotask.search.space import SearchSpace
from autotask.select.branching import propose_tree, stage_similarities
from autotask.select.candidates import (
    Candidate,
    community_partition,
    partition_score,
    rank_partitions,
)
from autotask.select.matrix import AffinityMatrix
from autotask.spec import ArchitectureSpec, TaskTree

if TYPE_CHECKING:
    from autotask.search.study import SearchSession

__all__ = [
    "SEEDED_ATTR",
    "TAG_ATTR",
    "community_for_session",
    "estimate_affinity",
    "latest_matrix",
    "rank_for_session",
    "rsa_depth_params",
    "seed_candidates",
    "seed_with_affinity",
    "tag_baseline",
]

logger = logging.getLogger("autotask")

#: Study record (:func:`~autotask.search.study.study_record`): what the affinity seeding
#: enqueued (set once per study).
SEEDED_ATTR = "autotask:affinity_seeded"


def _same_settings(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return all(stored.get(k) == v for k, v in wanted.items())


def estimate_affinity(
    session: SearchSession,
    estimator: str,
    settings: Mapping[str, Any] | None = None,
    *,
    reuse: bool = True,
    progress: ProgressCallback | None = None,
) -> tuple[AffinityMatrix, bool]:
    """The study's affinity matrix from ``estimator``: the stored one with the same
    settings and seed when ``reuse``, else estimated now and stored. Returns the matrix and
    whether it was estimated now."""
    est = build_estimator(estimator, **dict(settings or {}))
    db = session.db
    if db is None:
        raise StorageError("affinity matrices are stored in a study database")
    name = session.study.study_name
    suite_key, seed = session.context.suite.key(), session.context.seed
    if reuse:
        for stored in load_matrices(
            db, study_name=name, suite_key=suite_key, estimator=estimator, seed=seed
        ):
            if _same_settings(stored.settings, est.settings):
                return stored, False
    matrix = est.estimate(session.context, progress)
    save_matrix(db, matrix, study_name=name, suite_key=suite_key, seed=seed)
    return matrix, True


def latest_matrix(session: SearchSession, prefer: str = "lookahead") -> AffinityMatrix | None:
    """The newest matrix stored for this study (suite and seed), ``prefer``'s if any."""
    if session.db is None:
        return None
    matrices = load_matrices(
        session.db,
        study_name=session.study.study_name,
        suite_key=session.context.suite.key(),
        seed=session.context.seed,
    )
    preferred = [m for m in matrices if m.estimator == prefer]
    chosen = preferred or matrices
    return chosen[0] if chosen else None


def tag_baseline(
    session: SearchSession,
    matrix: AffinityMatrix,
    on_start: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train the grouping TAG's rule selects from ``matrix`` (one fully shared network per
    group, the baselines' settings and equal weighting), store its score on the study
    (``TAG_ATTR``) and return it; a stored one for the same matrix is returned as it is.
    ``on_start`` sees how many networks are left to train, before training."""
    study = session.study
    stored = study_record(study, TAG_ATTR)
    if isinstance(stored, dict) and stored.get("estimator") == matrix.estimator:
        return stored
    best = rank_for_session(session, matrix, 1)[0]
    context = session.context
    spec = ArchitectureSpec(
        networks=tuple(TaskTree(tasks=tuple(group)) for group in best.groups),
        optimizer=context.baseline_optimizer,
        backbone=context.baseline_backbone,
    )
    if on_start is not None:
        on_start(context.runner.pending(context.network_jobs(spec)))
    score = context.score(spec)
    summary = {
        **score.summary(),
        "architecture": spec.describe(),
        "estimator": matrix.estimator,
        "affinity_score": best.score,
    }
    set_study_record(study, TAG_ATTR, summary)
    return summary


def rank_for_session(session: SearchSession, matrix: AffinityMatrix, count: int) -> list[Candidate]:
    """The best partitions under the study's search space (its ``max_groups`` and the
    blocks of tasks it keeps ``together``)."""
    space = session.config.search_space
    tasks = session.context.tasks
    return rank_partitions(
        matrix.subset(tasks),
        units=task_units(tasks, space),
        max_groups=space.partition.max_groups,
        count=count,
    )


def community_for_session(session: SearchSession, matrix: AffinityMatrix) -> Candidate | None:
    """The partition of most modularity under the study's search space
    (:func:`~autotask.select.candidates.community_partition`)."""
    space = session.config.search_space
    return community_partition(
        matrix.subset(session.context.tasks),
        units=task_units(session.context.tasks, space),
        max_groups=space.partition.max_groups,
    )


def seed_candidates(session: SearchSession, matrix: AffinityMatrix, count: int) -> list[Candidate]:
    """The partitions a study is seeded with (none when ``count`` is 0): every task in one
    network (the all-in-one baseline's network, trained already, so in a grouping-only
    space this trial trains nothing), the ``count`` best by TAG's rule
    (:func:`rank_for_session`), then the partition of most modularity
    (:func:`~autotask.select.candidates.community_partition`); each once."""
    if count < 1:
        return []
    sub = matrix.subset(session.context.tasks)
    together = (tuple(sub.tasks),)
    proposals = [
        Candidate(together, partition_score(sub, together), exact=False),
        *rank_for_session(session, matrix, count),
        community_for_session(session, matrix),
    ]
    candidates: list[Candidate] = []
    for candidate in proposals:
        if candidate is not None and all(c.groups != candidate.groups for c in candidates):
            candidates.append(candidate)
    return candidates


def seed_with_affinity(
    session: SearchSession, matrix: AffinityMatrix, count: int
) -> list[Candidate]:
    """Enqueue the seeding partitions (:func:`seed_candidates`) as the study's first
    trials (once per study, and only before any trial exists). Branch depths, balancer and
    optimizer settings are left to the sampler, except that an ``rsa`` matrix also
    proposes each group's branch depth (:func:`rsa_depth_params`)."""
    study = session.study
    if (
        count < 1
        or study_record(study, SEEDED_ATTR) is not None
        or study.get_trials(deepcopy=False)
    ):
        return []
    tasks = session.context.tasks
    space = session.config.search_space
    candidates = seed_candidates(session, matrix, count)
    for rank, candidate in enumerate(candidates):
        params = partition_params(candidate.groups, tasks, space)
        if matrix.estimator == "rsa":
            params.update(rsa_depth_params(matrix, candidate.groups, space))
        study.enqueue_trial(
            params,
            user_attrs=trial_attrs(
                seeded_by=f"affinity:{matrix.estimator}",
                affinity_rank=rank,
                affinity_score=candidate.score,
            ),
            skip_if_exists=True,
        )
    set_study_record(
        study,
        SEEDED_ATTR,
        {
            "estimator": matrix.estimator,
            "candidates": [
                {"groups": [list(g) for g in c.groups], "score": c.score} for c in candidates
            ],
        },
    )
    return candidates


def rsa_depth_params(
    matrix: AffinityMatrix, groups: Sequence[Sequence[str]], space: SearchSpace
) -> dict[str, Any]:
    """``depth[g<i>]`` for each group from its representation similarities: the first branch
    point of the group's tree (:func:`~autotask.select.branching.propose_tree`) at the
    mean similarity of all task pairs over all stages (a group more alike than the
    typical pair shares longer), moved to the nearest depth the search space allows.
    Groups follow the sampler's numbering (the order in which the partition opens them)."""
    depths = space.branching.depths
    stages = stage_similarities(matrix)
    if len(depths) < 2 or len(stages) == 0:
        return {}
    deepest = len(stages)
    n = len(matrix.tasks)
    pairs = stages[:, ~np.eye(n, dtype=bool)]
    threshold = float(np.nanmean(pairs)) if pairs.size else 0.0
    params: dict[str, Any] = {}
    for index, group in enumerate(groups):
        if len(group) < 2:
            continue
        idx = [matrix.index(t) for t in group]
        wanted = propose_tree(group, stages[:, idx][:, :, idx], threshold).branch_at
        as_stage = deepest if wanted is None else wanted
        params[f"depth[g{index}]"] = min(
            depths, key=lambda d: (abs((deepest if d is None else d) - as_stage), d is None)
        )
    return params
