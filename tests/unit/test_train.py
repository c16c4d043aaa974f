from __future__ import annotations

import pytest
import torch

from autotask.engine.job import NetworkJob
from autotask.engine.loop import train_network
from autotask.engine.losses import masked_loss
from autotask.engine.metrics import task_metric
from autotask.models import interface_for
from autotask.spec import BackboneSpec, BalancerSpec, OptimizerSpec, TaskTree
from autotask.suites.base import TaskSuite


def run(suite: TaskSuite, device: torch.device, **opt: object) -> object:
    data = {k: v.to(device) for k, v in suite.splits.items()}
    settings = {"lr": 0.01, "epochs": 6, "batch_size": 32, "patience": 3, **opt}
    job = NetworkJob(
        suite.key(),
        TaskTree(tasks=("bin", "cls", "reg")),
        BackboneSpec(**suite.default_backbone),
        OptimizerSpec(**settings),  # type: ignore[arg-type]
        BalancerSpec(),
        0,
    )
    return train_network(job, data, interface_for(suite))[1]


def test_training_is_deterministic_and_learns(tiny_suite: TaskSuite, device: torch.device) -> None:
    first, second = run(tiny_suite, device), run(tiny_suite, device)
    assert first.status == "ok"  # type: ignore[attr-defined]
    assert first.val_metrics == second.val_metrics  # type: ignore[attr-defined]
    assert first.history == second.history  # type: ignore[attr-defined]
    assert first.history[-1] < first.history[0]  # type: ignore[attr-defined]
    assert first.val_metrics["bin"] > 0.6  # type: ignore[attr-defined]


def test_metrics_are_reported_at_the_best_validation_epoch(
    tiny_suite: TaskSuite, device: torch.device
) -> None:
    result = run(tiny_suite, device, lr=0.05, epochs=30, patience=2)
    history = result.history  # type: ignore[attr-defined]
    best = min(range(len(history)), key=history.__getitem__) + 1
    assert result.best_epoch == best  # type: ignore[attr-defined]
    assert result.val_loss == min(history)  # type: ignore[attr-defined]
    assert result.epochs_run <= best + 2  # early stopping with patience 2  # type: ignore[attr-defined]


def test_masked_rows_do_not_contribute() -> None:
    out = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    target = torch.tensor([0, 0])
    full = masked_loss("classification", out, target, torch.tensor([True, True]))
    first = masked_loss("classification", out, target, torch.tensor([True, False]))
    assert first < full
    none = masked_loss(
        "regression",
        torch.ones(2, requires_grad=True),
        torch.zeros(2),
        torch.tensor([False, False]),
    )
    assert none.item() == 0.0 and none.requires_grad
    assert (
        task_metric("classification", out, torch.tensor([0, 0]), torch.tensor([True, False])) == 1.0
    )
    assert (
        task_metric(
            "regression", torch.tensor([1.0, 5.0]), torch.zeros(2), torch.tensor([True, False])
        )
        == 1.0
    )


def test_unmasked_path_equals_masked_path_with_all_rows() -> None:
    torch.manual_seed(0)
    cases = {
        "classification": (torch.randn(6, 4), torch.randint(0, 4, (6,))),
        "binary": (torch.randn(6), torch.randint(0, 2, (6,)).float()),
        "multilabel": (torch.randn(6, 3), torch.randint(0, 2, (6, 3)).float()),
        "regression": (torch.randn(6), torch.randn(6)),
        "dense": (torch.randn(6, 2, 3, 3), torch.randn(6, 2, 3, 3)),
    }
    for kind, (out, target) in cases.items():
        full = masked_loss(kind, out, target, torch.ones(6, dtype=torch.bool))
        assert torch.allclose(masked_loss(kind, out, target, None), full, atol=1e-6), kind


def test_thread_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from autotask.engine.device import configure_threads
    from autotask.errors import ConfigError

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("AUTOTASK_THREADS", raising=False)
        assert configure_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("AUTOTASK_THREADS", "2")
        assert configure_threads() == 2
        monkeypatch.setenv("AUTOTASK_THREADS", "many")
        with pytest.raises(ConfigError, match="AUTOTASK_THREADS"):
            configure_threads()
    finally:
        torch.set_num_threads(before)
