"""The searched, trained, stored and exported unit: :class:`ArchitectureSpec`.

An architecture is a list of separately trained *networks*. Each network is a task
tree: its root covers backbone stages ``[0, branch_at)``, each child continues from
stage ``branch_at`` for a subset of the parent's tasks, and leaves run the remaining
stages and end in one head per task. The spec is frozen and canonical (sorted tasks
and children), so equal architectures compare and hash equal.

Example (YAML, as ``autotask evaluate`` accepts it)::

    suite: {name: digits}
    networks:
      - tasks: [digit, parity, gt4]
        branch_at: 2
        children:
          - tasks: [digit]
          - tasks: [gt4, parity]
      - tasks: [ink]
    balancer: {name: equal}
    optimizer: {lr: 0.003, epochs: 40}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from autotask.errors import ConfigError
from autotask.validation import format_validation_error, read_yaml_mapping

__all__ = [
    "ArchitectureSpec",
    "BackboneSpec",
    "BalancerSpec",
    "ModelInterface",
    "OptimizerSpec",
    "SuiteRef",
    "TaskTree",
    "canonical_json",
    "load_spec",
    "stable_hash",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


def canonical_json(data: Any) -> str:
    """Compact, key-sorted JSON: the form that is hashed."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def stable_hash(data: Any, length: int = 16) -> str:
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()[:length]


class _Canonical(BaseModel):
    """Hashes by canonical JSON, so models with dict fields are hashable too."""

    def __hash__(self) -> int:
        return hash(canonical_json(self.model_dump(mode="json")))


class SuiteRef(_Canonical):
    """Which suite (and with which parameters and tasks) an architecture is for."""

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class BalancerSpec(_Canonical):
    """A loss-balancing method and its hyperparameters."""

    model_config = _FROZEN

    name: str = "equal"
    params: dict[str, Any] = Field(default_factory=dict)


class OptimizerSpec(_Canonical):
    """Optimizer and training-length settings of one network."""

    model_config = _FROZEN

    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    schedule: Literal["constant", "cosine"] = "constant"
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=128, ge=1)
    patience: int = Field(default=8, ge=1)
    grad_clip: float | None = Field(default=None, gt=0)


class BackboneSpec(_Canonical):
    """A registered backbone and its width/depth options."""

    model_config = _FROZEN

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


#: The settings a network's root may override (see :class:`TaskTree`).
_ROOT_SETTINGS = ("balancer", "optimizer", "backbone")


class TaskTree(_Canonical):
    """One node of a task tree (the root node is a whole network).

    ``balancer``, ``optimizer`` and ``backbone`` (root nodes only) train this network with
    its own settings instead of the architecture's (e.g. networks chosen from a study's
    cache by ``autotask select``); None (the default, left out of the dump) uses the
    architecture's.
    """

    model_config = _FROZEN

    tasks: tuple[str, ...]
    branch_at: int | None = None
    children: tuple[TaskTree, ...] = ()
    balancer: BalancerSpec | None = None
    optimizer: OptimizerSpec | None = None
    backbone: BackboneSpec | None = None

    @field_validator("tasks", mode="before")
    @classmethod
    def _sort_tasks(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple)):
            names = [str(v) for v in value]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"task listed twice: {', '.join(dupes)}")
            return tuple(sorted(names))
        return value

    @model_validator(mode="after")
    def _check_structure(self) -> TaskTree:
        if not self.tasks:
            raise ValueError("a network needs at least one task")
        if self.children or self.branch_at is not None:
            if not self.children or self.branch_at is None:
                raise ValueError(f"node {list(self.tasks)}: 'branch_at' and 'children' go together")
            if len(self.children) < 2:
                raise ValueError(f"node {list(self.tasks)}: a branch needs at least 2 children")
            covered = [t for c in self.children for t in c.tasks]
            if sorted(covered) != list(self.tasks):
                raise ValueError(
                    f"node {list(self.tasks)}: children must split its tasks exactly, got "
                    f"{[list(c.tasks) for c in self.children]}"
                )
            if any(c.has_own_settings for c in self.children):
                raise ValueError(
                    f"node {list(self.tasks)}: only a network's root may name a balancer, "
                    "optimizer or backbone"
                )
            object.__setattr__(
                self, "children", tuple(sorted(self.children, key=lambda c: c.tasks))
            )
        return self

    @model_serializer(mode="wrap")
    def _omit_leaf_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if self.branch_at is None:
            data.pop("branch_at", None)
            data.pop("children", None)
        for name in _ROOT_SETTINGS:
            if getattr(self, name) is None:
                data.pop(name, None)
        return data

    @property
    def has_own_settings(self) -> bool:
        """Whether this node names a balancer, optimizer or backbone of its own."""
        return any(getattr(self, name) is not None for name in _ROOT_SETTINGS)

    def structure(self) -> TaskTree:
        """The tree without its own settings (what a network's layout and cache key use)."""
        if not self.has_own_settings:
            return self
        return self.model_copy(update=dict.fromkeys(_ROOT_SETTINGS))

    def iter_nodes(self, start: int = 0) -> Iterator[tuple[TaskTree, int, int | None]]:
        """Yield ``(node, first_stage, end_stage)``; ``end_stage`` None means to the end."""
        yield self, start, self.branch_at
        if self.branch_at is not None:
            for child in self.children:
                yield from child.iter_nodes(self.branch_at)

    def validate_depth(self, num_stages: int, start: int = 0) -> None:
        if self.branch_at is None:
            return
        if not start < self.branch_at < num_stages:
            raise ConfigError(
                f"node {list(self.tasks)}: branch_at={self.branch_at} must lie in "
                f"({start}, {num_stages}) for a backbone with {num_stages} stages"
            )
        for child in self.children:
            child.validate_depth(num_stages, self.branch_at)

    @property
    def is_leaf(self) -> bool:
        return self.branch_at is None

    def describe(self) -> str:
        """Compact text form, e.g. ``[a,b,c]@2{[a],[b,c]}``."""
        text = "[" + ",".join(self.tasks) + "]"
        if self.branch_at is not None:
            text += f"@{self.branch_at}{{" + ",".join(c.describe() for c in self.children) + "}"
        return text


class ModelInterface(_Canonical):
    """Input shape and task heads, so a model can be built without loading data."""

    model_config = _FROZEN

    input_shape: tuple[int, ...]
    heads: dict[str, tuple[str, int]]  # task -> (kind, out_features)


class ArchitectureSpec(_Canonical):
    """Networks (task trees), balancer, optimizer and backbone of one candidate."""

    model_config = _FROZEN

    suite: SuiteRef | None = None
    networks: tuple[TaskTree, ...]
    balancer: BalancerSpec = BalancerSpec()
    optimizer: OptimizerSpec = OptimizerSpec()
    backbone: BackboneSpec | None = None
    interface: ModelInterface | None = None

    @model_validator(mode="after")
    def _canonical(self) -> ArchitectureSpec:
        if not self.networks:
            raise ValueError("an architecture needs at least one network")
        object.__setattr__(self, "networks", tuple(sorted(self.networks, key=lambda n: n.tasks)))
        if len(set(self.networks)) != len(self.networks):
            raise ValueError("the same network is listed twice")
        return self

    @property
    def tasks(self) -> list[str]:
        """Every task served, sorted."""
        return sorted({t for n in self.networks for t in n.tasks})

    def optimizer_of(self, tree: TaskTree) -> OptimizerSpec:
        """The optimizer network ``tree`` trains with: its own, else the architecture's."""
        return tree.optimizer or self.optimizer

    def backbone_of(self, tree: TaskTree) -> BackboneSpec | None:
        """The backbone of network ``tree``: its own, else the architecture's (None: the
        suite's default)."""
        return tree.backbone or self.backbone

    @property
    def uniform(self) -> bool:
        """Whether every network trains with the architecture's optimizer and backbone."""
        return all(n.optimizer is None and n.backbone is None for n in self.networks)

    @property
    def overlapping(self) -> bool:
        return sum(len(n.tasks) for n in self.networks) != len(self.tasks)

    def identity(self) -> dict[str, Any]:
        """The fields that define the architecture (suite and interface excluded)."""
        return self.model_dump(
            mode="json", include={"networks", "balancer", "optimizer", "backbone"}
        )

    def key(self) -> str:
        return stable_hash(self.identity())

    def describe(self) -> str:
        nets = " | ".join(
            n.describe() + (f" ({n.balancer.name})" if n.balancer is not None else "")
            for n in self.networks
        )
        return f"{nets}  balancer={self.balancer.name}"

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def to_yaml(self, extra: dict[str, Any] | None = None) -> str:
        data = self.to_dict()
        if extra:
            data.update(extra)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "architecture") -> ArchitectureSpec:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, source, _SPEC_MODELS)) from None


#: Keys an exported file may carry besides the spec (informational, or read by
#: ``autotask evaluate``: ``runtime``, ``baseline``, ``reference``), ignored when loading
#: the spec.
INFO_KEYS = (
    "metrics",
    "study",
    "baseline",
    "runtime",
    "reference",
    "confirmed",
    "serving",
    "selection",
)


def load_spec(path: str | Path) -> ArchitectureSpec:
    """Read an architecture YAML (hand-written or exported)."""
    data = read_yaml_mapping(path)
    for key in INFO_KEYS:
        data.pop(key, None)
    return ArchitectureSpec.from_dict(data, source=str(path))


_SPEC_MODELS: tuple[type[BaseModel], ...] = (
    ArchitectureSpec,
    TaskTree,
    BalancerSpec,
    OptimizerSpec,
    BackboneSpec,
    ModelInterface,
    SuiteRef,
)
