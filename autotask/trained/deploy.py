"""ONNX files beside a model folder's weights: one per network, each checked against
PyTorch with onnxruntime before the manifest lists it."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import torch

from autotask.models.tree import TreeNetwork
from autotask.trained.bundle import network_file, read_manifest, write_manifest
from autotask.trained.model import load_model
from autotask.trained.onnx import ONNX_ATOL, OnnxCheck, export_onnx

__all__ = ["add_onnx"]


def add_onnx(directory: Path, sample: torch.Tensor, *, atol: float = ONNX_ATOL) -> list[OnnxCheck]:
    """Export every network of the model in ``directory`` to ``network-<i>.onnx`` (dynamic
    batch), check each against PyTorch on ``sample`` (inputs as the suite prepares them)
    within ``atol``, and record the files in the manifest."""
    model = load_model(directory)
    manifest = read_manifest(directory)
    checks = []
    entries = []
    for index, (network, entry) in enumerate(zip(model.networks, manifest.networks, strict=True)):
        name = network_file(index, "onnx")
        checks.append(
            export_onnx(cast(TreeNetwork, network), directory / name, sample.cpu(), atol=atol)
        )
        entries.append(entry.model_copy(update={"onnx": name}))
    write_manifest(directory, manifest.model_copy(update={"networks": entries}))
    return checks
