"""GradNorm against the published update rule (Chen et al. 2018, Algorithm 1) on examples
small enough to compute by hand.

The network: one shared unit ``z = relu(W x + c)`` (the last shared layer: W and c), two
linear heads ``out_a = 2 z``, ``out_b = z`` (no bias), squared-error losses, one input
``x = 1``. With ``W = 1, c = 0``: ``z = 1``, ``d L_t / d(W, c) = 2 (out_t - y_t) h_t (1, 1)``
where ``h_t`` is the head's weight.
"""

from __future__ import annotations

import math

import pytest
import torch

from autotask.balancing import build_balancer
from autotask.balancing.gradnorm import GradNorm, last_shared_layer
from autotask.models import build_network
from autotask.models.tree import TreeNetwork
from autotask.spec import BackboneSpec, ModelInterface, TaskTree

SQRT2 = math.sqrt(2.0)


def hand_network(device: torch.device) -> TreeNetwork:
    interface = ModelInterface(
        input_shape=(1,), heads={"a": ("regression", 1), "b": ("regression", 1)}
    )
    net = build_network(
        TaskTree(tasks=("a", "b")),
        BackboneSpec(name="mlp", params={"width": 1, "depth": 1}),
        interface,
    )
    values = {
        "blocks.n0.0.1.weight": 1.0,
        "blocks.n0.0.1.bias": 0.0,
        "heads.a.0.weight": 2.0,
        "heads.a.0.bias": 0.0,
        "heads.b.0.weight": 1.0,
        "heads.b.0.bias": 0.0,
    }
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.fill_(values[name])
    return net.to(device)


def losses_for(net: TreeNetwork, y_a: float, y_b: float, device: torch.device) -> torch.Tensor:
    out = net(torch.ones(1, 1, device=device))
    return torch.stack([((out["a"] - y_a) ** 2).mean(), ((out["b"] - y_b) ** 2).mean()])


def test_the_rule_on_numbers() -> None:
    # w = [1, 1], ||grad_W L_i|| = [2, 1], L(t) = [0.5, 1], L(0) = [1, 1], alpha = 1:
    # G = [2, 1], mean 1.5; L~ = [0.5, 1], r = [2/3, 4/3]; target = [1, 2];
    # sign(G - target) = [+1, -1]  ->  dL_grad/dw = [+2, -1]
    grad = GradNorm.grad_of_weights(
        torch.ones(2), torch.tensor([2.0, 1.0]), torch.tensor([0.5, 1.0]), torch.ones(2), 1.0
    )
    assert grad.tolist() == pytest.approx([2.0, -1.0])
    # alpha = 0: the target is the mean norm whatever the training rates
    grad = GradNorm.grad_of_weights(
        torch.ones(2), torch.tensor([2.0, 1.0]), torch.tensor([0.1, 1.0]), torch.ones(2), 0.0
    )
    assert grad.tolist() == pytest.approx([2.0, -1.0])


def test_the_last_shared_layer_is_the_roots_last_linear(device: torch.device) -> None:
    net = hand_network(device)
    names = {id(p): n for n, p in net.named_parameters()}
    assert [names[id(p)] for p in last_shared_layer(net)] == [
        "blocks.n0.0.1.weight",
        "blocks.n0.0.1.bias",
    ]


def test_two_sgd_steps_follow_the_published_update(device: torch.device) -> None:
    net = hand_network(device)
    lr, alpha = 0.01, 1.5
    bal = build_balancer("gradnorm", ("a", "b"), alpha=alpha, lr=lr, weight_optimizer="sgd")
    bal.attach(net)

    # step 1, targets (0, 0): out = (2, 1), L = (4, 1) = L(0)
    # ||grad_W L_a|| = |2*2*2| * sqrt(2) = 8 sqrt2, ||grad_W L_b|| = 2 sqrt2
    # G = (8, 2) sqrt2, target = mean = 5 sqrt2 each -> dL_grad/dw = (+8, -2) sqrt2
    w = bal.backward(losses_for(net, 0.0, 0.0, device), net)
    assert w.tolist() == pytest.approx([1.0, 1.0])  # the network is updated with w(t)
    grads = {n: float(p.grad) for n, p in net.named_parameters()}  # type: ignore[arg-type]
    assert grads["blocks.n0.0.1.weight"] == pytest.approx(8.0 + 2.0)
    assert grads["heads.a.0.weight"] == pytest.approx(2 * 2 * 1)  # 2 (out - y) z
    raw = [1 - lr * 8 * SQRT2, 1 + lr * 2 * SQRT2]
    w2 = [v * 2 / sum(raw) for v in raw]  # renormalised to sum to 2
    assert bal.weights.detach().tolist() == pytest.approx(w2, rel=1e-5)  # type: ignore[attr-defined]

    # step 2, targets (1, 0): out - y = (1, 1), L = (1, 1); norms (4, 2) sqrt2
    # L~ = (1/4, 1), r = L~ / mean = (0.4, 1.6); target = mean(G) * r^1.5
    net.zero_grad(set_to_none=True)
    w = bal.backward(losses_for(net, 1.0, 0.0, device), net)
    assert w.tolist() == pytest.approx(w2, rel=1e-5)
    grads = {n: float(p.grad) for n, p in net.named_parameters()}  # type: ignore[arg-type]
    assert grads["blocks.n0.0.1.weight"] == pytest.approx(w2[0] * 4 + w2[1] * 2, rel=1e-5)
    assert grads["heads.a.0.weight"] == pytest.approx(w2[0] * 2 * 1 * 1, rel=1e-5)
    assert grads["heads.b.0.weight"] == pytest.approx(w2[1] * 2 * 1 * 1, rel=1e-5)
    norms = [4 * SQRT2, 2 * SQRT2]
    g = [w2[0] * norms[0], w2[1] * norms[1]]
    r = [0.25 / 0.625, 1.0 / 0.625]
    target = [(g[0] + g[1]) / 2 * ri**alpha for ri in r]
    grad = [math.copysign(n, gi - ti) for n, gi, ti in zip(norms, g, target, strict=True)]
    assert grad[0] > 0 > grad[1]  # a trains faster: its weight goes down
    raw = [w2[0] - lr * grad[0], w2[1] - lr * grad[1]]
    w3 = [v * 2 / sum(raw) for v in raw]
    assert bal.weights.detach().tolist() == pytest.approx(w3, rel=1e-5)  # type: ignore[attr-defined]


def test_adam_moves_each_weight_by_lr_on_the_first_step(device: torch.device) -> None:
    net = hand_network(device)
    bal = build_balancer("gradnorm", ("a", "b"), lr=0.05)  # adam: first step lr * sign(grad)
    bal.backward(losses_for(net, 0.0, 0.0, device), net)
    assert bal.weights.detach().tolist() == pytest.approx([0.95, 1.05], rel=1e-4)  # type: ignore[attr-defined]


def test_weights_stay_positive_and_sum_to_k(device: torch.device) -> None:
    net = hand_network(device)
    bal = build_balancer("gradnorm", ("a", "b"), lr=1.0, weight_optimizer="sgd")
    for _ in range(5):
        net.zero_grad(set_to_none=True)
        w = bal.backward(losses_for(net, 0.0, 0.0, device), net)
        assert float(w.sum()) == pytest.approx(2.0) and bool((w > 0).all())
    bal.end_epoch(torch.ones(2))  # finite: no divergence


@pytest.mark.parametrize("on", ["layer", "features"])
def test_the_feature_shortcut_matches_the_direct_computation(on: str, device: torch.device) -> None:
    torch.manual_seed(0)
    tasks = ("a", "b", "c")
    interface = ModelInterface(input_shape=(5,), heads={t: ("regression", 1) for t in tasks})
    tree = TaskTree.model_validate(
        {"tasks": list(tasks), "branch_at": 1, "children": [{"tasks": [t]} for t in tasks]}
    )
    net = build_network(
        tree, BackboneSpec(name="mlp", params={"width": 6, "depth": 2}), interface
    ).to(device)
    x, y = torch.randn(12, 5, device=device), torch.randn(12, device=device)
    fast = build_balancer("gradnorm", tasks, norm_on=on)
    fast.attach(net)
    direct = build_balancer("gradnorm", tasks, norm_on=on)
    direct.attach(net)
    direct._tap.separable = False  # type: ignore[attr-defined]
    for scale in (1.0, 0.5, 0.8):
        results = []
        for bal in (fast, direct):
            net.zero_grad(set_to_none=True)
            out = net(x)
            losses = torch.stack([((out[t] - y) ** 2).mean() for t in tasks]) * scale
            w = bal.backward(losses, net)
            results.append((w, {n: p.grad.clone() for n, p in net.named_parameters()}))  # type: ignore[union-attr]
        (w1, g1), (w2, g2) = results
        torch.testing.assert_close(w1, w2)
        for name in g1:
            torch.testing.assert_close(g1[name], g2[name], msg=name)
        torch.testing.assert_close(fast.weights, direct.weights)  # type: ignore[attr-defined]


def test_on_features_measures_the_shared_features(device: torch.device) -> None:
    # z = 1 is the shared output; ||dL_a/dz|| = |2 * 2 * 2| = 8, ||dL_b/dz|| = 2: the same
    # signs as on the layer (there both norms carry a factor sqrt2), so one SGD step gives
    # w = (1 - 8 lr, 1 + 2 lr), renormalised
    net = hand_network(device)
    lr = 0.01
    bal = build_balancer("gradnorm", ("a", "b"), lr=lr, weight_optimizer="sgd", norm_on="features")
    bal.attach(net)
    bal.backward(losses_for(net, 0.0, 0.0, device), net)
    raw = [1 - lr * 8, 1 + lr * 2]
    assert bal.weights.detach().tolist() == pytest.approx([v * 2 / sum(raw) for v in raw])  # type: ignore[attr-defined]
