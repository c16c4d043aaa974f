"""Lookahead and gradient-cosine affinity: the optimizer-aware step, the batched probe
against sequential real optimizer steps, BatchNorm safety, and the planted structure of
``synthetic``."""

from __future__ import annotations

import copy
from itertools import combinations

import numpy as np
import pytest
import torch
from torch.func import replace_all_batch_norm_modules_

from autotask.affinity.estimators import ESTIMATORS, build_estimator, list_estimators
from autotask.affinity.estimators.gradcos import GradientCosineProbe
from autotask.affinity.estimators.lookahead import LookaheadProbe
from autotask.affinity.optimizer_step import lookahead_parameters
from autotask.engine.job import NetworkJob
from autotask.engine.loop import make_optimizer, train_network
from autotask.engine.losses import masked_loss
from autotask.engine.observer import TrainStep
from autotask.errors import ConfigError, UnknownNameError
from autotask.models import build_network, interface_for
from autotask.models.tree import TreeNetwork
from autotask.search.scoring import TrainingContext
from autotask.select.matrix import AffinityMatrix, pair_scores
from autotask.spec import BackboneSpec, BalancerSpec, OptimizerSpec, TaskTree
from autotask.suites import get_suite
from autotask.suites.base import TaskSuite
from tests.conftest import make_context, make_tiny_image_suite, make_tiny_suite

OPTIMIZERS = [
    OptimizerSpec(name="sgd", lr=0.05),
    OptimizerSpec(name="sgd", lr=0.05, momentum=0.9, weight_decay=0.01),
    OptimizerSpec(name="adam", lr=0.01),
    OptimizerSpec(name="adam", lr=0.01, weight_decay=0.05),
    OptimizerSpec(name="adamw", lr=0.01, weight_decay=0.05),
]


@pytest.mark.parametrize(
    "spec", OPTIMIZERS, ids=lambda s: f"{s.name}-m{s.momentum}-wd{s.weight_decay}"
)
def test_lookahead_step_matches_the_real_optimizer(spec: OptimizerSpec) -> None:
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(3, 4))
    opt, _ = make_optimizer(spec, [param])
    for _ in range(3):  # build momentum / moments / step count
        param.grad = torch.randn(3, 4)
        opt.step()
    candidates = torch.randn(5, 3, 4)
    (moved,) = lookahead_parameters(opt, [param], [candidates])
    before = copy.deepcopy(opt.state_dict()), param.detach().clone()
    for i in range(5):
        twin = torch.nn.Parameter(param.detach().clone())
        twin_opt, _ = make_optimizer(spec, [twin])
        twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
        twin.grad = candidates[i].clone()
        twin_opt.step()
        torch.testing.assert_close(moved[i], twin.detach(), rtol=1e-6, atol=1e-7)
    # nothing of the real optimizer or parameter moved
    torch.testing.assert_close(param.detach(), before[1])
    assert str(opt.state_dict()) == str(before[0])


def test_lookahead_step_before_any_state_is_the_first_step() -> None:
    param = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.Adam([param], lr=0.1)
    (moved,) = lookahead_parameters(opt, [param], [torch.tensor([[1.0, -2.0]])])
    # Adam's first step moves every coordinate by lr against the gradient's sign
    torch.testing.assert_close(moved[0], torch.tensor([0.9, 1.1]))


def test_unsupported_optimizer_is_refused() -> None:
    param = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ConfigError, match="RMSprop"):
        lookahead_parameters(torch.optim.RMSprop([param]), [param], [torch.ones(1, 2)])


def _step_for(net: TreeNetwork, suite: TaskSuite, opt: torch.optim.Optimizer) -> TrainStep:
    train = suite.splits["train"]
    x = train.x[:32]
    targets = {t: y[:32] for t, y in train.targets.items()}
    masks: dict[str, torch.Tensor | None] = {t: None for t in targets}
    kinds = {t.name: t.kind for t in suite.tasks}
    out = net(x)
    losses = torch.stack([masked_loss(kinds[t], out[t], targets[t], None) for t in net.tasks])
    return TrainStep(0, 1, net, opt, x, targets, masks, losses, kinds)


@pytest.mark.parametrize(
    "suite_factory", [make_tiny_suite, make_tiny_image_suite], ids=["mlp", "cnn-bn"]
)
@pytest.mark.parametrize("reference", ["drift", "current"])
def test_batched_probe_equals_sequential_real_steps(suite_factory, reference: str) -> None:  # type: ignore[no-untyped-def]
    suite = suite_factory()
    torch.manual_seed(0)
    net = build_network(
        TaskTree(tasks=tuple(suite.task_names)),
        BackboneSpec(**suite.default_backbone),
        interface_for(suite),
    )
    spec = OptimizerSpec(name="adam", lr=0.01, weight_decay=0.01)
    opt, _ = make_optimizer(spec, list(net.parameters()))
    for _ in range(2):  # some Adam state
        step = _step_for(net, suite, opt)
        opt.zero_grad()
        step.losses.sum().backward()
        opt.step()
    opt.zero_grad()
    probe = LookaheadProbe(net, every=1, reference=reference)
    step = _step_for(net, suite, opt)  # the training forward updates BatchNorm statistics
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    params = {n: p.detach().clone() for n, p in net.named_parameters()}
    probe.before_backward(step)
    measured = probe.affinity.mean()

    # the probe changed nothing: parameters, BatchNorm statistics, optimizer state
    for n, b in net.named_buffers():
        torch.testing.assert_close(b, buffers[n])
    for n, p in net.named_parameters():
        torch.testing.assert_close(p.detach(), params[n])
        assert p.grad is None

    # reference: k real optimizer steps on copies, each with one task's shared gradient
    shared = {id(p) for p in net.shared_parameters()}
    names = [n for n, p in net.named_parameters() if id(p) in shared]

    def stepped(task_index: int | None) -> dict[str, torch.Tensor]:
        twin = copy.deepcopy(net)
        twin_opt, _ = make_optimizer(spec, list(twin.parameters()))
        twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # it would share tensors
        twin_step = _step_for(twin, suite, twin_opt)
        grads = torch.autograd.grad(
            twin_step.losses[task_index] if task_index is not None else twin_step.losses.sum() * 0,
            [dict(twin.named_parameters())[n] for n in names],
        )
        for p in twin.parameters():
            p.grad = None
        for n, g in zip(names, grads, strict=True):
            dict(twin.named_parameters())[n].grad = g
        twin_opt.step()
        return {n: p.detach() for n, p in twin.named_parameters()}

    evaluator = copy.deepcopy(net)
    replace_all_batch_norm_modules_(evaluator)
    evaluator.eval()

    def losses_at(values: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            out = torch.func.functional_call(evaluator, values, (step.x,))
            return torch.stack(
                [masked_loss(step.kinds[t], out[t], step.targets[t], None) for t in net.tasks]
            )

    base = losses_at(stepped(None) if reference == "drift" else params)
    k = len(net.tasks)
    expected = np.stack([(1 - losses_at(stepped(i)) / base).double().numpy() for i in range(k)])
    np.testing.assert_allclose(measured, expected, rtol=1e-4, atol=1e-6)


def test_probing_leaves_training_unchanged() -> None:
    suite = make_tiny_image_suite()
    opt = OptimizerSpec(lr=0.01, epochs=3, batch_size=32, patience=5)
    data, backbone = suite.splits, BackboneSpec(**suite.default_backbone)
    tree = TaskTree(tasks=tuple(suite.task_names))
    job = NetworkJob(suite.key(), tree, backbone, opt, BalancerSpec(), 0)
    plain_net, plain = train_network(job, data, interface_for(suite))
    probed_net, probed = train_network(
        job,
        data,
        interface_for(suite),
        observer_factory=lambda net: LookaheadProbe(net, every=1),
    )
    assert probed.val_metrics == plain.val_metrics
    for (n, a), (_, b) in zip(
        plain_net.state_dict().items(), probed_net.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=n)


def test_representation_cosine_hooks_see_each_task_and_cost_no_backward() -> None:
    suite = make_tiny_suite()
    net = build_network(
        TaskTree(tasks=tuple(suite.task_names)),
        BackboneSpec(**suite.default_backbone),
        interface_for(suite),
    )
    opt, _ = make_optimizer(OptimizerSpec(), list(net.parameters()))
    probe = GradientCosineProbe(net, mode="representation", every=1)
    step = _step_for(net, suite, opt)
    probe.before_backward(step)
    step.losses.sum().backward()
    probe.after_backward(step)
    # the same per-task feature gradients, computed the slow way
    feats = net.blocks["n0"](step.x)
    out = {t: net.heads[t](feats) for t in net.tasks}
    rows = []
    for t in net.tasks:
        loss = masked_loss(step.kinds[t], out[t], step.targets[t], None)
        (g,) = torch.autograd.grad(loss, feats, retain_graph=True)
        rows.append(g.flatten())
    stacked = torch.nn.functional.normalize(torch.stack(rows), dim=1)
    np.testing.assert_allclose(
        probe.cosine.mean(), (stacked @ stacked.T).double().numpy(), rtol=1e-4, atol=1e-6
    )
    probe.remove()
    assert not net.heads[net.tasks[0]]._forward_pre_hooks


@pytest.fixture(scope="module")
def synthetic_context() -> tuple[TrainingContext, TaskSuite]:
    suite = get_suite("synthetic", n_tasks=6, n_groups=2, seed=0)
    opt = OptimizerSpec(lr=0.003, epochs=40, batch_size=128, patience=6)
    return make_context(suite, opt), suite


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("lookahead", {"every": 10}),
        ("gradcos", {"mode": "representation"}),
        ("gradcos", {"mode": "parameters", "every": 5}),
    ],
)
def test_estimators_find_the_planted_groups_and_conflict(
    synthetic_context: tuple[TrainingContext, TaskSuite], name: str, settings: dict[str, object]
) -> None:
    context, suite = synthetic_context
    matrix = build_estimator(name, **settings).estimate(context)
    groups = [set(g) for g in suite.metadata["groups"]]
    conflict = frozenset(suite.metadata["conflicts"][0])
    scores = pair_scores(matrix)
    within = [v for p, v in scores.items() if any(p <= g for g in groups) and p != conflict]
    cross = [v for p, v in scores.items() if not any(p <= g for g in groups)]
    assert len(within) == 5 and len(cross) == 9
    # every within-group pair above every cross-group pair, and the mean gap is more than
    # three standard deviations of the cross-group scores
    assert min(within) > max(cross)
    assert np.mean(within) - np.mean(cross) > 3 * np.std(cross)
    assert scores[conflict] < min(cross)
    assert matrix.steps > 0 and matrix.seconds > 0


def test_affinity_matrix_graphs_and_round_trip() -> None:
    values = np.array([[0.0, 0.3, np.nan], [0.1, 0.0, -0.2], [0.4, 0.5, 0.0]])
    m = AffinityMatrix(("a", "b", "c"), values, "test", {"x": 1}, steps=3, seconds=1.5)
    g = m.graph()
    assert g["a"]["b"]["weight"] == pytest.approx(0.3)  # from a onto b
    assert not g.has_edge("a", "c") and g.number_of_edges() == 5
    assert m.value("c", "b") == pytest.approx(0.5)
    assert m.onto()[1, 0] == pytest.approx(0.3)
    u = m.undirected()
    assert u["a"]["b"]["weight"] == pytest.approx(0.2) and not u.has_edge("a", "c")
    back = AffinityMatrix.from_dict(m.to_dict())
    np.testing.assert_array_equal(back.values, m.values)
    assert back.tasks == m.tasks and back.settings == {"x": 1} and back.steps == 3
    assert m.subset(["c", "a"]).value("c", "a") == pytest.approx(0.4)


def test_estimator_registry_errors() -> None:
    assert {"lookahead", "gradcos"} <= set(list_estimators())
    with pytest.raises(UnknownNameError, match="lookahead"):
        build_estimator("tag")
    with pytest.raises(ConfigError, match="known: epochs, every, reference"):
        build_estimator("lookahead", step=3)
    with pytest.raises(ConfigError, match="every must be a positive integer"):
        build_estimator("lookahead", every=0)
    with pytest.raises(ConfigError, match="mode must be one of"):
        build_estimator("gradcos", mode="features")
    assert all(ESTIMATORS.get(n).description for n in list_estimators())


def test_pairs_cover_every_unordered_pair() -> None:
    m = AffinityMatrix(("a", "b", "c"), np.zeros((3, 3)), "x")
    assert set(pair_scores(m)) == {frozenset(p) for p in combinations("abc", 2)}
