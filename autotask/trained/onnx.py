"""ONNX export of one tree network, checked against PyTorch with onnxruntime.

:func:`export_onnx` writes one self-contained ``.onnx`` file (weights inside, a dynamic
batch dimension, input ``input``, one output per task named after it) and
:func:`check_onnx` runs such a file on two batch sizes and compares every output with
the network's own. ``onnx``, ``onnxscript`` and ``onnxruntime`` come with the
``autotask[onnx]`` extra and are imported only when needed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch

from autotask.engine.runtime import eager_copy
from autotask.errors import ConfigError, DataError
from autotask.models.tree import TreeNetwork

__all__ = [
    "INPUT_NAME",
    "ONNX_ATOL",
    "OnnxCheck",
    "check_onnx",
    "export_onnx",
    "onnx_available",
]

#: Largest absolute difference allowed between ONNX Runtime and PyTorch outputs (fp32).
ONNX_ATOL: float = 1e-5
#: The name of every exported graph's single input.
INPUT_NAME = "input"

_EXTRA_HINT = "ONNX export needs the onnx extra: pip install 'autotask[onnx]'"
_EXTRA_MODULES = ("onnx", "onnxscript", "onnxruntime")
#: Loggers the exporter and its dependencies write progress and warnings to.
_NOISY_LOGGERS = ("torch", "onnxscript", "onnx_ir", "onnx")


@dataclasses.dataclass(frozen=True)
class OnnxCheck:
    """How an ONNX file's outputs compared with PyTorch's: the largest absolute difference
    per task over every batch size checked, the tolerance it had to meet, and the file's
    opset (of the default ``ai.onnx`` domain)."""

    path: Path
    max_abs_diff: dict[str, float]
    atol: float
    batch_sizes: tuple[int, ...]
    opset: int

    @property
    def ok(self) -> bool:
        """Whether every task's outputs agreed within :attr:`atol` (NaN never does)."""
        return all(diff <= self.atol for diff in self.max_abs_diff.values())


def onnx_available() -> bool:
    """Whether the ``autotask[onnx]`` extra (onnx, onnxscript, onnxruntime) can be imported."""
    try:
        _require_extra()
    except ConfigError:
        return False
    return True


def _require_extra() -> ModuleType:
    """Import the extra's modules; onnxruntime is returned. ``ConfigError`` if one is missing."""
    modules = []
    for name in _EXTRA_MODULES:
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            raise ConfigError(_EXTRA_HINT) from None
    return modules[-1]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence Python warnings, log records below CRITICAL from torch and the ONNX packages,
    and what they print to stdout and stderr (graph dumps when an export fails)."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    sink = io.StringIO()
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _cpu_fp32(network: TreeNetwork) -> TreeNetwork:
    """An eager copy of ``network`` on the CPU in float32 and in eval mode; the original is
    untouched."""
    clone = eager_copy(network)
    return clone.to(device="cpu", dtype=torch.float32).eval()


def _cpu_input(sample: torch.Tensor, network: TreeNetwork) -> torch.Tensor:
    """``sample`` on the CPU (floats as float32), after checking it is a batch of inputs."""
    expected = tuple(network.interface.input_shape)
    if not isinstance(sample, torch.Tensor):
        raise DataError(f"ONNX sample must be a tensor, got {type(sample).__name__}")
    if sample.dim() != len(expected) + 1 or tuple(sample.shape[1:]) != expected:
        raise DataError(
            f"ONNX sample has shape {tuple(sample.shape)}; "
            f"expected (batch, {', '.join(map(str, expected))})"
        )
    if sample.shape[0] < 1:
        raise DataError("ONNX sample is an empty batch")
    sample = sample.detach().cpu()
    return sample.float() if sample.is_floating_point() else sample


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of the innermost cause of ``exc``."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _opset(path: Path) -> int:
    """The default-domain opset the ONNX file at ``path`` imports (0 if none)."""
    onnx = importlib.import_module("onnx")
    model = onnx.load(str(path), load_external_data=False)
    versions = [int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")]
    return max(versions, default=0)


def _batches(sample: torch.Tensor) -> list[torch.Tensor]:
    """``sample`` and a batch of another size: its first row, or three copies of a single row."""
    other = sample[:1] if sample.shape[0] > 1 else torch.cat([sample] * 3)
    return [sample, other]


def check_onnx(
    path: Path, network: TreeNetwork, sample: torch.Tensor, *, atol: float = ONNX_ATOL
) -> OnnxCheck:
    """Run the ONNX file at ``path`` with onnxruntime (CPU) on ``sample`` and on a batch of
    another size, and compare every task's output with ``network``'s (CPU, fp32, eval).

    ``DataError`` if the file's outputs are not the network's tasks, or if any output
    differs by more than ``atol``; ``ConfigError`` if the onnx extra is missing.
    """
    ort = _require_extra()
    path = Path(path)
    reference = _cpu_fp32(network)
    tasks = list(reference.tasks)
    inputs = _batches(_cpu_input(sample, reference))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise DataError(f"cannot load ONNX file {path}: {_first_line(exc)}") from None
    inputs_named = [i.name for i in session.get_inputs()]
    if inputs_named != [INPUT_NAME]:
        raise DataError(
            f"ONNX file {path.name} has inputs {inputs_named}; expected [{INPUT_NAME!r}]"
        )
    names = [output.name for output in session.get_outputs()]
    if names != tasks:
        raise DataError(f"ONNX file {path.name} has outputs {names}; expected the tasks {tasks}")
    diffs = dict.fromkeys(tasks, 0.0)
    for batch in inputs:
        with torch.no_grad():
            expected = reference(batch)
        got = session.run(tasks, {INPUT_NAME: batch.numpy()})
        for task, array in zip(tasks, got, strict=True):
            actual = torch.from_numpy(array)
            want = expected[task]
            if tuple(actual.shape) != tuple(want.shape):
                raise DataError(
                    f"ONNX output {task!r} has shape {tuple(actual.shape)} for batch "
                    f"{batch.shape[0]}; PyTorch gives {tuple(want.shape)}"
                )
            diff = (actual.to(want.dtype) - want).abs().max().item() if want.numel() else 0.0
            diffs[task] = diff if math.isnan(diff) else max(diffs[task], diff)
    sizes = tuple(int(b.shape[0]) for b in inputs)
    check = OnnxCheck(path, diffs, atol, sizes, _opset(path))
    if not check.ok:
        task = next(t for t, d in diffs.items() if not d <= atol)
        raise DataError(
            f"ONNX output {task!r} of {path.name} differs from PyTorch by {diffs[task]:.3g} "
            f"(tolerance {atol:g})"
        )
    return check


def export_onnx(
    network: TreeNetwork,
    path: Path,
    sample: torch.Tensor,
    *,
    atol: float = ONNX_ATOL,
    opset: int | None = None,
) -> OnnxCheck:
    """Export ``network`` (a CPU fp32 eval copy) to one self-contained ONNX file at ``path``
    and check it with :func:`check_onnx` on ``sample`` (a batch of inputs).

    The graph has one input ``input`` with a dynamic batch dimension and one output per
    task, named after it, in ``network.tasks`` order. ``opset`` defaults to the exporter's.
    The file appears at ``path`` only once the check has passed. ``ConfigError`` if the
    onnx extra is missing, the network cannot be exported or not at ``opset``;
    ``DataError`` if ``sample`` does not fit or an output differs from PyTorch's by more
    than ``atol``.
    """
    _require_extra()
    path = Path(path)
    model = _cpu_fp32(network)
    example = _cpu_input(sample, model)
    if example.shape[0] < 2:
        example = torch.cat([example, example])  # a batch of 1 would be specialised
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".onnx-", dir=path.parent))
    partial = staging / path.name
    try:
        with _quiet():
            try:
                torch.onnx.export(
                    model,
                    (example,),
                    str(partial),
                    dynamo=True,
                    external_data=False,
                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                    input_names=[INPUT_NAME],
                    output_names=list(model.tasks),
                    opset_version=opset,
                    verbose=False,
                )
            except Exception as exc:
                raise ConfigError(
                    f"cannot export the network for {', '.join(model.tasks)} to ONNX: "
                    f"{_first_line(exc)}"
                ) from None
        written = sorted(p.name for p in staging.iterdir())
        if written != [path.name]:
            raise ConfigError(f"ONNX export wrote {written}; expected the single file {path.name}")
        if opset is not None and (produced := _opset(partial)) != opset:
            raise ConfigError(
                f"ONNX export cannot target opset {opset} for this network "
                f"(the exporter produced opset {produced})"
            )
        check = check_onnx(partial, model, sample, atol=atol)
        os.replace(partial, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dataclasses.replace(check, path=path)
