"""Fused training: every network's result equals its result trained alone."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode

from autotask.balancing.scalarized import UncertaintyWeighting
from autotask.engine import runner
from autotask.engine.cache import Claim, MemoryCache
from autotask.engine.fused import (
    FUSED_ENV,
    fused_enabled,
    plan_groups,
    runtime_blocker,
    train_networks,
)
from autotask.engine.grouped import GroupedTrees
from autotask.engine.job import NetworkJob
from autotask.engine.result import NetworkResult
from autotask.engine.runtime import HostSplit, Runtime, RuntimeSpec
from autotask.errors import ConfigError, TrialDiverged
from autotask.models import build_network, interface_for
from autotask.search import scoring
from autotask.spec import (
    ArchitectureSpec,
    BackboneSpec,
    BalancerSpec,
    ModelInterface,
    OptimizerSpec,
    TaskTree,
)
from autotask.suites.base import Split, Task, TaskSuite
from tests.conftest import make_context, make_tiny_suite

MLP = BackboneSpec(name="mlp", params={"width": 16, "depth": 3})
OPT = OptimizerSpec(lr=0.01, epochs=8, patience=8, batch_size=32)


def _suite(poison: str | None = None, image: bool = False, cube: bool = False) -> TaskSuite:
    """The tiny suite plus ``bin2`` (binary) and ``reg2`` (regression, a third unlabelled),
    so that several tasks share a head kind; ``image`` gives inputs of shape (2, 4),
    ``cube`` images of shape (2, 2, 4) (channels, height, width: the inputs and their
    negation as two channels)."""
    shape = (2, 2, 4) if cube else (2, 4) if image else (8,)
    base = make_tiny_suite(poison=poison)
    splits = {}
    for name, split in base.splits.items():
        x = split.x
        targets = dict(split.targets)
        masks = dict(split.masks)
        targets["bin2"] = (x[:, 0] - x[:, 3] > 0).float()
        masks["bin2"] = torch.ones(len(x), dtype=torch.bool)
        targets["reg2"] = x[:, 1] * 2.0 - x[:, 2]
        masks["reg2"] = torch.arange(len(x)) % 3 != 0
        if poison == "bin2" and name == "train":
            targets["bin2"] = torch.full_like(targets["bin2"], float("inf"))
        pixels = torch.stack([x, -x], dim=1) if cube else x
        splits[name] = Split(pixels.reshape(-1, *shape), targets, masks)
    return TaskSuite(
        name="tiny2",
        tasks=[*base.tasks, Task("bin2", "binary", 1), Task("reg2", "regression", 1)],
        splits=splits,
        input_shape=shape,
        default_backbone=base.default_backbone,
        params={"poison": poison, "shape": list(shape)},
    )


def _data(suite: TaskSuite, device: torch.device) -> dict[str, Split]:
    return {name: split.to(device) for name, split in suite.splits.items()}


def _job(tasks: tuple[str, ...], **kw: Any) -> NetworkJob:
    tree = kw.pop("tree", None) or TaskTree(tasks=tasks)
    return NetworkJob(
        "test",
        tree,
        kw.pop("backbone", MLP),
        kw.pop("optimizer", OPT),
        kw.pop("balancer", BalancerSpec()),
        kw.pop("seed", 0),
        **kw,
    )


def _branched(tasks: tuple[str, str, str]) -> TaskTree:
    """Root over stage 0, then ``tasks[0]`` alone and the other two together."""
    return TaskTree(
        tasks=tasks,
        branch_at=1,
        children=(TaskTree(tasks=(tasks[0],)), TaskTree(tasks=tasks[1:])),
    )


def _same(a: NetworkResult, b: NetworkResult, tol: float = 1e-4) -> None:
    assert a.status == b.status
    assert a.reason == b.reason
    assert a.tasks == b.tasks
    assert (a.epochs_run, a.best_epoch) == (b.epochs_run, b.best_epoch)
    assert (a.params, a.macs) == (b.params, b.macs)
    assert a.history == pytest.approx(b.history, rel=tol, abs=tol, nan_ok=True)
    assert a.val_metrics.keys() == b.val_metrics.keys()
    for split_a, split_b in ((a.val_metrics, b.val_metrics), (a.test_metrics, b.test_metrics)):
        for task, value in split_a.items():
            assert value == pytest.approx(split_b[task], rel=tol, abs=tol)
    for more_a, more_b in (
        (a.val_secondary, b.val_secondary),
        (a.test_secondary, b.test_secondary),
    ):
        assert more_a.keys() == more_b.keys()
        for task, values in more_a.items():
            assert values.keys() == more_b[task].keys()
            for name, value in values.items():
                assert value == pytest.approx(more_b[task][name], rel=tol, abs=tol)
    if a.val_loss is not None:
        assert a.val_loss == pytest.approx(b.val_loss, rel=tol, abs=tol)


def _compare(
    jobs: list[NetworkJob],
    suite: TaskSuite,
    device: torch.device,
    runtime: Runtime | None = None,
) -> tuple[list[NetworkResult], list[NetworkResult]]:
    interface, data = interface_for(suite), _data(suite, device)
    alone = train_networks(jobs, data, interface, fused=False, runtime=runtime)
    together = train_networks(jobs, data, interface, fused=True, runtime=runtime)
    for (net_a, a), (net_b, b) in zip(alone, together, strict=True):
        _same(a, b)
        if a.ok:  # the returned networks hold the best epoch's weights
            for (name, x), (_, y) in zip(
                net_a.state_dict().items(), net_b.state_dict().items(), strict=True
            ):
                assert torch.allclose(x.float(), y.float(), atol=1e-4), name
    return [r for _, r in alone], [r for _, r in together]


def test_identical_single_task_networks_are_grouped_and_match(device: torch.device) -> None:
    suite = _suite()
    jobs = [_job(("bin",)), _job(("bin2",)), _job(("reg",)), _job(("reg2",)), _job(("cls",))]
    assert plan_groups(jobs, interface_for(suite), fused=True) == [[0, 1], [2, 3], [4]]
    alone, _ = _compare(jobs, suite, device)
    assert all(r.ok for r in alone)


def test_multitask_trees_with_loss_balancers_match(device: torch.device) -> None:
    suite = _suite()
    tasks = [("bin", "reg", "reg2"), ("bin2", "reg", "reg2"), ("bin", "reg2", "reg")]
    balancers = ["equal", "static", "uncertainty", "dwa", "rlw", "famo", "imtl_l"]
    jobs = [
        _job(
            (),
            tree=_branched(tasks[i % len(tasks)]),  # type: ignore[arg-type]
            balancer=BalancerSpec(
                name=name, params={"weight.reg": 3.0} if name == "static" else {}
            ),
        )
        for i, name in enumerate(balancers)
    ]
    assert plan_groups(jobs, interface_for(suite), fused=True) == [list(range(len(jobs)))]
    alone, _ = _compare(jobs, suite, device)
    assert all(r.ok for r in alone)
    # the balancers really differ: not every network ends where equal weighting does
    assert len({round(r.val_loss or 0.0, 6) for r in alone}) > 1


def test_mixed_structures_are_grouped_by_signature(device: torch.device) -> None:
    suite = _suite()
    jobs = [
        _job(("bin", "reg")),
        _job(("bin",)),
        _job(("bin2", "reg2")),
        _job((), tree=_branched(("cls", "bin", "reg"))),
        _job(("bin2",)),
        _job(("bin", "reg"), seed=1),  # another seed: other init and batch order
        _job(("bin", "reg2"), optimizer=OPT.model_copy(update={"lr": 0.02})),
    ]
    assert plan_groups(jobs, interface_for(suite), fused=True) == [[0, 2], [1, 4], [3], [5], [6]]
    _compare(jobs, suite, device)


def test_networks_stop_at_their_own_epochs(device: torch.device) -> None:
    suite = _suite()
    optimizer = OPT.model_copy(update={"epochs": 30, "lr": 0.05})
    jobs = [
        _job(("bin",), optimizer=optimizer.model_copy(update={"patience": p}))
        for p in (1, 2, 4, 30)
    ]
    assert plan_groups(jobs, interface_for(suite), fused=True) == [[0, 1, 2, 3]]
    alone, _ = _compare(jobs, suite, device)
    epochs = [r.epochs_run for r in alone]
    assert len(set(epochs)) >= 3 and epochs[-1] == 30


def test_grad_clip_weight_decay_sgd_and_cosine_stay_per_network(device: torch.device) -> None:
    suite = _suite()
    for optimizer in (
        OPT.model_copy(update={"name": "sgd", "momentum": 0.9, "lr": 0.05, "grad_clip": 0.05}),
        OPT.model_copy(update={"name": "adamw", "weight_decay": 0.1, "schedule": "cosine"}),
        OPT.model_copy(update={"weight_decay": 0.01, "grad_clip": 0.1}),
    ):
        jobs = [
            _job(("bin", "reg"), optimizer=optimizer),
            _job(("bin2", "reg2"), optimizer=optimizer),
        ]
        _compare(jobs, suite, device)


def test_a_diverging_network_fails_alone(device: torch.device) -> None:
    suite = _suite(poison="bin")
    jobs = [_job(("bin",)), _job(("bin2",)), _job(("bin", "reg")), _job(("bin2", "reg"))]
    _, together = _compare(jobs, suite, device)
    assert [r.status for r in together] == ["diverged", "ok", "diverged", "ok"]
    assert together[0].reason == "non-finite training loss at epoch 1 (bin)"
    assert together[1].epochs_run == OPT.epochs


def test_a_balancer_failing_mid_epoch_stops_only_its_network(
    device: torch.device, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = UncertaintyWeighting._scalarize
    calls: dict[int, int] = {}

    def flaky(self: UncertaintyWeighting, values: torch.Tensor) -> torch.Tensor:
        calls[id(self)] = calls.get(id(self), 0) + 1
        if (
            "bin2" in self.tasks and calls[id(self)] == 12
        ):  # 5 batches an epoch: epoch 3, second batch
            raise TrialDiverged("balancer 'uncertainty': solver failed")
        return original(self, values)

    monkeypatch.setattr(UncertaintyWeighting, "_scalarize", flaky)
    suite = _suite()
    uw = BalancerSpec(name="uncertainty")
    jobs = [_job(("bin", "reg"), balancer=uw), _job(("bin2", "reg"), balancer=uw)]
    _, together = _compare(jobs, suite, device)
    assert together[1].status == "diverged"
    assert together[1].reason == "balancer 'uncertainty': solver failed at epoch 3"
    assert together[1].history and together[0].ok and together[0].epochs_run == OPT.epochs


def test_gradient_balancers_and_dropout_fall_back(
    device: torch.device, caplog: pytest.LogCaptureFixture
) -> None:
    suite = _suite()
    dropout = BackboneSpec(name="mlp", params={"width": 16, "depth": 3, "dropout": 0.2})
    jobs = [
        _job(("bin", "reg"), balancer=BalancerSpec(name="pcgrad")),
        _job(("bin2", "reg2"), balancer=BalancerSpec(name="pcgrad")),
        _job(("bin", "reg"), balancer=BalancerSpec(name="gradnorm")),
        _job(("bin",), backbone=dropout),
        _job(("bin2",), backbone=dropout),
    ]
    with caplog.at_level(logging.DEBUG, logger="autotask"):
        assert plan_groups(jobs, interface_for(suite), fused=True) == [[0], [1], [2], [3], [4]]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert sum("'pcgrad'" in m for m in messages) == 1  # once per reason
    assert sum("'gradnorm'" in m for m in messages) == 1
    assert sum("dropout" in m for m in messages) == 1
    _compare(jobs[:2] + jobs[3:], suite, device)


def test_batchnorm_cnns_are_grouped_and_match(device: torch.device) -> None:
    suite = _suite(image=True)
    cnn = BackboneSpec(name="cnn", params={"channels": [4, 6]})
    jobs = [
        _job(("bin",), backbone=cnn),
        _job(("bin2",), backbone=cnn),
        _job(("reg",), backbone=cnn, optimizer=OPT.model_copy(update={"patience": 2})),
        _job(("reg2",), backbone=cnn),
        _job((), backbone=cnn, tree=_branched(("cls", "bin", "reg"))),
        _job((), backbone=cnn, tree=_branched(("cls", "bin2", "reg2"))),
    ]
    assert plan_groups(jobs, interface_for(suite), fused=True) == [[0, 1], [2, 3], [4, 5]]
    _compare(jobs, suite, device)


def test_heartbeats_and_seconds_per_network(device: torch.device) -> None:
    suite = _suite()
    beats: dict[str, list[tuple[int, float]]] = {"a": [], "b": []}
    fast = OPT.model_copy(update={"patience": 1, "epochs": 30, "lr": 0.05})
    jobs = [_job(("bin",), optimizer=fast), _job(("bin2",))]
    seen: list[int] = []
    results = train_networks(
        jobs,
        _data(suite, device),
        interface_for(suite),
        on_epoch=[
            lambda e, v: beats["a"].append((e, v)),
            lambda e, v: beats["b"].append((e, v)),
        ],
        fused=True,
        on_result=lambda i, _n, _r: seen.append(i),
    )
    for key, (_, result) in zip("ab", results, strict=True):
        assert [e for e, _ in beats[key]] == list(range(1, result.epochs_run + 1))
        assert [v for _, v in beats[key]] == result.history
        assert result.train_seconds > 0
    assert results[0][1].epochs_run < results[1][1].epochs_run
    assert seen == [0, 1]  # the network that stopped first is reported first


def test_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FUSED_ENV, raising=False)
    assert fused_enabled()
    monkeypatch.setenv(FUSED_ENV, "0")
    assert not fused_enabled()
    suite = _suite()
    jobs = [_job(("bin",)), _job(("bin2",))]
    assert plan_groups(jobs, interface_for(suite)) == [[0], [1]]
    monkeypatch.setenv(FUSED_ENV, "maybe")
    with pytest.raises(ConfigError, match=FUSED_ENV):
        fused_enabled()


class _RecordingCache(MemoryCache):
    """Records claims; ``elsewhere`` results appear as if another worker stored them."""

    def __init__(self, elsewhere: dict[str, NetworkResult] | None = None) -> None:
        super().__init__()
        self.claims: list[str] = []
        self.held: set[str] = set()
        self.elsewhere = elsewhere or {}

    @contextmanager
    def claim(self, job: NetworkJob) -> Iterator[Claim]:
        assert job.key not in self.held, "claimed twice"
        self.claims.append(job.key)
        if job.key in self.elsewhere:
            yield Claim(result=self.put(job, self.elsewhere[job.key], None))
            return
        self.held.add(job.key)
        try:
            yield Claim()
        finally:
            self.held.discard(job.key)

    def put(self, job: NetworkJob, result: NetworkResult, study_name: str | None) -> NetworkResult:
        if job.key not in self.elsewhere:
            assert job.key in self.held, "stored without holding the claim"
        return super().put(job, result, study_name)


def _spec() -> ArchitectureSpec:
    return ArchitectureSpec(
        networks=(
            TaskTree(tasks=("bin", "reg")),
            TaskTree(tasks=("bin2", "reg2")),
            TaskTree(tasks=("cls",)),
        ),
        optimizer=OPT,
        backbone=MLP,
    )


def test_context_stores_the_same_results_with_and_without_fusion() -> None:
    suite = _suite()
    stored = []
    for fused in (False, True):
        context = make_context(suite, OPT)
        context.runner.cache = _RecordingCache()
        context.runner.fused = fused
        score = context.score(_spec())
        assert (score.trained, score.reused) == (2, 1)  # [cls] is the baseline of cls
        cache = context.runner.cache
        stored.append(cache._results)
        assert sorted(cache.claims) == sorted(set(cache.claims))  # each job claimed once
    alone, together = stored
    assert alone.keys() == together.keys() and len(alone) == 2 + 5  # + the baselines
    for key in alone:
        _same(alone[key], together[key])


def test_context_never_trains_a_job_another_worker_stored() -> None:
    suite = _suite()
    first = make_context(suite, OPT)
    first.runner.fused = False
    first.score(_spec())
    done = first.runner.cache._results  # type: ignore[attr-defined]
    context = make_context(suite, OPT)
    job = context.job(TaskTree(tasks=("bin2", "reg2")), MLP, OPT, BalancerSpec())
    cache = _RecordingCache(elsewhere={job.key: done[job.key]})
    context.runner.cache = cache
    context.runner.fused = True
    trained: list[str] = []
    context.runner.events.subscribe(on_network=trained.append)
    score = context.score(_spec())
    assert "[bin2,reg2]" not in trained and "[bin,reg]" in trained
    assert (score.trained, score.reused) == (1, 2)
    assert job.key in cache.claims


@pytest.mark.parametrize("strategy", ["sequential", "fused", "lockstep"])
def test_every_strategy_claims_in_the_order_of_cache_keys(strategy: str) -> None:
    """Two workers never hold one claim each while waiting for the other's; a job listed
    twice trains once (its second use is a reuse)."""
    context = make_context(_suite(), OPT)
    jobs = list(reversed(context.network_jobs(_spec())))
    jobs.append(jobs[0])
    cache = _RecordingCache()
    context.runner.cache = cache
    context.runner.fused = strategy == "fused"
    if strategy == "lockstep":
        rounds: list[int] = []
        runs = context.runner.run_lockstep(jobs, lambda epoch, _results: rounds.append(epoch))
        assert rounds == list(range(1, len(rounds) + 1)) and rounds
    else:
        runs = context.runner.run_many(jobs)
    assert cache.claims == sorted({job.key for job in jobs})
    assert [trained for _, trained in runs] == [True, True, True, False]
    assert runs[0][0] == runs[-1][0]


def test_per_pixel_tasks_train_alone() -> None:
    interface = ModelInterface(
        input_shape=(3, 8, 8), heads={"seg": ("segmentation", 3), "seg2": ("segmentation", 3)}
    )
    backbone = BackboneSpec(name="cnn", params={"channels": [4, 6]})
    jobs = [
        NetworkJob("test", TaskTree(tasks=(t,)), backbone, OptimizerSpec(), BalancerSpec(), 0)
        for t in ("seg", "seg2")
    ]
    assert plan_groups(jobs, interface, fused=True) == [[0], [1]]


# --- under the training runtime ----------------------------------------------------------

#: bf16 keeps 8 significant bits: one rounding step is 2**-8 (0.4 %) of a value. A batched
#: product (bmm, grouped conv) may round one activation or weight cast to the other side of
#: a bf16 step than the plain product (mm, conv) does; such a flip moves a network's training
#: by about one step, and further flips mostly average out. Two steps bound every network
#: measured here (at most 0.3 % apart); bf16 and fp32 training of the same networks differ
#: by 1-4 %, so the tolerance still tells bf16 from fp32 (asserted below).
BF16_TOL = 2 * 2**-8


def _close(a: float, b: float, tol: float = BF16_TOL) -> bool:
    return abs(a - b) <= tol * max(1.0, abs(a))


def _same_bf16(a: NetworkResult, b: NetworkResult) -> None:
    """``b`` trained as ``a`` up to bf16 rounding: same epochs (early stopping off), the
    same best epoch where no other epoch's loss is within the tolerance, close values."""
    assert (a.status, a.reason, a.tasks) == (b.status, b.reason, b.tasks)
    assert (a.params, a.macs, a.epochs_run) == (b.params, b.macs, b.epochs_run)
    assert len(a.history) == len(b.history)
    assert all(_close(x, y) for x, y in zip(a.history, b.history, strict=True))
    best = a.history[a.best_epoch - 1]
    others = [v for e, v in enumerate(a.history, 1) if e != a.best_epoch]
    if all(v - best > 2 * BF16_TOL * abs(best) for v in others):
        assert a.best_epoch == b.best_epoch
    assert a.val_loss is not None and b.val_loss is not None and _close(a.val_loss, b.val_loss)
    for split_a, split_b in ((a.val_metrics, b.val_metrics), (a.test_metrics, b.test_metrics)):
        assert split_a.keys() == split_b.keys()
        assert all(_close(v, split_b[t]) for t, v in split_a.items())
    assert a.val_secondary.keys() == b.val_secondary.keys()
    assert a.test_secondary.keys() == b.test_secondary.keys()


def _gap(a: NetworkResult, b: NetworkResult) -> float:
    return max(abs(x - y) / max(1.0, abs(x)) for x, y in zip(a.history, b.history, strict=True))


def _compare_bf16(jobs: list[NetworkJob], suite: TaskSuite, device: torch.device) -> None:
    interface, data = interface_for(suite), _data(suite, device)
    bf16 = Runtime(device, precision="bf16")
    assert plan_groups(jobs, interface, fused=True, runtime=bf16, data=data) == plan_groups(
        jobs, interface, fused=True
    )
    alone = train_networks(jobs, data, interface, fused=False, runtime=bf16)
    together = train_networks(jobs, data, interface, fused=True, runtime=bf16)
    fp32 = train_networks(jobs, data, interface, fused=True)
    for (net_a, a), (net_b, b) in zip(alone, together, strict=True):
        _same_bf16(a, b)
        for (name, x), (_, y) in zip(
            net_a.state_dict().items(), net_b.state_dict().items(), strict=True
        ):
            assert x.dtype == y.dtype == (torch.long if "num_batches" in name else torch.float)
            assert torch.allclose(x.float(), y.float(), atol=BF16_TOL), name
    # the fused networks trained under autocast: fp32 training lands outside the tolerance
    assert max(_gap(b, c) for (_, b), (_, c) in zip(together, fp32, strict=True)) > 2 * BF16_TOL


def test_bf16_fused_networks_match_bf16_networks_trained_alone(device: torch.device) -> None:
    suite = _suite()  # reg2 is partly unlabelled: the masked loss path
    jobs = [_job(("bin",)), _job(("bin2",)), _job(("reg",)), _job(("reg2",))]
    jobs += [
        _job((), tree=_branched(tasks), balancer=BalancerSpec(name=name))
        for tasks, name in (
            (("bin", "reg", "reg2"), "equal"),
            (("bin2", "reg", "reg2"), "uncertainty"),
            (("bin", "reg2", "reg"), "dwa"),
        )
    ]
    _compare_bf16(jobs, suite, device)


def _cnn_jobs() -> list[NetworkJob]:
    """Two single-task and two branched BatchNorm CNNs: two groups of two."""
    cnn = BackboneSpec(name="cnn", params={"channels": [4, 6]})
    return [
        _job(("bin",), backbone=cnn),
        _job(("bin2",), backbone=cnn),
        _job((), backbone=cnn, tree=_branched(("cls", "bin", "reg"))),
        _job((), backbone=cnn, tree=_branched(("cls", "bin2", "reg2"))),
    ]


def test_bf16_fused_batchnorm_cnns_match_bf16_cnns_trained_alone(device: torch.device) -> None:
    suite = _suite(image=True)
    jobs = _cnn_jobs()
    _compare_bf16(jobs, suite, device)


def test_runtimes_grouping_cannot_follow_train_alone(
    device: torch.device, caplog: pytest.LogCaptureFixture
) -> None:
    suite = _suite()
    interface, data = interface_for(suite), _data(suite, device)
    jobs = [_job(("bin",)), _job(("bin2",))]
    grouped = [[0, 1]]
    for runtime in (Runtime(device), Runtime(device, precision="bf16", channels_last=True)):
        assert runtime_blocker(runtime, data) is None
        assert plan_groups(jobs, interface, fused=True, runtime=runtime, data=data) == grouped
    streamed = {**data, "train": HostSplit(data["train"].x, data["train"].targets, {})}
    blocked = {
        "fp16 loss scaling": (Runtime(device, precision="fp16"), data),
        "torch.compile": (Runtime(device, precision="bf16", compile_backend="aot_eager"), data),
        "streamed from the host": (Runtime(device, precision="bf16"), streamed),
    }
    for reason, (runtime, split_data) in blocked.items():
        assert reason in (runtime_blocker(runtime, split_data) or "")
        with caplog.at_level(logging.DEBUG, logger="autotask"):
            plan = plan_groups(jobs, interface, fused=True, runtime=runtime, data=split_data)
        assert plan == [[0], [1]]
        assert any(reason in r.getMessage() for r in caplog.records)
    # channels-last convolutional networks group too (grouped NHWC convolutions)
    images = ModelInterface(input_shape=(3, 8, 8), heads={"a": ("binary", 1), "b": ("binary", 1)})
    cnn = BackboneSpec(name="cnn", params={"channels": [4, 6]})
    conv = [_job((t,), backbone=cnn) for t in ("a", "b")]
    last = Runtime(device, precision="bf16", channels_last=True)
    assert plan_groups(conv, images, fused=True, runtime=Runtime(device)) == grouped
    assert plan_groups(conv, images, fused=True, runtime=last) == grouped


def test_channels_last_fused_cnns_match_channels_last_cnns_trained_alone(
    device: torch.device, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite = _suite(cube=True)
    interface, data = interface_for(suite), _data(suite, device)
    jobs = _cnn_jobs()
    last = Runtime(device, channels_last=True)
    assert plan_groups(jobs, interface, fused=True, runtime=last, data=data) == [[0, 1], [2, 3]]
    formats: list[bool] = []
    forward = GroupedTrees.forward

    def spy(self: GroupedTrees, x: torch.Tensor, training: bool) -> list[torch.Tensor]:
        formats.append(x.is_contiguous(memory_format=torch.channels_last))
        return forward(self, x, training)

    monkeypatch.setattr(GroupedTrees, "forward", spy)
    alone, _ = _compare(jobs, suite, device, runtime=last)
    assert all(r.ok for r in alone)
    # after each group's structure probe (a contiguous dummy batch), NHWC batches only
    probes = 2
    assert len(formats) > probes and not any(formats[:probes]) and all(formats[probes:])


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[Runtime | None]:
    """The runtimes :meth:`Runner.run_many` passes to ``train_networks``."""
    seen: list[Runtime | None] = []
    original = runner.train_networks

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("runtime"))
        return original(*args, **kwargs)

    monkeypatch.setattr(runner, "train_networks", spy)
    return seen


def test_context_fuses_under_bf16_with_the_keys_of_sequential_bf16(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    suite = _suite()
    seen = _spy(monkeypatch)
    stored, keys = [], []
    for fused in (False, True):
        context = scoring.TrainingContext.create(
            suite,
            _RecordingCache(),
            seed=0,
            device=torch.device("cpu"),
            baseline_optimizer=OPT,
            baseline_backbone=MLP,
            runtime=RuntimeSpec(precision="bf16"),
        )
        context.runner.fused = fused
        score = context.score(_spec())
        assert (score.trained, score.reused) == (2, 1)
        stored.append(context.runner.cache._results)  # type: ignore[attr-defined]
        keys.append(score.network_keys)
    assert seen and all(r is not None and r.precision == "bf16" for r in seen)
    alone, together = stored
    assert keys[0] == keys[1] and alone.keys() == together.keys() and len(alone) == 2 + 5
    plain = make_context(suite, OPT)
    plain_keys = set(plain.score(_spec()).network_keys)
    assert not plain_keys & set(keys[0])  # the resolved numerics (bf16) are in the key
    for key in alone:
        _same_bf16(alone[key], together[key])


def test_context_trains_fp16_one_network_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    suite = _suite()
    seen = _spy(monkeypatch)
    context = scoring.TrainingContext.create(
        suite,
        MemoryCache(),
        seed=0,
        device=torch.device("cpu"),
        baseline_optimizer=OPT,
        baseline_backbone=MLP,
        runtime=RuntimeSpec(precision="fp16"),
    )
    context.runner.fused = True
    score = context.score(_spec())
    assert seen == [] and score.trained == 2


def test_grouped_linear_casts_its_shared_input_once_under_autocast() -> None:
    """Under bf16 autocast the first layer's input (one tensor shared by the K networks)
    is cast before it is expanded: the batched product gets a stride-0 view, not K copies."""
    suite = make_tiny_suite()
    interface = interface_for(suite)
    backbone = BackboneSpec.model_validate(suite.default_backbone)
    nets = [
        build_network(TaskTree(tasks=tuple(suite.task_names)), backbone, interface)
        for _ in range(4)
    ]
    group = GroupedTrees(nets)
    seen: list[torch.Tensor] = []

    class Products(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            if getattr(func, "__name__", "") in ("bmm", "baddbmm"):
                seen.append(args[-2])
            return func(*args, **(kwargs or {}))

    x = suite.splits["train"].x[:16]
    with torch.autocast("cpu", dtype=torch.bfloat16), Products():
        group.forward(x, training=True)
    first = seen[0]
    assert first.dtype == torch.bfloat16 and first.shape[0] == 4
    assert first.stride(0) == 0  # one cast input, viewed four times
