"""TAG (Fifty et al., NeurIPS 2021): grouping by the selection notebooks' rule, checked.

``tests/data/papers/tag/matrices.json`` holds the matrices of the TAG authors' notebooks.
The notebooks score a group of 2+ tasks by giving task ``t`` the mean of ``R[t][u]``
over the other members, a singleton -1e6 (TAG, CS) or ``R[t][t]`` (HOA), and search
exhaustively for the best at most ``k`` groups covering all tasks (mean over tasks of
each task's best score; maximised for TAG/CS, minimised for HOA).

Note: the README calls ``celeba_HOA`` "validation accuracy in %", but the stored values
are already the notebook's errors ``100 - accuracy`` (``7.72 = 100 - 92.28``), so they
are minimised as they are.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from autotask.errors import ConfigError, DataError, UnknownNameError
from autotask.select import group_pool, group_tasks, read_affinity
from autotask.select.grouping import group_name
from tests.data import TAG_MATRICES as MATRICES

KEYS = ["celeba_TAG", "celeba_CS", "celeba_HOA", "taskonomy_TAG", "taskonomy_CS", "taskonomy_HOA"]
CELEBA = [k for k in KEYS if k.startswith("celeba")]


@functools.cache
def entry(key: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(MATRICES.read_text())[key]
    return data


def is_hoa(key: str) -> bool:
    return entry(key)["kind"] == "HOA"


@functools.cache
def notebook_groups(key: str) -> tuple[list[tuple[int, ...]], npt.NDArray[np.float64]]:
    """Every group and its per-task scores, as the notebooks compute them.

    Scores are oriented so that higher is better (HOA errors negated); non-members -inf.
    """
    e = entry(key)
    tasks, r = e["tasks"], e["R"]
    n = len(tasks)
    groups, rows = [], []
    for mask in range(1, 1 << n):
        group = tuple(i for i in range(n) if mask >> i & 1)
        row = np.full(n, -np.inf)
        for t in group:
            if len(group) == 1:
                row[t] = r[tasks[t]][tasks[t]] if is_hoa(key) else -1e6
            else:
                acc = 0.0
                for u in group:  # the notebooks add R[t][u] member by member
                    if u != t:
                        acc += r[tasks[t]][tasks[u]]
                row[t] = acc / (len(group) - 1)
        if is_hoa(key):
            row[list(group)] *= -1
        groups.append(group)
        rows.append(row)
    return groups, np.array(rows)


def exhaustive(key: str, k: int) -> float:
    """Best value over every selection of at most k (<= 3) groups, as the notebooks do."""
    _, scores = notebook_groups(key)
    n = scores.shape[1]
    if k == 1:
        best = scores.sum(axis=1).max()
    elif k == 2:
        best = max(
            np.maximum(scores[j], scores[: j + 1]).sum(axis=1).max() for j in range(len(scores))
        )
    else:
        assert k == 3
        best = -np.inf
        for j in range(len(scores)):  # i <= j <= l: repeats cover the smaller selections
            pairs = np.maximum(scores[: j + 1], scores[j])
            triples = np.maximum(pairs[:, None, :], scores[None, j:, :]).sum(axis=2)
            best = max(best, triples.max())
    return float(best) / n


def value_of(key: str, names: tuple[str, ...]) -> float:
    """The notebook value of a selection given by group names ``[a,b,c]``."""
    tasks = entry(key)["tasks"]
    groups, scores = notebook_groups(key)
    index = {group_name(tasks[i] for i in g): row for row, g in enumerate(groups)}
    return float(scores[[index[name] for name in names]].max(axis=0).mean())


def served_set_dp(key: str, k_max: int) -> list[float]:
    """An independent DP: a best selection of <= k groups = a best partition of the tasks
    into <= k served sets, set S worth max over groups G ⊇ S of S's scores in G."""
    groups, scores = notebook_groups(key)
    n = scores.shape[1]
    block = [-np.inf] * (1 << n)
    for g, row in zip(groups, scores, strict=True):
        gmask = sum(1 << t for t in g)
        sub = gmask
        while sub:
            value = sum(row[t] for t in range(n) if sub >> t & 1)
            block[sub] = max(block[sub], value)
            sub = (sub - 1) & gmask
    best = [0.0] + [-np.inf] * ((1 << n) - 1)
    values = []
    for _ in range(k_max):
        new = list(best)
        for mask in range(1, 1 << n):
            low = mask & -mask
            rest = mask ^ low
            sub = rest
            while True:
                s = sub | low
                new[mask] = max(new[mask], block[s] + best[mask ^ s])
                if sub == 0:
                    break
                sub = (sub - 1) & rest
        best = new
        values.append(best[(1 << n) - 1] / n)
    return values


def solve(key: str, k: int, **kwargs: Any) -> Any:
    loaded = read_affinity(MATRICES, key)
    return group_tasks(
        loaded.matrix,
        loaded.tasks,
        max_groups=k,
        direction=loaded.direction,
        singleton=kwargs.pop("singleton", loaded.singleton),
        **kwargs,
    )


def oriented(key: str, total: float) -> float:
    return -total if is_hoa(key) else total


def test_matrices_as_documented() -> None:
    for key in KEYS:
        loaded = read_affinity(MATRICES, key)
        assert loaded.tasks == entry(key)["tasks"]
        assert loaded.direction == ("minimize" if is_hoa(key) else "maximize")
    hoa = read_affinity(MATRICES, "celeba_HOA").matrix
    assert hoa.max() < 50  # errors already (100 - accuracy), not accuracies
    assert hoa[0, 0] == pytest.approx(100 - 92.28)


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("k", [2, 3])
def test_grouping_matches_exhaustive_search(key: str, k: int) -> None:
    got = solve(key, k)
    assert got.exact and len(got.names) <= k
    expected = exhaustive(key, k)
    assert oriented(key, got.total) == pytest.approx(expected, abs=1e-9)
    # the chosen groups, scored independently by the notebook rule, reach that value
    assert value_of(key, got.names) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("key", CELEBA)
def test_celeba_every_k_against_a_served_set_dp(key: str) -> None:
    n = len(entry(key)["tasks"])
    expected = served_set_dp(key, n)
    got = [oriented(key, solve(key, k).total) for k in range(1, n + 1)]
    assert got == pytest.approx(expected, abs=1e-9)
    assert got == sorted(got)  # more groups never hurt
    assert value_of(key, solve(key, 5).names) == pytest.approx(got[4])


@pytest.mark.parametrize("key", ["celeba_TAG", "taskonomy_CS"])
def test_excluding_singletons_equals_the_notebooks_minus_a_million(key: str) -> None:
    for k in (2, 4):
        excluded = solve(key, k)
        penalised = solve(key, k, singleton=-1e6)
        assert excluded.total == pytest.approx(penalised.total)
        assert all("," in name for name in excluded.names)


def test_group_pool_scores_follow_the_rule() -> None:
    loaded = read_affinity(MATRICES, "taskonomy_TAG")
    pool = group_pool(loaded.matrix, loaded.tasks)
    assert len(pool) == 2**5 - 1 - 5  # singletons excluded
    r = loaded.matrix
    row = pool.names.index("[depth_l,key_l,ss_l]")
    assert pool.values[row, 0] == pytest.approx((r[0, 1] + r[0, 3]) / 2)
    assert pool.values[row, 3] == pytest.approx((r[3, 0] + r[3, 1]) / 2)
    assert np.isnan(pool.values[row, 2])
    diag = group_pool(loaded.matrix, loaded.tasks, singleton="diagonal")
    assert diag.values[diag.names.index("[norm_l]"), 2] == r[2, 2]


def test_candidate_groups_beyond_sixteen_tasks_and_bad_input() -> None:
    rng = np.random.default_rng(0)
    n = 18
    blocks = np.repeat(np.arange(6), 3)
    r = np.where(blocks[:, None] == blocks[None, :], 1.0, 0.0) + 0.01 * rng.random((n, n))
    got = group_tasks(r, max_groups=6)
    assert not got.exact and "among candidate groups" in got.method
    assert got.total > 0.9  # recovers the planted triples
    with pytest.raises(ConfigError, match="at most 16 tasks"):
        group_tasks(r, max_groups=6, exact=True)
    with pytest.raises(UnknownNameError, match="Did you mean 'celeba_TAG'"):
        read_affinity(MATRICES, "celeba_TAGG")
    with pytest.raises(ConfigError, match="choose one with --key"):
        read_affinity(MATRICES)
    with pytest.raises(ConfigError, match="singleton must be"):
        group_tasks(r[:4, :4], max_groups=2, singleton="nope")


def test_an_estimated_matrix_is_read_onto_each_task(tmp_path: Path) -> None:
    """`autotask affinity --json` stores values[s][t] from s onto t: read transposed, the
    diagonal (no affinity) as 0, a task alone scoring 0, maximised."""
    values = [[None, 0.9, -0.2], [0.1, None, 0.0], [0.3, 0.4, None]]
    matrix = {"tasks": ["a", "b", "c"], "values": values, "estimator": "lookahead"}
    for document in ({"study": "s", "matrix": matrix, "candidates": []}, matrix):
        path = tmp_path / "aff.json"
        path.write_text(json.dumps(document))
        loaded = read_affinity(path)
        assert loaded.tasks == ["a", "b", "c"] and loaded.kind == "lookahead"
        assert loaded.matrix.tolist() == [[0.0, 0.1, 0.3], [0.9, 0.0, 0.4], [-0.2, 0.0, 0.0]]
        assert (loaded.direction, loaded.singleton) == ("maximize", 0.0)
        with pytest.raises(ConfigError, match="drop --key"):
            read_affinity(path, "x")
    got = group_tasks(loaded.matrix, loaded.tasks, max_groups=1, singleton=loaded.singleton)
    # one group of all three: a gets (0.1 + 0.3) / 2 from b and c, b (0.9 + 0.4) / 2, c -0.1
    assert got.names == ("[a,b,c]",) and got.total == pytest.approx((0.2 + 0.65 - 0.1) / 3)
    matrix["values"] = [[0, 1], [1, 0]]
    path.write_text(json.dumps(matrix))
    with pytest.raises(DataError, match="2, 2"):
        read_affinity(path)
