"""A trained model on disk: a folder with the architecture, one weights file per network
and a manifest.

Layout (``autotask export NAME -o DIR --weights``, ``autotask train``)::

    DIR/architecture.yaml     the architecture (rebuilds the untrained model)
    DIR/network-0.safetensors one file per network, in the order of ``networks:``
    DIR/manifest.json         format, suite key, numerics, each file's SHA-256 and size,
                              what each task's output means, where the weights came from
    DIR/network-0.onnx        with ``--onnx``: each network for ONNX runtimes

Nothing in the folder is executed: the YAML and JSON are parsed as data, the weights are
safetensors checked against the manifest's hashes before they are read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from autotask.errors import ConfigError, DataError
from autotask.spec import ArchitectureSpec
from autotask.suites.base import TaskSuite
from autotask.validation import format_validation_error

__all__ = [
    "ARCHITECTURE_FILE",
    "BUNDLE_FORMAT",
    "MANIFEST_FILE",
    "BundleNetwork",
    "Manifest",
    "TaskOutput",
    "check_bundle_target",
    "clear_bundle",
    "network_file",
    "read_manifest",
    "task_outputs",
    "write_manifest",
]

BUNDLE_FORMAT = "autotask-model/1"
ARCHITECTURE_FILE = "architecture.yaml"
MANIFEST_FILE = "manifest.json"


def network_file(index: int, suffix: str = "safetensors") -> str:
    return f"network-{index}.{suffix}"


class TaskOutput(BaseModel):
    """What one task's output is: its kind and metric, and how predictions map back to
    the data's own units (regression scaling, class labels)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str
    metric: str
    higher_is_better: bool
    #: predictions are ``output * std + mean`` in the target's original units
    target_scaling: dict[Literal["mean", "std"], float] | None = None
    #: label of each class id (tabular suites), when the suite knows them
    classes: list[str] | None = None


class BundleNetwork(BaseModel):
    """One network's weights file and where they came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)
    tree: str
    tasks: list[str]
    seed: int
    #: the network's key in the study's result cache (None: trained outside a study)
    key: str | None = None
    onnx: str | None = None


class Manifest(BaseModel):
    """``manifest.json`` of a model folder."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["autotask-model/1"] = "autotask-model/1"
    autotask_version: str
    suite: str
    suite_key: str
    #: the numerics the networks trained under (``{}``: plain fp32)
    numerics: dict[str, Any] = Field(default_factory=dict)
    tasks: dict[str, TaskOutput]
    networks: list[BundleNetwork]
    #: task -> index of the network serving it (the best on validation where networks
    #: overlap); a task left out is served by the first network that has it
    serving: dict[str, int] = Field(default_factory=dict)
    #: where the weights came from: a study's trial, or ``autotask train`` (refit or not)
    source: dict[str, Any] = Field(default_factory=dict)
    #: each task's primary metric per split, measured on the weights in this folder
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)


def task_outputs(suite: TaskSuite, tasks: Sequence[str]) -> dict[str, TaskOutput]:
    """What each task's output means, from the suite (kind, metric, scaling, classes)."""
    scaling = suite.metadata.get("target_scaling") or {}
    classes = suite.metadata.get("classes")
    outputs = {}
    for name in sorted(tasks):
        task = suite.task(name)
        scale = scaling.get(name) if isinstance(scaling, Mapping) else None
        labels = classes.get(name) if isinstance(classes, Mapping) else None
        outputs[name] = TaskOutput(
            kind=task.kind,
            metric=task.metric,
            higher_is_better=task.higher_is_better,
            target_scaling=(
                {"mean": float(scale["mean"]), "std": float(scale["std"])} if scale else None
            ),
            classes=[str(c) for c in labels] if labels is not None else None,
        )
    return outputs


def check_bundle_target(directory: Path, *, force: bool) -> None:
    """Refuse, before anything is trained or written, a model folder that is a file or
    already holds files (unless ``force``)."""
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory} is a file; give a folder for the model")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise ConfigError(f"{directory} is not empty; pass --force to overwrite the model in it")


def clear_bundle(directory: Path) -> None:
    """Remove a previous model's files from ``directory`` (its manifest, architecture,
    weights and ONNX files; nothing else), so an overwritten folder holds one model."""
    names = [MANIFEST_FILE, ARCHITECTURE_FILE]
    if directory.is_dir():
        names += [p.name for p in directory.glob("network-*.safetensors")]
        names += [p.name for p in directory.glob("network-*.onnx")]
    for name in names:
        try:
            (directory / name).unlink(missing_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot remove {directory / name}: {exc.strerror or exc}") from None


def write_manifest(directory: Path, manifest: Manifest) -> None:
    text = json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    write_bytes(directory / MANIFEST_FILE, text.encode("utf-8"))


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (creating its folder); an OS error is one line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


def read_manifest(directory: Path) -> Manifest:
    """The folder's manifest, validated; every problem is one :class:`DataError` line."""
    path = directory / MANIFEST_FILE
    if not directory.is_dir():
        raise DataError(f"{directory}: no such model folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{directory}: no {MANIFEST_FILE} (not a model folder)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise DataError(format_validation_error(exc, str(path), (Manifest,))) from None


def check_architecture(spec: ArchitectureSpec, manifest: Manifest, directory: Path) -> None:
    """The manifest lists one weights file per network of the architecture, in order."""
    trees = [tree.describe() for tree in spec.networks]
    listed = [n.tree for n in manifest.networks]
    if trees != listed:
        raise DataError(
            f"{directory}: {ARCHITECTURE_FILE} has networks {trees}, "
            f"{MANIFEST_FILE} lists weights for {listed}"
        )
    if spec.interface is None or any(spec.backbone_of(t) is None for t in spec.networks):
        raise DataError(
            f"{directory}/{ARCHITECTURE_FILE}: needs 'interface' and 'backbone' to rebuild the "
            "networks (autotask export and autotask train write both)"
        )
    missing = sorted(set(spec.tasks) - set(manifest.tasks))
    if missing:
        raise DataError(f"{directory}/{MANIFEST_FILE}: no output description for {missing}")
