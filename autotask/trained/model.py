"""A trained model: :func:`save_model` writes a model folder, :func:`load_model` reads one
back as a :class:`TrainedModel` whose :meth:`~TrainedModel.predict` returns per task what
a user wants rather than raw logits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from autotask import __version__
from autotask.errors import AutotaskError, DataError
from autotask.models import build_network
from autotask.models.multitask import MultiTaskModel
from autotask.models.tree import TreeNetwork
from autotask.spec import ArchitectureSpec, load_spec
from autotask.trained.bundle import (
    ARCHITECTURE_FILE,
    BundleNetwork,
    Manifest,
    TaskOutput,
    check_architecture,
    check_bundle_target,
    clear_bundle,
    network_file,
    read_manifest,
    write_bytes,
    write_manifest,
)
from autotask.trained.weights import check_state, network_bytes, read_weights, sha256_of

__all__ = ["SavedNetwork", "TaskPrediction", "TrainedModel", "load_model", "save_model"]


@dataclass(frozen=True)
class TaskPrediction:
    """One task's prediction for a batch.

    ``value``: class ids (``classification``: ``[N]`` int64; ``binary``: ``[N]`` 0/1;
    ``multilabel``: ``[N, C]`` 0/1; ``segmentation``: ``[N, H, W]`` class id per pixel),
    regression values in the target's original units (``[N]`` or ``[N, D]``), depth maps,
    unit normal maps or dense maps. ``probabilities``: softmax (classification,
    segmentation, ``[N, C(, H, W)]``) or sigmoid (binary ``[N]``, multilabel ``[N, C]``)
    outputs, None for the other kinds. ``classes``: the label of each class id, where the
    suite knows them."""

    value: torch.Tensor
    probabilities: torch.Tensor | None = None
    classes: tuple[str, ...] | None = None


def decode(output: torch.Tensor, task: TaskOutput) -> TaskPrediction:
    """Turn one task's raw network output into a :class:`TaskPrediction`."""
    kind = task.kind
    classes = tuple(task.classes) if task.classes is not None else None
    if kind == "classification":
        probabilities = F.softmax(output.float(), dim=-1)
        return TaskPrediction(probabilities.argmax(dim=-1), probabilities, classes)
    if kind == "segmentation":
        probabilities = F.softmax(output.float(), dim=1)
        return TaskPrediction(probabilities.argmax(dim=1), probabilities, classes)
    if kind in ("binary", "multilabel"):
        probabilities = torch.sigmoid(output.float())
        return TaskPrediction((probabilities > 0.5).long(), probabilities, classes)
    value = output.float()
    if task.target_scaling is not None:
        value = value * task.target_scaling["std"] + task.target_scaling["mean"]
    return TaskPrediction(value)


class TrainedModel(MultiTaskModel):
    """A :class:`MultiTaskModel` with trained weights and what its outputs mean.

    Calling it returns raw outputs (logits for classification, binary and multilabel;
    standardized values for regression), as in training; :meth:`predict` decodes them.
    """

    def __init__(
        self,
        networks: Sequence[TreeNetwork],
        outputs: Mapping[str, TaskOutput],
        manifest: Manifest | None = None,
        serving: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(networks, serving)
        self.outputs = dict(outputs)
        self.manifest = manifest

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> dict[str, TaskPrediction]:
        """Per task, the decoded prediction for the batch ``x`` (inputs as the suite
        prepares them), computed in eval mode on the model's device."""
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            raw = self(x.to(device))
        finally:
            self.train(was_training)
        return {task: decode(raw[task], self.outputs[task]) for task in self.tasks}


@dataclass(frozen=True)
class SavedNetwork:
    """A trained network to save, and where it came from."""

    network: TreeNetwork
    seed: int
    key: str | None = None


def save_model(
    directory: Path,
    spec: ArchitectureSpec,
    networks: Sequence[SavedNetwork],
    *,
    outputs: Mapping[str, TaskOutput],
    suite: str,
    suite_key: str,
    numerics: Mapping[str, Any],
    source: Mapping[str, Any],
    metrics: Mapping[str, Mapping[str, float]] | None = None,
    serving: Mapping[str, int] | None = None,
    architecture_yaml: str | None = None,
    force: bool = False,
) -> Manifest:
    """Write a model folder: the architecture (``architecture_yaml``, else ``spec`` as
    YAML; it must name its interface and backbone), one safetensors file per network (in
    the order of ``spec.networks``) and the manifest."""
    check_bundle_target(directory, force=force)
    clear_bundle(directory)
    if [n.network.tree.describe() for n in networks] != [t.describe() for t in spec.networks]:
        raise AutotaskError("the networks to save do not match the architecture's networks")
    entries = []
    for index, saved in enumerate(networks):
        tree = saved.network.tree.describe()
        data = network_bytes(
            saved.network,
            {"suite_key": suite_key, "tree": tree, "seed": saved.seed, "key": saved.key},
        )
        name = network_file(index)
        write_bytes(directory / name, data)
        entries.append(
            BundleNetwork(
                file=name,
                sha256=sha256_of(data),
                bytes=len(data),
                tree=tree,
                tasks=list(saved.network.tasks),
                seed=saved.seed,
                key=saved.key,
            )
        )
    text = architecture_yaml if architecture_yaml is not None else spec.to_yaml()
    write_bytes(directory / ARCHITECTURE_FILE, text.encode("utf-8"))
    manifest = Manifest(
        autotask_version=__version__,
        suite=suite,
        suite_key=suite_key,
        numerics=dict(numerics),
        tasks={t: outputs[t] for t in sorted(spec.tasks)},
        networks=entries,
        source=dict(source),
        metrics={split: dict(values) for split, values in (metrics or {}).items()},
        serving=dict(serving or {}),
    )
    write_manifest(directory, manifest)
    return manifest


def load_model(directory: str | Path, *, device: str | torch.device | None = None) -> TrainedModel:
    """The trained model in a model folder (``autotask export --weights``, ``autotask
    train``), in eval mode, on ``device`` (default: the CPU).

    Every weights file is checked against the manifest's SHA-256 and against the network
    it is loaded into (suite, tree, tensor names and shapes) before it is used; any
    mismatch is one :class:`~autotask.errors.DataError` line.
    """
    folder = Path(directory)
    manifest = read_manifest(folder)
    spec = load_spec(folder / ARCHITECTURE_FILE)
    check_architecture(spec, manifest, folder)
    assert spec.interface is not None  # checked above
    networks = []
    for tree, entry in zip(spec.networks, manifest.networks, strict=True):
        what = str(folder / entry.file)
        try:
            data = (folder / entry.file).read_bytes()
        except FileNotFoundError:
            raise DataError(f"{what}: missing") from None
        except OSError as exc:
            raise DataError(f"{what}: unreadable ({exc.strerror or exc})") from None
        state, header = read_weights(data, sha256=entry.sha256, what=what)
        if header.get("suite_key") != manifest.suite_key:
            raise DataError(
                f"{what}: weights of another suite (key {header.get('suite_key')!r}, "
                f"this model's suite has {manifest.suite_key!r})"
            )
        if header.get("tree") != entry.tree:
            raise DataError(
                f"{what}: weights of network {header.get('tree')!r}, expected {entry.tree!r}"
            )
        backbone = spec.backbone_of(tree)
        assert backbone is not None  # checked above
        network = build_network(tree.structure(), backbone, spec.interface)
        check_state(network, state, what)
        networks.append(network)
    model = TrainedModel(networks, manifest.tasks, manifest, manifest.serving or None)
    model.to(torch.device(device) if device is not None else torch.device("cpu"))
    return model.eval()
