"""Fuzzing the YAML loaders: random mutations of the shipped presets either load or fail
with one :class:`~autotask.errors.AutotaskError` line (exit code 2 in the CLI), never with
another exception (a traceback).

Each test draws 500 examples, derandomized (the same examples on every run).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autotask.errors import AutotaskError
from autotask.search.space import load_search_space
from autotask.search.study_config import load_study_config
from autotask.spec import load_spec

REPO = Path(__file__).resolve().parents[2]
FUZZ = settings(
    max_examples=500,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

#: A path that climbs out of the working folder (written without a '..' literal).
CLIMBING = os.path.join(os.pardir, os.pardir, "x")
#: Values a mutation may put anywhere: every YAML scalar type, extremes, containers.
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.sampled_from([0, -1, 1, 2**63, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", "null", CLIMBING, "subprocess:getoutput", "digits", "equal"]),
    st.lists(st.one_of(st.integers(-3, 50), st.text(max_size=4), st.none()), max_size=4),
    st.dictionaries(st.text(max_size=6), st.integers(-3, 50), max_size=3),
)


def _study_presets() -> list[dict[str, Any]]:
    """Each study preset with its search space file inlined (the mutations reach it too)."""
    presets = []
    for path in sorted((REPO / "studies").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        space = data.get("search_space")
        if isinstance(space, str):
            data["search_space"] = yaml.safe_load((path.parent / space).read_text())
        presets.append(data)
    return presets


def _space_presets() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in sorted((REPO / "search_spaces").glob("*.yaml"))]


def _architecture() -> dict[str, Any]:
    """An exported-style architecture: suite, interface, trees, balancer, optimizer, info."""
    return {
        "suite": {"name": "digits", "params": {"seed": 0}},
        "interface": {
            "input_shape": [64],
            "heads": {
                "digit": ["classification", 10],
                "parity": ["binary", 1],
                "ink": ["regression", 1],
            },
        },
        "networks": [
            {
                "tasks": ["digit", "parity"],
                "branch_at": 1,
                "children": [{"tasks": ["digit"]}, {"tasks": ["parity"]}],
            },
            {"tasks": ["ink"], "balancer": {"name": "equal"}},
        ],
        "balancer": {"name": "dwa", "params": {"temperature": 2.0}},
        "optimizer": {"name": "adam", "lr": 0.003, "epochs": 5, "batch_size": 64},
        "backbone": {"name": "mlp", "params": {"width": 32, "depth": 3}},
        "metrics": {"delta_m_val": 1.0},
        "runtime": {"precision": "fp32"},
    }


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path into ``node`` (mappings and lists), the root included."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, (*prefix, i))
    return found


def _mutate(data: Any, draw: Callable[..., Any]) -> Any:
    """One mutation at a random place: replace a value, delete an entry, add a key, or
    wrap a value in a list."""
    path = draw(st.sampled_from(_paths(data)))
    op = draw(st.sampled_from(["replace", "delete", "add", "wrap"]))
    if not path:
        return draw(VALUES) if op == "replace" else data
    parent = data
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if op == "replace":
        parent[last] = draw(VALUES)
    elif op == "delete":
        del parent[last]
    elif op == "wrap":
        parent[last] = [parent[last]]
    elif isinstance(parent[last], dict):
        parent[last][draw(st.text(max_size=8))] = draw(VALUES)
    else:
        parent[last] = {draw(st.text(max_size=8)): draw(VALUES)}
    return data


@st.composite
def mutated(draw: Callable[..., Any], presets: list[dict[str, Any]]) -> str:
    """YAML text of a preset after one to three mutations, sometimes with its text cut."""
    data = yaml.safe_load(yaml.safe_dump(draw(st.sampled_from(presets))))  # a deep copy
    for _ in range(draw(st.integers(1, 3))):
        data = _mutate(data, draw)
    text = yaml.safe_dump(data, allow_unicode=True)
    if draw(st.integers(0, 9)) == 0:  # damaged text: a cut and a stray character
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.sampled_from(["{", "[", ":", "'", "\t", "- ", "\x00"]))
    return text


def _check_loader(loader: Callable[[Path], Any], text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            loader(path)
        except AutotaskError as exc:
            message = str(exc)
            assert message and "\n" not in message, message
        # any other exception fails the test: the CLI would print a traceback


@FUZZ
@given(mutated(_study_presets()))
def test_study_files_load_or_fail_in_one_line(text: str) -> None:
    _check_loader(load_study_config, text)


@FUZZ
@given(mutated(_space_presets()))
def test_search_space_files_load_or_fail_in_one_line(text: str) -> None:
    _check_loader(load_search_space, text)


@FUZZ
@given(mutated([_architecture()]))
def test_architecture_files_load_or_fail_in_one_line(text: str) -> None:
    _check_loader(load_spec, text)


@pytest.mark.parametrize("loader", [load_study_config, load_search_space, load_spec])
def test_the_presets_themselves_load(loader: Callable[[Path], Any]) -> None:
    """The unmutated documents are valid, so the mutations start from working files."""
    if loader is load_spec:
        texts = [yaml.safe_dump(_architecture())]
    elif loader is load_search_space:
        texts = [yaml.safe_dump(d) for d in _space_presets()]
    else:
        texts = [yaml.safe_dump(d) for d in _study_presets()]
    for text in texts:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "preset.yaml"
            path.write_text(text)
            loader(path)
