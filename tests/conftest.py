"""Shared fixtures: single-threaded torch (small models, shared CI cores), tiny studies.

Every test runs under :class:`tests.repository_paths.OpenAudit`: a test that opens a file
outside the repository, the temporary folder and the Python installation fails.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from autotask.engine.cache import MemoryCache
from autotask.search.scoring import TrainingContext
from autotask.spec import BackboneSpec, OptimizerSpec
from autotask.suites.base import Split, Task, TaskSuite
from tests.repository_paths import OpenAudit

os.environ.setdefault("AUTOTASK_THREADS", "1")
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
OPENED = OpenAudit()
sys.addaudithook(OPENED)


@pytest.fixture(autouse=True)
def _opens_only_inside_the_repository(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if it (or its fixtures) opened a file outside the allowed folders."""
    OPENED.where = request.node.nodeid
    start = len(OPENED.outside)
    yield
    OPENED.where = "between tests"
    outside = OPENED.since(start)
    if outside:
        pytest.fail(
            f"opened {len(outside)} file(s) outside the repository: {', '.join(outside[:5])}",
            pytrace=False,
        )


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Files opened outside any test (while collecting) fail the run too."""
    OPENED.enabled = False
    stray = sorted({p for p, where in OPENED.outside if where == "collection"})
    if stray:
        print(f"\nerror: opened outside the repository while collecting: {', '.join(stray)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def make_context(suite: TaskSuite, optimizer: OptimizerSpec, seed: int = 0) -> TrainingContext:
    """A CPU training context with an in-memory cache and the suite's default backbone."""
    return TrainingContext.create(
        suite,
        MemoryCache(),
        seed=seed,
        device=torch.device("cpu"),
        baseline_optimizer=optimizer,
        baseline_backbone=BackboneSpec(**suite.default_backbone),
    )


@pytest.fixture
def device() -> torch.device:
    """The device under test: ``$AUTOTASK_TEST_DEVICE`` (e.g. cuda) or cpu."""
    return torch.device(os.environ.get("AUTOTASK_TEST_DEVICE", "cpu"))


def make_tiny_suite(n: int = 240, seed: int = 0, poison: str | None = None) -> TaskSuite:
    """Three small tasks on random 8-d inputs: classification, binary, regression.

    ``poison`` names a task whose training targets are made infinite (to force divergence).
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    w = torch.randn(8, 3, generator=g)
    z = x @ w
    targets = {
        "cls": (z[:, 0] > 0).long() + (z[:, 0] > 1).long(),
        "bin": (z[:, 1] > 0).float(),
        "reg": z[:, 2] + 0.1 * torch.randn(n, generator=g),
    }
    masks = {t: torch.ones(n, dtype=torch.bool) for t in targets}
    cut1, cut2 = int(n * 0.6), int(n * 0.8)
    parts = {"train": slice(0, cut1), "val": slice(cut1, cut2), "test": slice(cut2, n)}
    splits = {
        name: Split(
            x=x[s],
            targets={t: v[s].clone() for t, v in targets.items()},
            masks={t: m[s] for t, m in masks.items()},
        )
        for name, s in parts.items()
    }
    if poison is not None:
        splits["train"].targets[poison] = torch.full_like(
            splits["train"].targets[poison], float("inf")
        )
    return TaskSuite(
        name="tiny",
        tasks=[
            Task("cls", "classification", 3),
            Task("bin", "binary", 1),
            Task("reg", "regression", 1),
        ],
        splits=splits,
        input_shape=(8,),
        default_backbone={"name": "mlp", "params": {"width": 16, "depth": 3}},
        params={"n": n, "seed": seed, "poison": poison},
    )


def make_tiny_image_suite() -> TaskSuite:
    """The tiny suite with its inputs as 2x4 images, for a CNN with BatchNorm."""
    tiny = make_tiny_suite()
    splits = {
        name: Split(s.x.view(-1, 2, 4), s.targets, s.masks) for name, s in tiny.splits.items()
    }
    return TaskSuite(
        name="tiny-images",
        tasks=tiny.tasks,
        splits=splits,
        input_shape=(2, 4),
        default_backbone={"name": "cnn", "params": {"channels": [4, 6]}},
    )


@pytest.fixture
def tiny_suite() -> TaskSuite:
    return make_tiny_suite()
