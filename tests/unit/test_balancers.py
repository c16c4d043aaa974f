"""Contract tests every balancer must pass (parametrised over the registry), and the
promises of the gradient methods on constructed conflicts.

Runs on ``$AUTOTASK_TEST_DEVICE`` (default cpu) through the ``device`` fixture.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import pytest
import torch
from torchjd.aggregation import MeanWeighting, MGDAWeighting

from autotask.balancing import (
    BALANCERS,
    Balancer,
    GradientAggregation,
    _gradients,
    aggregation,
    build_balancer,
    list_balancers,
)
from autotask.engine.fused import balancer_blocker, plan_groups
from autotask.engine.job import NetworkJob
from autotask.engine.loop import train_network
from autotask.errors import ConfigError, TrialDiverged
from autotask.models import build_network, interface_for
from autotask.models.tree import TreeNetwork
from autotask.spec import BackboneSpec, BalancerSpec, ModelInterface, OptimizerSpec, TaskTree
from autotask.suites.base import TaskSuite

TASKS = ("a", "b", "c")
LOSS_METHODS = [n for n in list_balancers() if BALANCERS.get(n).family == "loss"]
GRADIENT_METHODS = [n for n in list_balancers() if BALANCERS.get(n).family == "gradient"]
MODES = ("parameters", "representation")
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    *[(n, {}) for n in LOSS_METHODS],
    ("gradnorm", {"norm_on": "features"}),
    *[(n, {"mode": m}) for n in GRADIENT_METHODS for m in MODES],
]
IDS = ["-".join([name, *map(str, p.values())]) for name, p in CONFIGS]
#: weights drawn at random on every call (checked in expectation instead)
RANDOM = {"rlw"}
#: documented as possibly negative
SIGNED = {"imtl_g", "aligned_mtl"}
NESTED = TaskTree.model_validate(
    {
        "tasks": list(TASKS),
        "branch_at": 1,
        "children": [
            {"tasks": ["a"]},
            {"tasks": ["b", "c"], "branch_at": 2, "children": [{"tasks": ["b"]}, {"tasks": ["c"]}]},
        ],
    }
)
TREES = {"shared": TaskTree(tasks=TASKS), "nested": NESTED}

configs = pytest.mark.parametrize(("name", "params"), CONFIGS, ids=IDS)


def network(
    device: torch.device,
    tasks: Sequence[str] = TASKS,
    tree: TaskTree | None = None,
    width: int = 8,
    seed: int = 0,
) -> TreeNetwork:
    torch.manual_seed(seed)
    interface = ModelInterface(input_shape=(6,), heads={t: ("regression", 1) for t in tasks})
    backbone = BackboneSpec(name="mlp", params={"width": width, "depth": 3})
    return build_network(tree or TaskTree(tasks=tuple(tasks)), backbone, interface).to(device)


def batch(device: torch.device, n: int = 16, seed: int = 1) -> tuple[torch.Tensor, dict[str, Any]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = {t: torch.randn(n, generator=g) for t in "abcd"}
    return x.to(device), {t: v.to(device) for t, v in y.items()}


def task_losses(
    net: TreeNetwork, x: torch.Tensor, y: dict[str, torch.Tensor], order: Sequence[str]
) -> torch.Tensor:
    out = net(x)
    return torch.stack([((out[t].float() - y[t]) ** 2).mean() for t in order])


def make(name: str, params: dict[str, Any], tasks: Sequence[str], net: TreeNetwork) -> Balancer:
    bal = build_balancer(name, tasks, **params)
    bal.attach(net)
    return bal


def step(bal: Balancer, net: TreeNetwork, x: torch.Tensor, y: dict[str, Any]) -> torch.Tensor:
    net.zero_grad(set_to_none=True)
    return bal.backward(task_losses(net, x, y, bal.tasks), net)


def grads(net: TreeNetwork) -> dict[str, torch.Tensor]:
    out = {}
    for name, p in net.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        out[name] = p.grad.detach().clone()
    return out


def plain_grads(net: TreeNetwork, x: torch.Tensor, y: dict[str, Any], weights: Any = None):  # type: ignore[no-untyped-def]
    net.zero_grad(set_to_none=True)
    losses = task_losses(net, x, y, net.tasks)
    w = torch.ones_like(losses) if weights is None else torch.as_tensor(weights).to(losses)
    (w * losses).sum().backward()
    return grads(net)


def assert_grads_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6, msg=key)


# -- contract tests: every balancer --------------------------------------------------------


@configs
@pytest.mark.parametrize("tree", list(TREES))
def test_weights_are_finite_with_the_documented_sign_and_scale(
    name: str, params: dict[str, Any], tree: str, device: torch.device
) -> None:
    net = network(device, tree=TREES[tree])
    bal = make(name, params, TASKS, net)
    x, y = batch(device)
    for _ in range(3):
        w = step(bal, net, x, y)
        assert w.shape == (3,) and w.device.type == device.type
        assert bool(torch.isfinite(w).all()), w
        assert all(bool(torch.isfinite(g).all()) for g in grads(net).values())
        if name not in SIGNED:
            assert bool((w >= 0).all()), w
        if name == "geometric_mean":  # weights GM / L_i
            losses = task_losses(net, x, y, TASKS).detach()
            torch.testing.assert_close(w, losses.log().mean().exp() / losses, rtol=1e-4, atol=0)
        else:
            assert float(w.sum()) == pytest.approx(3.0, rel=1e-4)


@configs
def test_permuting_the_tasks_permutes_the_weights(
    name: str, params: dict[str, Any], device: torch.device
) -> None:
    if name in RANDOM:
        pytest.skip("random weights: checked in expectation")
    net = network(device, tree=NESTED)
    x, y = batch(device)
    order = ("c", "a", "b")
    torch.manual_seed(0)
    w1 = step(make(name, params, TASKS, net), net, x, y)
    g1 = grads(net)
    torch.manual_seed(0)
    w2 = step(make(name, params, order, net), net, x, y)
    torch.testing.assert_close(w2, w1[[TASKS.index(t) for t in order]], rtol=1e-4, atol=1e-6)
    assert_grads_close(grads(net), g1)


@configs
def test_a_single_task_trains_plainly(
    name: str, params: dict[str, Any], device: torch.device
) -> None:
    net = network(device, tasks=("a",))
    x, y = batch(device)
    extra = {"weight.a": 5.0} if name == "static" else {}
    w = step(make(name, {**params, **extra}, ("a",), net), net, x, y)
    assert w.tolist() == [1.0]
    assert_grads_close(grads(net), plain_grads(net, x, y))


@configs
def test_two_identical_tasks_are_treated_equally(
    name: str, params: dict[str, Any], device: torch.device
) -> None:
    if name in RANDOM:
        pytest.skip("random weights: checked in expectation")
    net = network(device, tasks=("a", "b"))
    net.heads["b"].load_state_dict(net.heads["a"].state_dict())
    x, y = batch(device)
    y["b"] = y["a"]
    bal = make(name, params, ("a", "b"), net)
    for _ in range(2):
        w = step(bal, net, x, y)
        assert float(w[0]) == pytest.approx(float(w[1]), rel=1e-3)
        g = grads(net)
        torch.testing.assert_close(g["heads.a.0.weight"], g["heads.b.0.weight"])


@configs
def test_bf16_autocast_keeps_weights_and_gradients_finite(
    name: str, params: dict[str, Any], device: torch.device
) -> None:
    net = network(device, tree=NESTED)
    bal = make(name, params, TASKS, net)
    x, y = batch(device)
    for _ in range(2):
        net.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            losses = task_losses(net, x, y, TASKS)
            w = bal.backward(losses, net)  # called inside autocast on purpose
        assert bool(torch.isfinite(w).all())
        for p in net.parameters():
            assert p.grad is not None and p.grad.dtype == torch.float32
            assert bool(torch.isfinite(p.grad).all())


@configs
def test_trains_a_network_end_to_end(
    name: str, params: dict[str, Any], tiny_suite: TaskSuite, device: torch.device
) -> None:
    data = {k: v.to(device) for k, v in tiny_suite.splits.items()}
    tree = TaskTree.model_validate(
        {
            "tasks": ["bin", "cls", "reg"],
            "branch_at": 2,
            "children": [{"tasks": ["bin"]}, {"tasks": ["cls", "reg"]}],
        }
    )
    job = NetworkJob(
        tiny_suite.key(),
        tree,
        BackboneSpec(**tiny_suite.default_backbone),
        OptimizerSpec(lr=0.01, epochs=3, batch_size=48, patience=3),
        BalancerSpec(name=name, params=params),
        0,
    )
    _, result = train_network(job, data, interface_for(tiny_suite))
    assert result.status == "ok", result.reason
    assert result.epochs_run == 3 and len(result.history) == 3


def test_every_method_is_documented() -> None:
    for name in list_balancers():
        cls = BALANCERS.get(name)
        assert cls.name == name and "." not in name
        assert cls.source in ("torchjd", "autotask")
        assert cls.description and cls.relative_cost and cls.__doc__
    assert len(LOSS_METHODS) >= 9 and len(GRADIENT_METHODS) >= 9


def test_declarations_are_consistent_and_decide_grouping() -> None:
    interface = ModelInterface(input_shape=(6,), heads={t: ("regression", 1) for t in "abcd"})
    backbone = BackboneSpec(name="mlp", params={"width": 8, "depth": 3})
    for name in list_balancers():
        cls = BALANCERS.get(name)
        assert not (cls.fusable and cls.needs_per_task_grads), name
        assert cls.fusable or not cls.constant_weights, name
        assert cls.family == "loss" or cls.needs_per_task_grads, name
        spec = BalancerSpec(name=name)
        assert (balancer_blocker(spec) is None) == cls.fusable, name
        jobs = [
            NetworkJob("test", TaskTree(tasks=tasks), backbone, OptimizerSpec(), spec, 0)
            for tasks in (("a", "b"), ("c", "d"))
        ]
        expected = [[0, 1]] if cls.fusable else [[0], [1]]
        assert plan_groups(jobs, interface, fused=True) == expected, name
    assert any(BALANCERS.get(n).fusable for n in list_balancers())
    assert any(BALANCERS.get(n).constant_weights for n in list_balancers())


def test_fusable_balancers_weight_a_copy_of_the_losses(device: torch.device) -> None:
    """What grouped training relies on: on a detached copy of the losses the method's weights
    arrive as that copy's gradient and the network is left alone; constant weights do not
    depend on the losses."""
    net = network(device)
    x, y = batch(device)
    for name in list_balancers():
        cls = BALANCERS.get(name)
        if not cls.fusable:
            continue
        bal = make(name, {}, TASKS, net)
        seen = []
        for scale in (1.0, 3.0):
            net.zero_grad(set_to_none=True)
            leaf = (scale * task_losses(net, x, y, TASKS)).detach().requires_grad_(True)
            weights = bal.backward(leaf, net)
            assert leaf.grad is not None, name
            torch.testing.assert_close(leaf.grad, weights.to(leaf.dtype), msg=name)
            assert all(p.grad is None for p in net.parameters()), name
            seen.append(weights)
        if cls.constant_weights:
            torch.testing.assert_close(seen[0], seen[1], msg=name)


# -- loss weighting specifics ---------------------------------------------------------------


def test_random_weights_are_equal_in_expectation(device: torch.device) -> None:
    net = network(device)
    bal = make("rlw", {}, TASKS, net)
    x, y = batch(device)
    torch.manual_seed(0)
    draws = torch.stack([step(bal, net, x, y) for _ in range(300)])
    assert bool((draws > 0).all())
    torch.testing.assert_close(draws.sum(1), torch.full((300,), 3.0, device=draws.device))
    assert draws.mean(0).tolist() == pytest.approx([1.0, 1.0, 1.0], abs=0.1)


def test_learned_weights_get_gradients(device: torch.device) -> None:
    net = network(device)
    x, y = batch(device)
    for name, sign in (("uncertainty", -1.0), ("imtl_l", 1.0)):
        bal = make(name, {}, TASKS, net)
        (param,) = bal.parameters()
        with torch.no_grad():
            param.copy_(torch.tensor([0.0, 0.5, -0.5], device=device))
        w = step(bal, net, x, y)
        torch.testing.assert_close(w, (sign * param.detach()).exp())
        losses = task_losses(net, x, y, TASKS).detach()
        assert param.grad is not None  # d/ds of sum exp(+-s) L + -+s
        torch.testing.assert_close(param.grad, sign * (w * losses - 1.0))


def test_dwa_weights_follow_the_epoch_loss_ratios(device: torch.device) -> None:
    net = network(device)
    bal = make("dwa", {"temperature": 1.0}, TASKS, net)
    x, y = batch(device)
    for scale in ([1.0, 1.0, 1.0], [1.0, 0.5, 0.5]):  # task a stops improving
        net.zero_grad(set_to_none=True)
        losses = task_losses(net, x, y, TASKS) * torch.tensor(scale, device=device)
        w = bal.backward(losses, net)
        assert w.tolist() == pytest.approx([1.0, 1.0, 1.0])
        bal.end_epoch(losses.detach())
    w = step(bal, net, x, y)
    expected = 3 * torch.softmax(torch.tensor([1.0, 0.5, 0.5]), 0)
    assert w.tolist() == pytest.approx(expected.tolist(), rel=1e-4)


def test_famo_updates_its_weights_from_the_next_step(device: torch.device) -> None:
    net = network(device)
    bal = make("famo", {"lr": 0.1}, TASKS, net)
    x, y = batch(device)
    first = step(bal, net, x, y)
    for scale in ([1.0, 0.5, 0.5], [1.0, 0.25, 0.25]):  # task a does not improve
        net.zero_grad(set_to_none=True)
        w = bal.backward(task_losses(net, x, y, TASKS) * torch.tensor(scale, device=device), net)
    assert float(w.sum()) == pytest.approx(3.0, rel=1e-4)
    logits = bal.scalarizer._w.detach()  # type: ignore[attr-defined]
    assert float(logits[0]) > float(logits[1])  # the lagging task gains weight
    assert not torch.allclose(first, w)


# -- gradient methods ------------------------------------------------------------------------


class MeanGradient(GradientAggregation):
    """Test-only: the mean weighting (all ones after rescaling) = plain summed training."""

    name = "test_mean"
    description = "mean"

    def make_weighting(self, num_tasks: int) -> Callable[[torch.Tensor], torch.Tensor]:
        return MeanWeighting()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tree", list(TREES))
def test_the_machinery_reproduces_summed_training(
    mode: str, tree: str, device: torch.device
) -> None:
    net = network(device, tree=TREES[tree])
    x, y = batch(device)
    bal = MeanGradient(TASKS, mode=mode)
    bal.attach(net)
    assert bal.mode == mode
    for _ in range(2):
        w = step(bal, net, x, y)
        assert bal._tap is not None and bal._tap.features == {} == bal._tap.aliases  # type: ignore[attr-defined]
        assert w.tolist() == pytest.approx([1.0, 1.0, 1.0])
        assert_grads_close(grads(net), plain_grads(net, x, y))


@pytest.mark.parametrize("tree", list(TREES))
def test_an_unattached_balancer_attaches_itself(tree: str, device: torch.device) -> None:
    net = network(device, tree=TREES[tree])
    x, y = batch(device)
    expected = []
    for mode in MODES:
        expected.append((step(make("upgrad", {"mode": mode}, TASKS, net), net, x, y), grads(net)))
    bal = build_balancer("upgrad", TASKS, mode="representation")
    for w_expected, g_expected in expected:
        # first step: attached lazily, no features yet: parameter gradients; then features
        torch.testing.assert_close(step(bal, net, x, y), w_expected, rtol=1e-4, atol=1e-6)
        assert_grads_close(grads(net), g_expected)
        assert bal._tap is not None and bal._tap.features == {}  # type: ignore[attr-defined]


def test_the_separable_path_is_taken_for_searched_trees(device: torch.device) -> None:
    branched = TaskTree.model_validate(
        {"tasks": list(TASKS), "branch_at": 2, "children": [{"tasks": [t]} for t in TASKS]}
    )
    for tree in (TaskTree(tasks=TASKS), branched):
        net = network(device, tree=tree)
        bal = make("mgda", {"mode": "parameters"}, TASKS, net)
        assert bal._tap is not None and bal._tap.separable  # type: ignore[attr-defined]
    net = network(device, tree=NESTED)
    assert not make("mgda", {}, TASKS, net)._tap.separable  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", MODES)
def test_the_separable_path_matches_the_general_one(mode: str, device: torch.device) -> None:
    branched = TaskTree.model_validate(
        {"tasks": list(TASKS), "branch_at": 2, "children": [{"tasks": [t]} for t in TASKS]}
    )
    net = network(device, tree=branched)
    x, y = batch(device)
    fast = make("upgrad", {"mode": mode}, TASKS, net)
    w_fast = step(fast, net, x, y)
    g_fast = grads(net)
    general = build_balancer("upgrad", TASKS, mode=mode)
    general.attach(net)
    general._tap.separable = False  # type: ignore[attr-defined]
    w_general = step(general, net, x, y)
    torch.testing.assert_close(w_fast, w_general, rtol=1e-4, atol=1e-6)
    assert_grads_close(grads(net), g_fast)


def test_auto_mode_uses_representations_for_large_trunks(
    device: torch.device, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = network(device)
    assert make("upgrad", {}, TASKS, net).mode == "parameters"  # type: ignore[attr-defined]
    monkeypatch.setattr(aggregation, "AUTO_REPRESENTATION_ABOVE", 100)
    assert make("upgrad", {}, TASKS, net).mode == "representation"  # type: ignore[attr-defined]


def test_inner_nodes_are_balanced_over_their_own_tasks(device: torch.device) -> None:
    net = network(device, tree=NESTED)
    x, y = batch(device)
    step(make("mgda", {"mode": "parameters"}, TASKS, net), net, x, y)
    inner = [(n, p) for n, p in net.named_parameters() if n.startswith("blocks.n0_1.")]
    expected_sum = torch.zeros(0, device=device)
    rows = []
    for t in ("b", "c"):
        net.zero_grad(set_to_none=True)
        task_losses(net, x, y, (t,)).sum().backward()
        rows.append(torch.cat([p.grad.flatten() for _, p in inner]))  # type: ignore[union-attr]
    jac = torch.stack(rows).double()
    w = MGDAWeighting()((jac @ jac.T).cpu())
    w = (w * 2 / w.sum()).to(jac)
    expected_sum = w @ jac
    net.zero_grad(set_to_none=True)
    step(make("mgda", {"mode": "parameters"}, TASKS, net), net, x, y)
    got = torch.cat([p.grad.flatten() for _, p in inner]).double()  # type: ignore[union-attr]
    torch.testing.assert_close(got, expected_sum, rtol=1e-3, atol=1e-6)


def conflicting(device: torch.device) -> TreeNetwork:
    """Two tasks whose heads read the shared features in partly opposite directions
    (cosine -0.6) and whose targets both sit above the outputs: conflicting gradients."""
    net = network(device, tasks=("a", "b"))
    with torch.no_grad():
        w_a = net.heads["a"][0].weight
        w_a.mul_(0.3 / w_a.norm())
        other = torch.randn(w_a.shape, generator=torch.Generator().manual_seed(3)).to(w_a)
        other -= (other * w_a).sum() / (w_a * w_a).sum() * w_a
        other.mul_(w_a.norm() / other.norm())
        net.heads["b"][0].weight.copy_(-0.6 * w_a + 0.8 * other)
        net.heads["a"][0].bias.zero_()
        net.heads["b"][0].bias.zero_()
    return net


def conflict(net: TreeNetwork, x: torch.Tensor) -> torch.Tensor:
    out = net(x)
    return torch.stack([((out["a"] - 1.0) ** 2).mean(), 3.0 * ((out["b"] - 1.0) ** 2).mean()])


def _sqrtm(g: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(g)
    return vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T


def _equal(values: torch.Tensor, rel: float) -> bool:
    return bool((values.max() - values.min()).abs() <= rel * values.abs().max())


#: What each method promises, on the Gramian G it used, its weights w (sum k) and k.
PROMISES: dict[str, Callable[[torch.Tensor, torch.Tensor], bool]] = {
    # no task's loss increases to first order (quadprog solves to ~1e-4: reg_eps)
    "mgda": lambda g, w: bool((g @ w >= -1e-9).all()) and bool((w >= 0).all()),
    "upgrad": lambda g, w: bool((g @ w >= -1e-3 * g.trace()).all()),
    "dualproj": lambda g, w: bool((g @ w >= -1e-3 * g.trace()).all()),
    # projecting the conflict away: w = [1 - G01/G00, 1 - G01/G11], rescaled to sum 2
    "pcgrad": lambda g, w: torch.allclose(
        w,
        (v := torch.stack([1 - g[0, 1] / g[0, 0], 1 - g[0, 1] / g[1, 1]])) * 2 / v.sum(),
        rtol=1e-4,
    ),
    # the worst task does at least as well as under the mean gradient
    "cagrad": lambda g, w: bool((g @ w / 2).min() >= (g @ torch.full_like(w, 0.5)).min() - 1e-9),
    # equal projections on the unit task gradients
    "imtl_g": lambda g, w: _equal((g @ w) / g.diagonal().sqrt(), 1e-4),
    # aligned: in the whitened basis G^1/2 the update has equal coordinates
    "aligned_mtl": lambda g, w: _equal(_sqrtm(g) @ w, 1e-4),
    # Nash bargaining / proportional fairness: w_i (G w)_i equal
    "nash_mtl": lambda g, w: _equal(w * (g @ w), 0.05) and bool((w > 0).all()),
    "fairgrad": lambda g, w: _equal(w * (g @ w), 0.02) and bool((w > 0).all()),
}


def test_every_gradient_method_states_a_promise() -> None:
    assert set(PROMISES) == set(GRADIENT_METHODS)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_conflicting_gradients_are_handled_as_promised(
    name: str, mode: str, device: torch.device
) -> None:
    net = conflicting(device)
    x, _ = batch(device)
    shared = net.shared_parameters()
    captured: dict[str, torch.Tensor] = {}
    hook = net.blocks["n0"].register_forward_hook(lambda m, i, o: captured.update(z=o))
    # the Jacobian the method sees: shared parameters, or the shared node's features
    rows = []
    for i in range(2):
        losses = conflict(net, x)
        inputs = shared if mode == "parameters" else [captured["z"]]
        rows.append(torch.cat([g.flatten() for g in torch.autograd.grad(losses[i], inputs)]))
    hook.remove()
    jac = torch.stack(rows).double()
    g = jac @ jac.T
    cosine = float(g[0, 1] / (g[0, 0] * g[1, 1]).sqrt())
    assert -0.9 < cosine < -0.2  # a real conflict, not a degenerate one
    assert float((g @ torch.ones(2, dtype=g.dtype, device=g.device)).min()) < 0  # sum hurts a
    bal = make(name, {"mode": mode}, ("a", "b"), net)
    net.zero_grad(set_to_none=True)
    w = bal.backward(conflict(net, x), net).double()
    assert float(w.sum()) == pytest.approx(2.0, rel=1e-6)
    assert PROMISES[name](g.cpu(), w.cpu()), (name, g.tolist(), w.tolist())
    if mode == "parameters":  # and the shared parameters got exactly sum_i w_i g_i
        got = torch.cat([p.grad.flatten() for p in shared]).double()  # type: ignore[union-attr]
        torch.testing.assert_close(got, w @ jac, rtol=1e-4, atol=1e-7)


def test_native_scale_keeps_torchjd_weights(device: torch.device) -> None:
    net = conflicting(device)
    x, _ = batch(device)
    bal = make("mgda", {"mode": "parameters", "scale": "native"}, ("a", "b"), net)
    net.zero_grad(set_to_none=True)
    w = bal.backward(conflict(net, x), net)
    assert float(w.sum()) == pytest.approx(1.0, rel=1e-5)  # MGDA: a convex combination


# -- failures ----------------------------------------------------------------------------------


def test_non_finite_losses_fail_with_a_reason(device: torch.device) -> None:
    net = network(device)
    x, y = batch(device)
    y["b"] = torch.full_like(y["b"], float("nan"))
    with pytest.raises(TrialDiverged, match=r"balancer 'upgrad': non-finite training loss \(b\)"):
        step(make("upgrad", {"mode": "parameters"}, TASKS, net), net, x, y)


class Exploding:
    def __call__(self, gramian: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("solver says no")


def test_a_solver_failure_fails_the_network_and_is_recorded(
    tiny_suite: TaskSuite, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aggregation.CAGrad, "make_weighting", lambda self, k: Exploding())
    job = NetworkJob(
        tiny_suite.key(),
        TaskTree(tasks=("bin", "cls", "reg")),
        BackboneSpec(**tiny_suite.default_backbone),
        OptimizerSpec(lr=0.01, epochs=2, batch_size=48),
        BalancerSpec(name="cagrad"),
        0,
    )
    _, result = train_network(job, tiny_suite.splits, interface_for(tiny_suite))
    assert result.status == "diverged"
    assert result.reason is not None
    assert "balancer 'cagrad': weighting failed: RuntimeError: solver says no" in result.reason
    assert "epoch 1" in result.reason


def test_non_finite_loss_weights_fail_at_the_end_of_the_epoch(device: torch.device) -> None:
    net = network(device)
    x, y = batch(device)
    bal = make("uncertainty", {}, TASKS, net)
    with torch.no_grad():
        bal.parameters()[0].fill_(-1e5)  # exp(1e5) = inf
    step(bal, net, x, y)  # no host sync per step ...
    with pytest.raises(TrialDiverged, match="non-finite task weights"):
        bal.end_epoch(torch.ones(3))  # ... the epoch's check catches it


def test_nan_weights_from_a_method_fail(
    device: torch.device, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        aggregation.MGDA, "make_weighting", lambda self, k: lambda g: torch.full((k,), float("nan"))
    )
    net = network(device)
    x, y = batch(device)
    with pytest.raises(TrialDiverged, match="non-finite or malformed weights"):
        step(make("mgda", {"mode": "parameters"}, TASKS, net), net, x, y)


def test_vmap_failure_falls_back_to_a_loop_and_says_so_once(
    device: torch.device, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    net = network(device, tree=NESTED)
    x, y = batch(device)
    bal = make("upgrad", {"mode": "parameters"}, TASKS, net)
    w_batched = step(bal, net, x, y)
    expected = grads(net)

    real = torch.autograd.grad

    def no_vmap(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("is_grads_batched"):
            raise RuntimeError("Batching rule not implemented for aten::something")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", no_vmap)
    monkeypatch.setattr(_gradients, "_LOGGED", set())
    with caplog.at_level(logging.WARNING, logger="autotask"):
        for _ in range(2):
            bal = make("upgrad", {"mode": "parameters"}, TASKS, net)
            w = step(bal, net, x, y)
            torch.testing.assert_close(w, w_batched, rtol=1e-4, atol=1e-6)
            assert_grads_close(grads(net), expected)
    fallbacks = [r for r in caplog.records if "falling back" in r.getMessage()]
    assert len(fallbacks) == 1 and "aten::something" in fallbacks[0].getMessage()


def test_missing_solver_packages_give_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchjd._mixins as mixins

    real = mixins.find_spec
    monkeypatch.setattr(mixins, "find_spec", lambda n: None if n == "cvxpy" else real(n))
    with pytest.raises(
        ConfigError, match=r"'cagrad' needs optional solver packages.*cvxpy.*torchjd\[full\]"
    ):
        build_balancer("cagrad", TASKS)
    build_balancer("mgda", TASKS)  # no solver needed


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("mgda", {"c": 1}, r"unknown hyperparameter\(s\) \['c'\]; known: mode, scale"),
        ("mgda", {"mode": "fast"}, "mode must be one of auto, parameters, representation"),
        ("upgrad", {"scale": "big"}, "scale must be one of tasks, native"),
        ("cagrad", {"c": -1.0}, "c must be non-negative"),
        ("fairgrad", {"alpha": 0}, "alpha must be > 0"),
        ("aligned_mtl", {"scale_mode": "max"}, "scale_mode must be"),
        ("dwa", {"temperature": 0}, "temperature must be > 0"),
        ("famo", {"lr": -1}, "lr must be >= 0"),
        ("gradnorm", {"weight_optimizer": "lbfgs"}, "weight_optimizer must be"),
        ("equal", {"reduction": "max"}, "reduction must be"),
    ],
)
def test_bad_hyperparameters_are_config_errors(
    name: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_balancer(name, TASKS, **params)


def test_the_cli_lists_every_method(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    from autotask.cli import listing

    buffer = io.StringIO()
    monkeypatch.setattr(listing, "out", Console(file=buffer, width=400))
    listing.balancers("*")
    text = buffer.getvalue()
    for name in list_balancers():
        cls = BALANCERS.get(name)
        row = next(line for line in text.splitlines() if f" {name} " in line)
        assert cls.family in row and cls.source in row and cls.relative_cost in row
    assert "mode=auto, scale=tasks, c=0.4" in text and "alpha=1.5" in text


class _Probe(Balancer):
    name = "probe"
    family: ClassVar[Any] = "loss"

    def _backward(self, losses: torch.Tensor, network: TreeNetwork) -> torch.Tensor:
        raise AssertionError("not reached")


def test_losses_of_the_wrong_shape_are_rejected(device: torch.device) -> None:
    with pytest.raises(ValueError, match=r"expected 3 losses"):
        _Probe(TASKS).backward(torch.ones(2, device=device), network(device))
