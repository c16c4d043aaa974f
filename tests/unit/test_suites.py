"""Built-in suites (digits, synthetic) and the suite registry."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from autotask.errors import ConfigError, UnknownNameError
from autotask.suites import TaskSuite, get_suite, list_suites
from autotask.suites.base import SPLITS

# --- registry -------------------------------------------------------------------------


def test_unknown_suite_lists_the_builtins() -> None:
    with pytest.raises(UnknownNameError) as info:
        get_suite("nope")
    assert all(name in str(info.value) for name in ("digits", "synthetic", "tabular"))


def test_list_suites_has_the_builtins() -> None:
    assert {"digits", "synthetic", "tabular"} <= set(list_suites())
    assert list_suites("syn*") == ["synthetic"]


def test_module_function_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "autotask_test_user_suite.py"
    module.write_text(
        textwrap.dedent(
            """
            from autotask.suites import get_suite

            def factory(*, seed=0):
                return get_suite("synthetic", n_tasks=2, n_groups=1, n_samples=60, seed=seed)

            def not_a_suite():
                return 42
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    suite = get_suite("autotask_test_user_suite:factory", seed=3)
    assert isinstance(suite, TaskSuite)
    assert suite.task_names == ["t0", "t1"]
    with pytest.raises(ConfigError, match="not TaskSuite"):
        get_suite("autotask_test_user_suite:not_a_suite")
    with pytest.raises(ConfigError, match="bad parameters"):
        get_suite("autotask_test_user_suite:factory", colour="red")


def _assert_suites_equal(a: TaskSuite, b: TaskSuite) -> None:
    assert a.key() == b.key()
    for split in SPLITS:
        sa, sb = a.splits[split], b.splits[split]
        assert torch.equal(sa.x, sb.x)
        for task in a.task_names:
            assert torch.equal(sa.targets[task], sb.targets[task])
            assert torch.equal(sa.masks[task], sb.masks[task])


def _assert_contract(suite: TaskSuite) -> None:
    """What every suite promises: float32 inputs, typed targets, bool masks, a backbone."""
    assert set(suite.splits) == set(SPLITS)
    assert suite.default_backbone["name"] == "mlp"
    for split in suite.splits.values():
        assert split.x.dtype == torch.float32
        assert tuple(split.x.shape[1:]) == suite.input_shape
        for task in suite.tasks:
            target, mask = split.targets[task.name], split.masks[task.name]
            assert mask.dtype == torch.bool and mask.shape == (len(split),)
            if task.kind == "classification":
                assert target.dtype == torch.int64
                assert int(target.min()) >= 0 and int(target.max()) < task.out_features
            else:
                assert target.dtype == torch.float32
            if task.kind == "binary":
                assert set(target.unique().tolist()) <= {0.0, 1.0}


# --- digits ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> TaskSuite:
    return get_suite("digits")


def test_digits_shapes_and_kinds(digits: TaskSuite) -> None:
    _assert_contract(digits)
    assert digits.input_shape == (64,)
    assert sum(len(s) for s in digits.splits.values()) == 1797
    kinds = {t.name: t.kind for t in digits.tasks}
    assert kinds["digit"] == "classification" and digits.task("digit").out_features == 10
    assert {kinds[n] for n in ("parity", "gt4", "prime", "loop")} == {"binary"}
    assert kinds["ink"] == kinds["symmetry"] == "regression"
    assert len(digits.tasks) >= 7
    x = digits.splits["train"].x
    assert float(x.min()) >= 0.0 and float(x.max()) == 1.0


def test_digits_labels_follow_the_digit(digits: TaskSuite) -> None:
    for split in digits.splits.values():
        digit = split.targets["digit"].numpy()
        expected = {
            "parity": digit % 2 == 1,
            "gt4": digit > 4,
            "prime": np.isin(digit, [2, 3, 5, 7]),
            "loop": np.isin(digit, [0, 4, 6, 8, 9]),
        }
        for name, values in expected.items():
            assert np.array_equal(split.targets[name].numpy(), values.astype(np.float32)), name
    train = digits.splits["train"]
    three = int(np.flatnonzero(train.targets["digit"].numpy() == 3)[0])
    assert train.targets["parity"][three] == 1 and train.targets["prime"][three] == 1
    assert train.targets["loop"][three] == 0 and train.targets["gt4"][three] == 0


def test_digits_regression_targets_are_standardized_on_train(digits: TaskSuite) -> None:
    for name in ("ink", "symmetry"):
        train = digits.splits["train"].targets[name].double()
        assert abs(float(train.mean())) < 1e-5 and abs(float(train.std(unbiased=False)) - 1) < 1e-5
        scaling = digits.metadata["target_scaling"][name]
        val = digits.splits["val"]
        images = val.x.double().reshape(-1, 8, 8)
        raw = (
            images.sum(dim=(1, 2))
            if name == "ink"
            else -(images - images.flip(-1)).abs().mean(dim=(1, 2))
        )
        restored = val.targets[name].double() * scaling["std"] + scaling["mean"]
        assert torch.allclose(restored, raw, atol=1e-4)


def test_digits_split_is_stratified_and_seeded(digits: TaskSuite) -> None:
    counts = np.bincount(digits.splits["test"].targets["digit"].numpy(), minlength=10)
    assert counts.min() >= 25
    _assert_suites_equal(digits, get_suite("digits"))
    other = get_suite("digits", seed=1)
    assert other.key() != digits.key()
    assert not torch.equal(other.splits["test"].x, digits.splits["test"].x)
    assert digits.params == {"seed": 0, "val_fraction": 0.15, "test_fraction": 0.15}


def test_digits_rejects_bad_fractions() -> None:
    with pytest.raises(ConfigError, match="fractions"):
        get_suite("digits", val_fraction=0.6, test_fraction=0.5)


# --- synthetic ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic() -> TaskSuite:
    return get_suite("synthetic")


def test_synthetic_metadata_and_kinds(synthetic: TaskSuite) -> None:
    _assert_contract(synthetic)
    assert synthetic.task_names == [f"t{i}" for i in range(6)]
    assert synthetic.metadata["groups"] == [["t0", "t1", "t2"], ["t3", "t4", "t5"]]
    assert synthetic.metadata["conflicts"] == [["t0", "t1"]]
    assert [t.kind for t in synthetic.tasks].count("binary") == 1
    assert synthetic.task("t5").kind == "binary"
    assert synthetic.input_shape == (32,)
    assert sum(len(s) for s in synthetic.splits.values()) == 2000


def test_synthetic_labels_are_scarce_in_train_only(synthetic: TaskSuite) -> None:
    train = synthetic.splits["train"]
    for name in synthetic.task_names:
        assert int(train.masks[name].sum()) == round(0.15 * len(train))
        assert bool(synthetic.splits["val"].masks[name].all())
        assert bool(synthetic.splits["test"].masks[name].all())
    assert torch.equal(train.masks["t0"], train.masks["t1"])  # the conflicting pair
    assert not torch.equal(train.masks["t2"], train.masks["t3"])
    labelled = train.targets["t3"][train.masks["t3"]].double()
    assert abs(float(labelled.mean())) < 1e-5
    assert abs(float(labelled.std(unbiased=False)) - 1) < 1e-5


def test_synthetic_is_deterministic(synthetic: TaskSuite) -> None:
    _assert_suites_equal(synthetic, get_suite("synthetic"))
    other = get_suite("synthetic", seed=1)
    assert other.key() != synthetic.key()
    assert not torch.equal(other.splits["train"].x, synthetic.splits["train"].x)
    assert synthetic.params["n_tasks"] == 6 and synthetic.params["seed"] == 0


def test_synthetic_layout_for_other_sizes() -> None:
    suite = get_suite("synthetic", n_tasks=7, n_groups=3, conflicts=2, n_samples=100)
    assert suite.metadata["groups"] == [["t0", "t1", "t2"], ["t3", "t4"], ["t5", "t6"]]
    assert suite.metadata["conflicts"] == [["t0", "t1"], ["t3", "t4"]]
    assert [t.name for t in suite.tasks if t.kind == "binary"] == ["t5"]
    _assert_contract(suite)


@pytest.mark.parametrize(
    ("params", "word"),
    [
        ({"n_tasks": 0}, "n_tasks"),
        ({"n_groups": 0}, "n_groups"),
        ({"n_groups": 7}, "n_groups"),
        ({"n_samples": 29}, "n_samples"),
        ({"noise": -0.1}, "noise"),
        ({"conflicts": -1}, "conflicts"),
        ({"conflicts": 3}, "conflicts"),
        ({"n_tasks": 3, "n_groups": 3, "conflicts": 1}, "conflicts"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"input_dim": 7}, "input_dim"),
        ({"label_fraction": 0.0}, "label_fraction"),
        ({"val_fraction": 0.9}, "fractions"),
    ],
)
def test_synthetic_rejects_bad_parameters(params: dict[str, float], word: str) -> None:
    with pytest.raises(ConfigError, match=word) as info:
        get_suite("synthetic", **params)
    assert "\n" not in str(info.value)


def _trunk_gradient_cosines(suite: TaskSuite, steps: int, seed: int = 0) -> np.ndarray:
    """Mean pairwise cosine of per-task gradients on a shared MLP trunk while training it."""
    torch.manual_seed(seed)
    width = 32
    trunk = nn.Sequential(
        nn.Linear(suite.input_shape[0], width), nn.ReLU(),
        nn.Linear(width, width), nn.ReLU(),
        nn.Linear(width, width), nn.ReLU(),
    )  # fmt: skip
    heads = nn.Linear(width, len(suite.tasks))
    optimizer = torch.optim.Adam([*trunk.parameters(), *heads.parameters()], lr=3e-3)
    train = suite.splits["train"]
    shared = list(trunk.parameters())
    total = np.zeros((len(suite.tasks), len(suite.tasks)))
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=generator)
    for step in range(steps):
        start = (step * 128) % len(train)
        rows = order[start : start + 128]
        out = heads(trunk(train.x[rows]))
        losses = []
        for j, task in enumerate(suite.tasks):
            mask = train.masks[task.name][rows]
            target = train.targets[task.name][rows][mask]
            loss_fn = (
                nn.functional.binary_cross_entropy_with_logits
                if task.kind == "binary"
                else nn.functional.mse_loss
            )
            losses.append(loss_fn(out[mask, j], target))
        grads = torch.stack(
            [
                torch.cat(
                    [g.flatten() for g in torch.autograd.grad(loss, shared, retain_graph=True)]
                )
                for loss in losses
            ]
        )
        unit = grads / grads.norm(dim=1, keepdim=True).clamp_min(1e-12)
        total += (unit @ unit.T).numpy()
        optimizer.zero_grad()
        torch.stack(losses).mean().backward()
        optimizer.step()
    return total / steps


def test_synthetic_planted_structure_shows_in_gradient_cosines(synthetic: TaskSuite) -> None:
    cos = _trunk_gradient_cosines(synthetic, steps=150)
    names = synthetic.task_names
    group = {t: g for g, tasks in enumerate(synthetic.metadata["groups"]) for t in tasks}
    conflicts = {tuple(p) for p in synthetic.metadata["conflicts"]}
    within, cross, conflict = [], [], []
    for i, j in itertools.combinations(range(len(names)), 2):
        pair = (names[i], names[j])
        bucket = (
            conflict if pair in conflicts else within if group[pair[0]] == group[pair[1]] else cross
        )
        bucket.append(cos[i, j])
    assert np.mean(within) > np.mean(cross) + 0.02
    assert max(conflict) < 0 and max(conflict) < min(cross)
