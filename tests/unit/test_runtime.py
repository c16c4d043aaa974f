"""Training runtime: precision (autocast, GradScaler), TF32, channels-last, torch.compile,
streaming of splits that exceed the device's data budget, and the cache key.

Every test takes the ``device`` fixture, so ``AUTOTASK_TEST_DEVICE=cuda`` runs the same
code paths on a GPU; checks that only make sense on CUDA are marked ``gpu``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from autotask.engine.cache import MemoryCache
from autotask.engine.job import NetworkJob
from autotask.engine.loop import train_network
from autotask.engine.observer import StepObserver, TrainStep
from autotask.engine.result import NetworkResult
from autotask.engine.runtime import (
    DATA_BUDGET_ENV,
    HostSplit,
    Runtime,
    RuntimeSpec,
    parse_runtime,
    place_splits,
    split_nbytes,
)
from autotask.errors import ConfigError
from autotask.models import interface_for
from autotask.models.tree import TreeNetwork
from autotask.search.evaluate import runtime_settings
from autotask.search.scoring import TrainingContext
from autotask.search.study_config import load_study_config
from autotask.spec import BackboneSpec, BalancerSpec, OptimizerSpec, TaskTree, load_spec
from autotask.suites.base import Split, Task, TaskSuite
from tests.conftest import make_tiny_suite

OPT = OptimizerSpec(lr=0.01, epochs=4, batch_size=32, patience=4)
TREE = TaskTree(tasks=("bin", "cls", "reg"))
BRANCHED = TaskTree(
    tasks=("bin", "cls", "reg"),
    branch_at=2,
    children=(TaskTree(tasks=("bin", "cls")), TaskTree(tasks=("reg",))),
)
EQUAL = BalancerSpec()
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def make_image_suite(n: int = 96, seed: int = 0) -> TaskSuite:
    """Two tasks on random 3x8x8 images (a CNN's input)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    score = x[:, 0].mean(dim=(1, 2)) - x[:, 2, :4].mean(dim=(1, 2))
    targets = {"up": (score > 0).float(), "level": x[:, 1].mean(dim=(1, 2))}
    cut1, cut2 = int(n * 0.6), int(n * 0.8)
    parts = {"train": slice(0, cut1), "val": slice(cut1, cut2), "test": slice(cut2, n)}
    splits = {
        name: Split(
            x=x[s].clone(),
            targets={t: v[s].clone() for t, v in targets.items()},
            masks={t: torch.ones(s.stop - s.start, dtype=torch.bool) for t in targets},
        )
        for name, s in parts.items()
    }
    return TaskSuite(
        name="images",
        tasks=[Task("up", "binary", 1), Task("level", "regression", 1)],
        splits=splits,
        input_shape=(3, 8, 8),
        default_backbone={"name": "cnn", "params": {"width": 8, "depth": 2}},
        params={"n": n, "seed": seed},
    )


def train(
    suite: TaskSuite,
    runtime: Runtime,
    balancer: BalancerSpec = EQUAL,
    tree: TaskTree = TREE,
    observer: Any = None,
) -> tuple[TreeNetwork, NetworkResult]:
    data = {k: v.to(runtime.device) for k, v in suite.splits.items()}
    job = NetworkJob(suite.key(), tree, BackboneSpec(**suite.default_backbone), OPT, balancer, 0)
    return train_network(
        job, data, interface_for(suite), runtime=runtime, observer_factory=observer
    )


def finite(result: NetworkResult) -> bool:
    values = [*result.val_metrics.values(), *result.test_metrics.values(), result.val_loss]
    return all(v is not None and math.isfinite(v) for v in values)


class DtypeProbe(StepObserver):
    """Records the dtype of the root block's output and of the losses at every step."""

    def __init__(self, net: TreeNetwork) -> None:
        self.outputs: set[torch.dtype] = set()
        self.losses: set[torch.dtype] = set()
        net.blocks["n0"].register_forward_hook(self._keep)

    def _keep(self, _module: nn.Module, _args: Any, output: torch.Tensor) -> None:
        if torch.is_grad_enabled():
            self.outputs.add(output.dtype)

    def before_backward(self, step: TrainStep) -> None:
        self.losses.add(step.losses.dtype)

    def after_backward(self, step: TrainStep) -> None:
        return None


# --- settings -------------------------------------------------------------------------


def test_defaults_resolve_to_plain_fp32_on_cpu() -> None:
    rt = RuntimeSpec().resolve("cpu")
    assert (rt.precision, rt.tf32, rt.channels_last, rt.compile_backend) == (
        "fp32",
        False,
        False,
        None,
    )
    assert rt.data_budget is None  # host memory: everything stays where it is
    assert rt.numerics() == {}
    assert rt.describe() == "cpu, fp32"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"precison": "bf16"}, "did you mean 'precision'"),
        ({"precision": "bf17"}, "precision"),
        ({"compile": "no-such-backend"}, "unknown torch.compile backend 'no-such-backend'"),
        ({"data_fraction": 0}, "data_fraction"),
        ({"data_budget_mb": -1}, "data_budget_mb"),
        ("bf16", "runtime must be a mapping"),
    ],
)
def test_bad_settings_are_config_errors(data: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_runtime(data, "study.yaml").resolve("cpu")


def test_tf32_and_fp16_balancers_are_checked() -> None:
    with pytest.raises(ConfigError, match="tf32 is a CUDA setting"):
        RuntimeSpec(tf32=True).resolve("cpu")
    fp16 = RuntimeSpec(precision="fp16").resolve("cpu")
    fp16.check_balancer("equal")
    with pytest.raises(ConfigError, match=r"fp16 .* not 'pcgrad'; use bf16"):
        fp16.check_balancer("pcgrad")
    RuntimeSpec(precision="bf16").resolve("cpu").check_balancer("pcgrad")


def test_data_budget_from_setting_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RuntimeSpec(data_budget_mb=2).resolve("cpu").data_budget == 2 * 2**20
    monkeypatch.setenv(DATA_BUDGET_ENV, "0.5")
    assert RuntimeSpec().resolve("cpu").data_budget == 2**19
    assert RuntimeSpec(data_budget_mb=1).resolve("cpu").data_budget == 2**20  # setting wins
    monkeypatch.setenv(DATA_BUDGET_ENV, "lots")
    with pytest.raises(ConfigError, match=f"{DATA_BUDGET_ENV} must be a number"):
        RuntimeSpec().resolve("cpu")


def test_study_yaml_takes_a_runtime_section(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text("name: s\nsuite: digits\nruntime: {precision: bf16, compile: aot_eager}\n")
    config = load_study_config(path)
    assert config.runtime == RuntimeSpec(precision="bf16", compile="aot_eager")
    path.write_text("name: s\nsuite: digits\nruntime: {channels_lats: true}\n")
    with pytest.raises(ConfigError, match="did you mean 'channels_last'"):
        load_study_config(path)


def test_evaluate_reads_the_architecture_files_runtime(tmp_path: Path) -> None:
    path = tmp_path / "arch.yaml"
    path.write_text(
        "suite: digits\nnetworks: [{tasks: [digit]}]\nruntime: {precision: bf16, tf32: false}\n"
    )
    assert runtime_settings(path) == RuntimeSpec(precision="bf16", tf32=False)
    assert runtime_settings(path, {"precision": "fp32"}).precision == "fp32"
    assert load_spec(path).tasks == ["digit"]  # the spec itself ignores the section
    with pytest.raises(ConfigError, match="precision"):
        runtime_settings(path, {"precision": "half"})


# --- cache key ------------------------------------------------------------------------

#: The key of this job computed before runtime settings existed: fp32 keys must not move.
PINNED_FP32_KEY = "590ce6b29f5f294adf8dca1528b2ce8c"


def _job(numerics: dict[str, Any] | None) -> NetworkJob:
    return NetworkJob(
        "suite-key",
        TaskTree(tasks=("a", "b")),
        BackboneSpec(name="mlp", params={"width": 16}),
        OptimizerSpec(epochs=2),
        BalancerSpec(name="pcgrad"),
        3,
        numerics,
    )


def test_cache_key_changes_with_resolved_numerics_only() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert _job(None).key == PINNED_FP32_KEY
    assert _job(Runtime(cpu).numerics()).key == PINNED_FP32_KEY
    speed_only = Runtime(cpu, channels_last=True, compile_backend="aot_eager")
    assert _job(speed_only.numerics()).key == PINNED_FP32_KEY
    keys = {
        _job(Runtime(cpu, precision="bf16").numerics()).key,
        _job(Runtime(cpu, precision="fp16").numerics()).key,
        _job(Runtime(cuda, tf32=True).numerics()).key,
        _job(Runtime(cuda, precision="bf16", tf32=True).numerics()).key,
    }
    assert len(keys) == 4 and PINNED_FP32_KEY not in keys
    # 'auto' is keyed by what it resolved to: fp32 here, never the same as a CUDA bf16 run
    auto_cpu = RuntimeSpec(precision="auto").resolve("cpu").numerics()
    assert _job(auto_cpu).key == PINNED_FP32_KEY


def test_training_context_keys_jobs_by_its_runtime(tiny_suite: TaskSuite) -> None:
    def job(runtime: RuntimeSpec) -> NetworkJob:
        ctx = TrainingContext.create(
            tiny_suite,
            MemoryCache(),
            seed=0,
            device=torch.device("cpu"),
            baseline_optimizer=OPT,
            baseline_backbone=BackboneSpec(**tiny_suite.default_backbone),
            runtime=runtime,
        )
        return ctx.job(TREE, ctx.baseline_backbone, OPT, BalancerSpec())

    plain = job(RuntimeSpec())
    assert "numerics" not in plain.identity()
    assert job(RuntimeSpec(channels_last=True, compile="aot_eager")).key == plain.key
    bf16 = job(RuntimeSpec(precision="bf16"))
    assert bf16.key != plain.key and bf16.identity()["numerics"] == {"precision": "bf16"}


# --- precision ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "balancer",
    [BalancerSpec(name="equal"), BalancerSpec(name="pcgrad"), BalancerSpec(name="gradnorm")],
    ids=lambda b: b.name,
)
def test_bf16_autocast_trains_to_finite_metrics(
    balancer: BalancerSpec, device: torch.device
) -> None:
    suite = make_tiny_suite()
    probes: list[DtypeProbe] = []

    def observer(net: TreeNetwork) -> DtypeProbe:
        probes.append(DtypeProbe(net))
        return probes[-1]

    _, bf16 = train(suite, Runtime(device, precision="bf16"), balancer, BRANCHED, observer)
    _, fp32 = train(suite, Runtime(device), balancer, BRANCHED)
    assert bf16.status == "ok" and finite(bf16)
    assert probes[0].outputs == {torch.bfloat16}  # the forward ran under autocast
    assert probes[0].losses == {torch.float32}  # losses in float32 (train/losses.py)
    assert bf16.history != fp32.history  # the numerics really changed
    assert bf16.val_metrics["bin"] == pytest.approx(fp32.val_metrics["bin"], abs=0.15)


class GradProbe(StepObserver):
    """Records the summed absolute gradient of one head's weight after every backward."""

    def __init__(self, net: TreeNetwork) -> None:
        self.weight = net.heads["bin"][0].weight
        self.sums: list[float] = []

    def before_backward(self, step: TrainStep) -> None:
        return None

    def after_backward(self, step: TrainStep) -> None:
        assert self.weight.grad is not None
        self.sums.append(float(self.weight.grad.abs().sum()))


def test_fp16_trains_with_a_grad_scaler(device: torch.device) -> None:
    probes: list[GradProbe] = []

    def observer(net: TreeNetwork) -> GradProbe:
        probes.append(GradProbe(net))
        return probes[-1]

    _, fp16 = train(make_tiny_suite(), Runtime(device, precision="fp16"), observer=observer)
    _, fp32 = train(make_tiny_suite(), Runtime(device), observer=observer)
    assert fp16.status == "ok" and finite(fp16)
    # the first backward saw losses scaled by the GradScaler's initial 2**16
    assert probes[0].sums[0] / probes[1].sums[0] == pytest.approx(2.0**16, rel=0.05)
    # it learns (steps whose scaled gradients overflow are skipped while the scale drops)
    assert fp16.history[-1] < 0.6 * fp16.history[0]
    assert fp32.history[-1] < fp16.history[-1] < fp16.history[0]


def test_a_training_context_rejects_fp16_with_a_gradient_balancer(tiny_suite: TaskSuite) -> None:
    with pytest.raises(ConfigError, match="fp16"):
        train(
            tiny_suite, Runtime(torch.device("cpu"), precision="fp16"), BalancerSpec(name="pcgrad")
        )


# --- channels-last ----------------------------------------------------------------------


def test_channels_last_cnn_matches_contiguous(device: torch.device) -> None:
    suite = make_image_suite()
    formats: list[bool] = []

    class FormatProbe(StepObserver):
        def __init__(self, net: TreeNetwork) -> None:
            conv = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
            conv.register_forward_pre_hook(self._keep)

        def _keep(self, _module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            formats.append(args[0].is_contiguous(memory_format=torch.channels_last))

        def before_backward(self, step: TrainStep) -> None:
            return None

        def after_backward(self, step: TrainStep) -> None:
            return None

    tree = TaskTree(tasks=("level", "up"))
    net, last = train(suite, Runtime(device, channels_last=True), tree=tree, observer=FormatProbe)
    assert formats and all(formats)
    conv = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    _, plain = train(suite, Runtime(device, channels_last=False), tree=tree)
    assert last.status == plain.status == "ok"
    assert last.history == pytest.approx(plain.history, rel=1e-4)
    assert last.val_metrics == pytest.approx(plain.val_metrics, rel=1e-4, abs=1e-5)


def test_channels_last_leaves_vector_inputs_alone(device: torch.device) -> None:
    net, result = train(make_tiny_suite(), Runtime(device, channels_last=True))
    assert result.status == "ok"
    assert not Runtime(device, channels_last=True).uses_channels_last(net, (8,))


# --- streaming ---------------------------------------------------------------------------


def _context(suite: TaskSuite, device: torch.device, runtime: RuntimeSpec) -> TrainingContext:
    return TrainingContext.create(
        suite,
        MemoryCache(),
        seed=0,
        device=device,
        baseline_optimizer=OPT,
        baseline_backbone=BackboneSpec(**suite.default_backbone),
        runtime=runtime,
    )


def test_splits_over_the_budget_stay_on_the_host(tiny_suite: TaskSuite) -> None:
    sizes = {name: split_nbytes(s) for name, s in tiny_suite.splits.items()}
    # room for the two small splits and the training split, not for its shuffled copy
    budget = sizes["val"] + sizes["test"] + sizes["train"]
    placed = place_splits(tiny_suite.splits, Runtime(torch.device("cpu"), data_budget=budget))
    assert isinstance(placed["train"], HostSplit)
    assert not isinstance(placed["val"], HostSplit) and not isinstance(placed["test"], HostSplit)
    assert list(placed) == list(tiny_suite.splits)
    assert torch.equal(placed["train"].x, tiny_suite.splits["train"].x)
    everything = place_splits(tiny_suite.splits, Runtime(torch.device("cpu")))
    assert not any(isinstance(s, HostSplit) for s in everything.values())


@pytest.mark.parametrize("balancer", ["equal", "pcgrad"])
def test_streaming_gives_the_same_results_as_the_device_path(
    balancer: str, device: torch.device
) -> None:
    suite = make_tiny_suite()
    resident = _context(suite, device, RuntimeSpec(precision="fp32", data_budget_mb=64))
    streamed = _context(suite, device, RuntimeSpec(precision="fp32", data_budget_mb=0))
    assert all(isinstance(s, HostSplit) for s in streamed.runner.data.values())
    assert not any(isinstance(s, HostSplit) for s in resident.runner.data.values())
    # host splits are the originals, not pinned copies beside them (batches are pinned)
    assert all(not s.x.is_pinned() for s in streamed.runner.data.values())
    assert streamed.runner.data["train"].x.data_ptr() == suite.splits["train"].x.data_ptr()
    job = resident.job(BRANCHED, resident.baseline_backbone, OPT, BalancerSpec(name=balancer))
    _, a = resident.runner.train(job)
    _, b = streamed.runner.train(job)
    assert a.status == b.status == "ok"
    if device.type == "cpu":  # the same rows, batches and kernels: bit for bit
        assert (a.history, a.val_metrics, a.test_metrics) == (
            b.history,
            b.val_metrics,
            b.test_metrics,
        )
    else:  # metrics of streamed splits are reduced on the host
        assert a.history == pytest.approx(b.history, rel=1e-5)
        assert a.val_metrics == pytest.approx(b.val_metrics, rel=1e-5)


def test_streamed_context_scores_an_architecture(device: torch.device) -> None:
    suite = make_tiny_suite()
    plain = _context(suite, device, RuntimeSpec(precision="fp32"))
    streamed = _context(suite, device, RuntimeSpec(precision="fp32", data_budget_mb=0))
    a, b = plain.score(plain.all_in_one()), streamed.score(streamed.all_in_one())
    assert a.delta_m_val == pytest.approx(b.delta_m_val, abs=1e-6)
    assert a.network_keys == b.network_keys  # streaming is not a numerics setting


# --- torch.compile -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "balancer",
    [
        BalancerSpec(name="equal"),
        BalancerSpec(name="pcgrad", params={"mode": "parameters"}),
        BalancerSpec(name="pcgrad", params={"mode": "representation"}),
    ],
    ids=lambda b: f"{b.name}-{b.params.get('mode', '')}",
)
def test_compiled_forward_trains_like_eager(balancer: BalancerSpec, device: torch.device) -> None:
    from torch._dynamo.utils import counters

    suite = make_tiny_suite()
    torch._dynamo.reset()  # graphs compiled by earlier tests would be reused silently
    before = counters["stats"]["calls_captured"]
    net, compiled = train(suite, Runtime(device, compile_backend="aot_eager"), balancer, BRANCHED)
    assert counters["stats"]["calls_captured"] > before  # dynamo really traced the blocks
    _, eager = train(suite, Runtime(device), balancer, BRANCHED)
    assert compiled.status == eager.status == "ok"
    assert compiled.history == pytest.approx(eager.history, rel=1e-5)
    assert compiled.val_metrics == pytest.approx(eager.val_metrics, rel=1e-5)
    # the returned network runs its plain forwards again
    assert all("forward" not in m.__dict__ for m in net.modules())


# --- CUDA only ---------------------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
def test_cuda_defaults_turn_on_bf16_and_tf32() -> None:
    rt = RuntimeSpec().resolve("cuda")
    assert rt.tf32 and rt.channels_last
    assert rt.precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    assert rt.data_budget is not None and rt.data_budget > 0
    before = torch.backends.cuda.matmul.fp32_precision
    train(make_tiny_suite(), rt)
    assert torch.backends.cuda.matmul.fp32_precision == before  # restored after training
    off = RuntimeSpec(tf32=False).resolve("cuda")
    train(make_tiny_suite(), off)
    assert off.numerics() != rt.numerics()


@pytest.mark.gpu
@needs_cuda
def test_cuda_fp16_grad_scaler_updates_its_scale() -> None:
    rt = RuntimeSpec(precision="fp16").resolve("cuda")
    scaler = rt.grad_scaler()
    assert scaler is not None and scaler.is_enabled()
    _, result = train(make_tiny_suite(), rt)
    assert result.status == "ok" and finite(result)


@pytest.mark.gpu
@needs_cuda
def test_cuda_inductor_compile_trains() -> None:
    _, result = train(
        make_tiny_suite(), Runtime(torch.device("cuda"), compile_backend="inductor"), tree=BRANCHED
    )
    assert result.status == "ok" and finite(result)


# --- selection over a study's cache ------------------------------------------------------

POOL_STUDY = """
name: pool
suite: {name: digits, seed: 0, tasks: [digit, parity]}
search_space: {optimizer: {epochs: 2}}
trials: 1
"""


def test_study_pool_keeps_to_the_numerics_of_its_baselines(tmp_path: Path) -> None:
    """fp32 and bf16 results of one study sit in one cache: the pool takes those trained
    like the recorded baselines, and never compares one precision with the other."""
    from autotask.search.study import BASELINES_ATTR, SearchSession, set_study_record
    from autotask.search.study_pool import study_pool

    (tmp_path / "pool.yaml").write_text(POOL_STUDY)
    url = f"sqlite:///{tmp_path / 'pool.db'}"
    session = SearchSession.open(load_study_config(tmp_path / "pool.yaml"), storage=url)
    ctx = session.context
    pair = TaskTree(tasks=("digit", "parity"))

    def fill(runtime: Runtime, base: dict[str, float], joint: float) -> None:
        ctx.runner.runtime = runtime
        for task, job in ctx.baseline_jobs().items():
            result = NetworkResult([task], "ok", {task: base[task]}, {task: base[task]}, macs=100)
            ctx.runner.cache.put(job, result, "pool")
        job = ctx.job(pair, ctx.baseline_backbone, ctx.baseline_optimizer, BalancerSpec())
        metrics = {"digit": joint, "parity": joint}
        ctx.runner.cache.put(
            job, NetworkResult(["digit", "parity"], "ok", metrics, metrics, macs=100), ""
        )

    cpu = torch.device("cpu")
    fill(Runtime(cpu), {"digit": 0.8, "parity": 0.9}, joint=0.85)
    fill(Runtime(cpu, precision="bf16"), {"digit": 0.7, "parity": 0.6}, joint=0.95)

    def names_and_values(recorded: dict[str, float]) -> dict[str, dict[str, float]]:
        set_study_record(
            session.study, BASELINES_ATTR, {t: {"val": v, "test": v} for t, v in recorded.items()}
        )
        return study_pool("pool", url).test  # network -> task -> Δm contribution

    fp32 = names_and_values({"digit": 0.8, "parity": 0.9})
    bf16 = names_and_values({"digit": 0.7, "parity": 0.6})
    assert len(fp32) == len(bf16) == 3  # two baselines and the pair, once each
    joint_fp32 = next(v for n, v in fp32.items() if "parity" in n and "digit" in n)
    joint_bf16 = next(v for n, v in bf16.items() if "parity" in n and "digit" in n)
    assert joint_fp32["digit"] == pytest.approx(100 * (0.85 - 0.8) / 0.8)
    assert joint_bf16["digit"] == pytest.approx(100 * (0.95 - 0.7) / 0.7)
