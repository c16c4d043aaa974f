"""The search space YAML: partitions, branch depths, balancers, optimizer and backbone ranges.

Example (``search_spaces/default.yaml``)::

    partition:
      max_groups: 3            # at most this many networks (default: one per task)
      together: [[a, b]]       # tasks that must share a network
    branching:
      depths: [null, 2]        # null: share the whole backbone; k: share stages [0, k)
    balancers:
      - name: equal
      - name: mgda             # gradient methods: mode auto = representation for large trunks
        params: {mode: {choices: [parameters, representation]}}
    balancer_per_network: false  # true: each network of a trial picks its own balancer
    optimizer:
      lr: {low: 0.001, high: 0.01, log: true, default: 0.003}
      epochs: 40
    backbone:
      params:
        width: {choices: [64, 128]}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from autotask.errors import ConfigError
from autotask.search.params import Choice, Range, Searchable, default_of
from autotask.spec import BackboneSpec, BalancerSpec, OptimizerSpec
from autotask.validation import format_validation_error, read_yaml_mapping

__all__ = [
    "BackboneSpace",
    "BalancerOption",
    "BranchingSpace",
    "OptimizerSpace",
    "PartitionSpace",
    "SearchSpace",
    "load_search_space",
    "reachable_values",
]

_STRICT = ConfigDict(frozen=True, extra="forbid")


class PartitionSpace(BaseModel):
    """How tasks may be split into separately trained networks."""

    model_config = _STRICT

    max_groups: int | None = Field(default=None, ge=1)
    together: list[list[str]] = Field(default_factory=list)

    @field_validator("together")
    @classmethod
    def _pairs(cls, value: list[list[str]]) -> list[list[str]]:
        for group in value:
            if len(group) < 2:
                raise ValueError(f"'together' entries need at least two tasks, got {group}")
        return value


def _share_everything() -> list[int | None]:
    return [None]


class BranchingSpace(BaseModel):
    """Candidate branch depths of a group: ``None`` shares every stage; ``k`` shares ``[0, k)``
    and gives each task its own branch from stage ``k`` on."""

    model_config = _STRICT

    depths: list[int | None] = Field(default_factory=lambda: _share_everything())

    @field_validator("depths")
    @classmethod
    def _depths(cls, value: list[int | None]) -> list[int | None]:
        if not value:
            raise ValueError("at least one branch depth is needed (null = no branching)")
        if any(d is not None and d < 1 for d in value):
            raise ValueError("branch depths must be >= 1 (or null)")
        return value


class BalancerOption(BaseModel):
    """A balancer the search may choose, with fixed or searchable hyperparameters."""

    model_config = _STRICT

    name: str
    params: dict[str, Searchable] = Field(default_factory=dict)

    def default(self) -> BalancerSpec:
        return BalancerSpec(
            name=self.name, params={k: default_of(v) for k, v in self.params.items()}
        )


class OptimizerSpace(BaseModel):
    """:class:`~autotask.spec.OptimizerSpec` fields, each fixed or searchable."""

    model_config = _STRICT

    name: Searchable = "adam"
    lr: Searchable = 3e-3
    weight_decay: Searchable = 0.0
    momentum: Searchable = 0.9
    schedule: Searchable = "constant"
    epochs: Searchable = 40
    batch_size: Searchable = 128
    patience: Searchable = 8
    grad_clip: Searchable = None

    @model_validator(mode="after")
    def _values_are_valid(self) -> OptimizerSpace:
        """Every value a trial may get (a fixed value, both ends and the default of a range,
        each choice) is a valid :class:`~autotask.spec.OptimizerSpec` value."""
        for name, value in self.fields().items():
            for candidate in reachable_values(value):
                try:
                    OptimizerSpec.model_validate({name: candidate})
                except ValidationError as exc:
                    reason = exc.errors()[0]["msg"].lower()
                    raise ValueError(
                        f"{name}: {candidate!r} is not a valid value ({reason})"
                    ) from None
        return self

    def fields(self) -> dict[str, Searchable]:
        return {name: getattr(self, name) for name in type(self).model_fields}

    def default(self) -> OptimizerSpec:
        return OptimizerSpec(**{k: default_of(v) for k, v in self.fields().items()})


def reachable_values(value: Searchable) -> list[Any]:
    """The values to check of a searchable setting: a range's ends (and default), every
    choice, or the fixed value."""
    if isinstance(value, Range):
        return [v for v in (value.low, value.high, value.default) if v is not None]
    if isinstance(value, Choice):
        return list(value.choices)
    return [value]


class BackboneSpace(BaseModel):
    """The backbone (default: the suite's) and its searchable parameters."""

    model_config = _STRICT

    name: str | None = None
    params: dict[str, Searchable] = Field(default_factory=dict)

    def default(self, suite_default: dict[str, Any]) -> BackboneSpec:
        name = self.name or suite_default["name"]
        params = dict(suite_default.get("params", {})) if name == suite_default["name"] else {}
        params.update({k: default_of(v) for k, v in self.params.items()})
        return BackboneSpec(name=name, params=params)


class SearchSpace(BaseModel):
    """Everything a trial may choose."""

    model_config = _STRICT

    partition: PartitionSpace = PartitionSpace()
    branching: BranchingSpace = BranchingSpace()
    balancers: list[BalancerOption] = Field(default_factory=lambda: [BalancerOption(name="equal")])
    #: False: one balancer per architecture (parameter ``balancer``); True: every network
    #: of two or more tasks picks its own (``balancer[g{i}]`` for the i-th group opened).
    balancer_per_network: bool = False
    optimizer: OptimizerSpace = OptimizerSpace()
    backbone: BackboneSpace = BackboneSpace()

    @field_validator("balancers")
    @classmethod
    def _balancers(cls, value: list[BalancerOption]) -> list[BalancerOption]:
        if not value:
            raise ValueError("list at least one balancer")
        names = [b.name for b in value]
        if len(set(names)) != len(names):
            raise ValueError("a balancer is listed twice")
        return value


_MODELS: tuple[type[BaseModel], ...] = (
    SearchSpace,
    PartitionSpace,
    BranchingSpace,
    BalancerOption,
    OptimizerSpace,
    BackboneSpace,
    Range,
    Choice,
)


def parse_search_space(data: Any, source: str) -> SearchSpace:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return SearchSpace.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, _MODELS)) from None


def load_search_space(path: str | Path) -> SearchSpace:
    """Read and validate a search space YAML file."""
    return parse_search_space(read_yaml_mapping(path, "search space file"), str(path))
