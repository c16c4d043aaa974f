"""Metrics and evaluation on an accelerator: no float64 on the device (Apple MPS has none)
and no host synchronisation per chunk (the count of syncs does not grow with chunks)."""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from autotask.affinity.estimators._joint import MeanMatrix
from autotask.engine import evaluation
from autotask.engine.metrics import metric_accumulator, task_metrics
from autotask.errors import ConfigError
from autotask.models import build_network
from autotask.models.tree import TreeNetwork
from autotask.spec import BackboneSpec, ModelInterface, TaskTree
from autotask.suites.base import Split
from tests.sync_counter import SyncCounter

REPO = Path(__file__).resolve().parents[2]
#: Code that accumulates on the compute device: float64 only after an explicit host copy.
DEVICE_FILES = sorted(
    [
        REPO / "autotask/engine/metrics.py",
        REPO / "autotask/engine/evaluation.py",
        *(REPO / "autotask/affinity/estimators").glob("*.py"),
    ]
)
#: Files that still compute in float64 on the device (known, to be fixed there).
KNOWN_FLOAT64: dict[str, str] = {}  # file name -> why it still makes float64 on the device

HW = 8
HEADS: dict[str, tuple[str, int]] = {
    "cls": ("classification", 3),
    "bin": ("binary", 1),
    "ml": ("multilabel", 4),
    "reg": ("regression", 2),
    "reg1": ("regression", 1),
    "dense": ("dense", 2),
    "seg": ("segmentation", 3),
    "depth": ("depth", 1),
    "normals": ("normals", 3),
}
KINDS = {t: kind for t, (kind, _) in HEADS.items()}


def _split(n: int, seed: int = 3, *, nan_unlabelled: bool = False) -> Split:
    """Random targets of every kind, some rows unlabelled, some pixels invalid; the
    unlabelled rows of ``reg`` and ``depth`` NaN if asked."""
    g = torch.Generator().manual_seed(seed)
    size = (n, 1, HW, HW)
    targets = {
        "cls": torch.randint(0, 3, (n,), generator=g),
        "bin": (torch.rand(n, generator=g) > 0.5).float(),
        "ml": (torch.rand(n, 4, generator=g) > 0.5).float(),
        "reg": torch.randn(n, 2, generator=g),
        "reg1": torch.randn(n, generator=g),
        "dense": torch.randn(n, 2, HW, HW, generator=g),
        "seg": torch.randint(-1, 3, (n, HW, HW), generator=g),
        "depth": torch.rand(size, generator=g) * (torch.rand(size, generator=g) > 0.2),
        "normals": F.normalize(torch.randn(n, 3, HW, HW, generator=g), dim=1)
        * (torch.rand(size, generator=g) > 0.1),
    }
    masks = {t: torch.rand(n, generator=g) > 0.3 for t in HEADS}
    if nan_unlabelled:
        targets["reg"][~masks["reg"]] = math.nan
        targets["depth"][~masks["depth"]] = math.nan
    return Split(x=torch.randn(n, 3, HW, HW, generator=g), targets=targets, masks=masks)


def _network() -> TreeNetwork:
    torch.manual_seed(0)
    interface = ModelInterface(input_shape=(3, HW, HW), heads=HEADS)
    return build_network(
        TaskTree(tasks=tuple(sorted(HEADS))),
        BackboneSpec(name="dilated_resnet", params={"width": 2}),
        interface,
    )


def _chunk_rows(monkeypatch: pytest.MonkeyPatch, split: Split, rows: int) -> None:
    monkeypatch.setattr(evaluation, "EVAL_ELEMENTS", split.x[:1].numel() * rows)
    assert evaluation.eval_rows(split.x) == rows


def _evaluate(net: TreeNetwork, split: Split) -> tuple[dict[str, dict[str, float]], list[float]]:
    """Every metric, and the validation losses with one task's mask None (all labelled)."""
    masks = {t: None if t == "cls" else split.masks[t] for t in KINDS}
    metrics = evaluation.evaluate_metrics(net, split, KINDS)
    losses = evaluation.validation_losses(net, split, KINDS, masks)
    return metrics, losses.tolist()


# ---- host synchronisations --------------------------------------------------------------


def test_sync_counter_sees_the_calls_that_wait_for_the_device() -> None:
    x = torch.arange(6.0).reshape(2, 3)
    mask = x > 2
    with SyncCounter() as syncs:
        float(x[0, 0])
        bool(mask.any())
        x.sum().item()
        x.tolist()
        x.to("cpu")
        x[mask]
        torch.tensor(1.0, device=x.device)
        x.to(x.device, non_blocking=True)  # not a sync: asynchronous
        x.to(torch.float16)  # not a sync: no device change
        torch.where(mask, x, 0.0)  # not a sync: fixed output size
    names = [call.split(" @ ")[0] for call in syncs.calls]
    assert names == ["__float__", "__bool__", "item", "tolist", "to", "__getitem__", "tensor"]


@pytest.mark.parametrize("task", sorted(HEADS))
def test_adding_a_chunk_to_an_accumulator_never_syncs(task: str) -> None:
    split = _split(6)
    kind, width = HEADS[task]
    if kind in ("dense", "segmentation", "depth", "normals"):
        shape: tuple[int, ...] = (6, width, HW, HW)
    else:
        shape = (6,) if width == 1 else (6, width)
    output, target = torch.randn(shape), split.targets[task]
    acc = metric_accumulator(kind)
    with SyncCounter() as syncs:
        for rows in (slice(0, 3), slice(3, 6)):
            acc.update(output[rows], target[rows], split.masks[task][rows])
    assert syncs.calls == []
    assert list(acc.compute())  # reading the result is where the host waits


def test_evaluation_syncs_do_not_grow_with_the_number_of_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net, split = _network(), _split(64)
    counts, results = [], []
    for rows in (64, 4):  # 1 chunk, 16 chunks
        _chunk_rows(monkeypatch, split, rows)
        with SyncCounter(ignore=lambda site: site.startswith("test_")) as syncs:
            results.append(_evaluate(net, split))
        counts.append(syncs.by_site)
        # no sync in the chunk loops: evaluation and losses never wait for the device
        assert not [c for c in syncs.calls if "evaluation.py" in c or "losses.py" in c]
    assert counts[0] == counts[1]
    assert sum(counts[0].values()) <= 5 * len(HEADS)
    (whole, whole_losses), (chunked, chunked_losses) = results
    for task, values in whole.items():
        assert chunked[task] == pytest.approx(values, rel=1e-6), task
    assert chunked_losses == pytest.approx(whole_losses, rel=1e-5)


def test_metrics_of_every_kind_do_not_depend_on_chunking_or_unlabelled_targets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net, split = _network(), _split(20, nan_unlabelled=True)
    whole = evaluation.evaluate_metrics(net, split, KINDS)
    _chunk_rows(monkeypatch, split, 3)  # 7 chunks, the last one short
    chunked = evaluation.evaluate_metrics(net, split, KINDS)
    for task, values in whole.items():
        assert all(math.isfinite(v) for v in values.values()), task
        assert chunked[task] == pytest.approx(values, rel=1e-6), task
    # the same values from the labelled rows alone, in one call
    outputs = net.eval()(split.x)
    for task, values in whole.items():
        keep = split.masks[task]
        direct = task_metrics(
            KINDS[task], outputs[task][keep].detach(), split.targets[task][keep], keep[keep]
        )
        assert direct == pytest.approx(values, rel=1e-6), task


# ---- numerics of the device path ---------------------------------------------------------


def test_normal_angles_are_exact_near_zero_and_a_zero_prediction_is_90_degrees() -> None:
    g = torch.Generator().manual_seed(0)
    target = F.normalize(torch.randn(1, 3, 4, 4, generator=g), dim=1)
    same = task_metrics("normals", target * 3.0, target, torch.tensor([True]))
    assert same["mean_angle"] == pytest.approx(0.0, abs=1e-4)  # acos in float32: ~0.02
    assert same["median_angle"] < 0.01
    zero = task_metrics("normals", torch.zeros_like(target), target, torch.tensor([True]))
    assert zero["mean_angle"] == pytest.approx(90.0, abs=1e-4)
    assert zero["within_30"] == 0.0


def test_segmentation_class_beyond_the_outputs_is_an_error_when_read() -> None:
    logits = torch.zeros(1, 2, 2, 2)
    target = torch.tensor([[[0, 1], [2, -1]]])
    acc = metric_accumulator("segmentation")
    acc.update(logits, target, torch.tensor([True]))
    with pytest.raises(ConfigError, match="class >= the 2 outputs"):
        acc.compute()
    # an unlabelled row may hold any class
    assert math.isnan(task_metrics("segmentation", logits, target, torch.tensor([False]))["miou"])


def test_float32_sums_keep_the_precision_of_float64_accumulation() -> None:
    g = torch.Generator().manual_seed(5)
    rows = 20_000
    output = torch.randn(rows, 3, generator=g) * 1000.0 + 1e4
    target = torch.randn(rows, 3, generator=g)
    mask = torch.rand(rows, generator=g) > 0.2
    exact = (output.double() - target.double()).abs()[mask].mean().item()
    acc = metric_accumulator("regression")
    for start in range(0, rows, 1000):
        chunk = slice(start, start + 1000)
        acc.update(output[chunk], target[chunk], mask[chunk])
    assert acc.compute()["mae"] == pytest.approx(exact, rel=1e-7)


# ---- no float64 on the device ------------------------------------------------------------


def _tensors(value: object) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)


class Float64OnDevice(TorchFunctionMode):
    """Records every op that makes a float64 tensor on the compute device.

    On the CPU every tensor is on the host, so "device" means: not derived from an explicit
    host copy. A tensor is on the host when it comes from ``.cpu()``, ``.to("cpu")`` (the
    string: ``.to(x.device)`` keeps where ``x`` is), is created without a device, or is
    computed from host tensors only; everything else (network outputs, split tensors,
    tensors created with ``device=``) is on the device. On the old code (``out.double()``
    on the outputs) this records the metrics' device path.
    """

    HOST = "_autotask_host"

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        name = getattr(func, "__name__", str(func))
        inputs = list(_tensors((args, kwargs)))
        if name in ("cpu", "numpy") or (
            name == "to" and "cpu" in (*args[1:2], kwargs.get("device"))
        ):
            host = True
            if any(result is t for t in inputs):  # on the CPU, x.cpu() is x: mark a view
                result = result.view_as(result)
        elif not inputs:
            host = kwargs.get("device") in (None, "cpu")
        else:
            host = self._all_host(inputs)
        for out in _tensors(result):
            if host:
                setattr(out, self.HOST, True)
            elif out.dtype in (torch.float64, torch.complex128):
                self.found.append(f"{name} -> {out.dtype}")
        return result

    def _all_host(self, inputs: list[torch.Tensor]) -> bool:
        return all(getattr(t, self.HOST, False) for t in inputs)


def test_float64_watch_sees_a_double_on_the_device_and_not_on_the_host() -> None:
    x = torch.ones(3)
    with Float64OnDevice() as watch:
        x.cpu().double().sum()
        x.to("cpu", torch.float64)
        torch.zeros(2, dtype=torch.float64)
    assert watch.found == []
    with Float64OnDevice() as watch:
        x.double()
        x.to(x.device, torch.float64)
        torch.zeros(2, dtype=torch.float64, device=x.device)
    assert watch.found == [
        "double -> torch.float64",
        "to -> torch.float64",
        "zeros -> torch.float64",
    ]


def test_no_float64_tensor_is_made_on_the_device_by_metrics_or_affinity_means(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net, split = _network(), _split(12)
    _chunk_rows(monkeypatch, split, 4)
    steps = []  # made outside the watch: device tensors to it
    for step in range(4):
        values = torch.full((3, 3), float(step))
        values[0, 1] = math.nan
        steps.append((values, torch.tensor([True, step > 0, True])))
    with Float64OnDevice() as watch:
        _evaluate(net, split)
        means = MeanMatrix(3, torch.device("cpu"))
        for values, valid in steps:
            means.add(values, valid)
        mean = means.mean()
    assert watch.found == []
    assert mean[1, 1] == pytest.approx(2.0) and mean[0, 0] == pytest.approx(1.5)
    assert math.isnan(mean[0, 1])


def _on_host(node: ast.expr) -> bool:
    """``node`` is a chain that passed through an explicit host copy: ``.cpu()``,
    ``.numpy()`` or ``.to("cpu", ...)``."""
    while True:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr = node.func
            if attr.attr in ("cpu", "numpy") or (attr.attr == "to" and _names_cpu(node)):
                return True
            node = attr.value
        elif isinstance(node, ast.Attribute | ast.Subscript):
            node = node.value
        else:
            return False


def _names_cpu(call: ast.Call) -> bool:
    values = [*call.args[:1], *(k.value for k in call.keywords if k.arg == "device")]
    return any(isinstance(v, ast.Constant) and v.value == "cpu" for v in values)


def float64_on_device(source: str) -> list[int]:
    """Lines that make float64 torch tensors without an explicit host copy first:
    ``x.double()``, ``torch.float64`` / ``torch.double`` (as a dtype), unless the chain
    reads ``x.cpu().double()`` or ``x.to("cpu", torch.float64)``."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "double" and not node.args and not _on_host(node.func.value):
                lines.append(node.lineno)
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in ("float64", "double")
            and isinstance(node.value, ast.Name)
            and node.value.id == "torch"
        ):
            parent = parents.get(node)
            if isinstance(parent, ast.keyword):
                parent = parents.get(parent)
            ok = (
                isinstance(parent, ast.Call)
                and isinstance(parent.func, ast.Attribute)
                and parent.func.attr == "to"
                and (_names_cpu(parent) or _on_host(parent.func.value))
            )
            if not ok:
                lines.append(node.lineno)
    return sorted(lines)


def test_float64_scan_finds_device_doubles_and_allows_host_ones() -> None:
    bad = "a = x.double()\nb = x.to(torch.float64)\nc = torch.zeros(2, dtype=torch.double)\n"
    good = (
        "a = x.cpu().double()\nb = x.to('cpu', torch.float64)\n"
        "c = x.sum().cpu().to(dtype=torch.float64)\nd = x.to(device='cpu').double()\n"
        "e = np.float64(1.0)\n"
    )
    assert float64_on_device(bad) == [1, 2, 3]
    assert float64_on_device(good) == []


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(
            p,
            id=p.name,
            marks=[pytest.mark.xfail(strict=True, reason=KNOWN_FLOAT64[p.name])]
            if p.name in KNOWN_FLOAT64
            else [],
        )
        for p in DEVICE_FILES
    ],
)
def test_device_accumulation_code_has_no_float64_before_a_host_copy(path: Path) -> None:
    assert float64_on_device(path.read_text()) == [], path
