"""The study YAML: which suite and tasks, which search space, budget and seed.

Example (``studies/digits.yaml``)::

    name: digits
    suite: {name: digits, seed: 0}
    search_space: ../search_spaces/digits.yaml   # relative to this file, or inline
    trials: 30
    seed: 0
    affinity:                 # optional: seed the study with affinity-ranked partitions
      estimator: lookahead    # lookahead | gradcos | pairwise | rsa
      settings: {every: 10}
      candidates: 10          # the best partitions are enqueued as the first trials
    objectives: [delta_m]     # or [delta_m, cost]: the Pareto front of quality vs cost
    sampler: tpe              # tpe | nsga2 | random, or {name: nsga2, population_size: 20}
    cost_budget: 4.0          # optional: architectures costing more are infeasible
    pruner: median            # none | median | hyperband (one objective); dominated (two)
    runtime:                  # optional: precision, tf32, channels_last, compile, data budget
      precision: auto         # (autotask.engine.runtime.RuntimeSpec); results under other
                              # numerics are cached apart
    reference: paired         # Δm against single-task networks at each architecture's own
                              # training settings (paired, default) or the defaults (fixed)
    confirm: {top: 3, seeds: 3}   # re-train the 3 best with 3 more seeds; top: 0 turns it off
    keep_weights: best        # trained weights kept (safetensors in the artifact store):
                              # best (what `export` writes, default) | all | none
    keep_weights_budget: 2.0  # GiB a running search keeps (best) before deleting the
                              # weights of networks outside its best trials
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from autotask.engine.runtime_spec import RuntimeSpec
from autotask.errors import ConfigError
from autotask.search.space import SearchSpace, load_search_space, parse_search_space
from autotask.store.db import STUDY_NAME_PATTERN
from autotask.validation import format_validation_error, read_yaml_mapping

__all__ = [
    "OBJECTIVES",
    "REFERENCE_MODES",
    "AffinitySeeding",
    "ConfirmConfig",
    "PrunerConfig",
    "ReferenceMode",
    "SamplerConfig",
    "StudyConfig",
    "SuiteConfig",
    "load_study_config",
    "stored_reference",
]

#: What an architecture's Δm is measured against. ``paired``: each task's single-task
#: network trained with the architecture's own optimizer and backbone settings (and seed),
#: so Δm measures what sharing, branching and balancing bring at equal settings; ``fixed``:
#: single-task networks at the search space's default settings for every architecture
#: (what studies stored before references were paired used).
ReferenceMode = Literal["paired", "fixed"]
REFERENCE_MODES: tuple[ReferenceMode, ...] = ("paired", "fixed")

Objective = Literal["delta_m", "cost"]

#: Objective name -> (metric name shown by Optuna and optuna-dashboard, direction).
OBJECTIVES: dict[str, tuple[str, str]] = {
    "delta_m": ("Δm", "maximize"),
    "cost": ("cost", "minimize"),
}


class SuiteConfig(BaseModel):
    """A suite name (registered or ``module:function``), its parameters, and a task subset."""

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str
    tasks: list[Any] | None = None

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def _task_entries(self) -> tuple[list[str] | None, list[Any] | None]:
        items = self.tasks
        if items is None:
            return None, None
        if all(isinstance(i, str) for i in items):
            return list(items), None
        if all(isinstance(i, dict) for i in items):
            return None, list(items)
        raise ConfigError("suite.tasks: give either task names or task mappings, not both")

    def suite_args(self) -> dict[str, Any]:
        """Keyword arguments of the suite factory (task definitions of ``tabular`` included)."""
        args = self.params
        _, definitions = self._task_entries()
        if definitions is not None:
            args["tasks"] = definitions
        return args

    def task_subset(self) -> list[str] | None:
        """Task names to keep when ``suite.tasks`` lists names (``tasks: [a, b]``)."""
        return self._task_entries()[0]


class AffinitySeeding(BaseModel):
    """Start the study from an affinity estimate: its ``candidates`` best partitions (TAG
    rule) and the partition of most modularity are enqueued as the first trials; then up
    to ``refine`` trials try the partition that the measured groups and the calibrated
    affinity predict best (see :mod:`autotask.search.refinement`), and the sampler
    explores."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    estimator: str = "lookahead"
    settings: dict[str, Any] = Field(default_factory=dict)
    candidates: int = Field(default=5, ge=0)
    refine: int = Field(default=20, ge=0)


def _named(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class SamplerConfig(BaseModel):
    """Optuna's sampler: multivariate grouped TPE (default), NSGA-II or random search."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Literal["tpe", "nsga2", "random"] = "tpe"
    #: NSGA-II's generation size.
    population_size: int = Field(default=20, ge=2)


class PrunerConfig(BaseModel):
    """Stopping bad trials early from their per-epoch Δm (networks trained in lockstep).

    ``median`` and ``hyperband`` are Optuna's pruners (one objective only: Optuna cannot
    prune multi-objective studies). ``dominated`` is autotask's rule for quality vs cost:
    from ``warmup_epochs`` on, a trial stops when ``dominated_by`` completed trials that
    cost no more had a higher Δm at the same epoch (each one's own per-epoch record, its
    final value past its last epoch). Neither prunes before ``startup_trials`` trials
    completed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Literal["none", "median", "hyperband", "dominated"] = "median"
    startup_trials: int = Field(default=5, ge=0)
    warmup_epochs: int = Field(default=10, ge=0)
    #: ``median``: prune below this percentile of the completed trials at the same epoch
    #: (50: the median; lower prunes less).
    percentile: float = Field(default=50.0, gt=0, lt=100)
    #: Hyperband's smallest budget (epochs) and its reduction factor.
    min_resource: int = Field(default=1, ge=1)
    reduction_factor: int = Field(default=3, ge=2)
    #: ``dominated``: how many cheaper-or-equal completed trials must be ahead.
    dominated_by: int = Field(default=2, ge=1)


class ConfirmConfig(BaseModel):
    """Once the trial budget is spent, the ``top`` architectures by validation Δm are
    trained again with ``seeds`` new seeds (the study seed + 1, + 2, ...), their references
    too, and ranked by the mean (see :mod:`autotask.search.confirmation`). ``top: 0`` or
    ``seeds: 0`` turns confirmation off."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    top: int = Field(default=3, ge=0)
    seeds: int = Field(default=3, ge=0)

    @property
    def enabled(self) -> bool:
        return self.top > 0 and self.seeds > 0


class StudyConfig(BaseModel):
    """A study: suite, search space, objectives, trial budget and seed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=STUDY_NAME_PATTERN)
    suite: SuiteConfig
    search_space: SearchSpace = SearchSpace()
    trials: int = Field(default=30, ge=1)
    timeout: float | None = Field(default=None, gt=0)
    seed: int = Field(default=0, ge=0)
    storage: str | None = None
    affinity: AffinitySeeding | None = None
    objectives: list[Objective] = Field(default_factory=lambda: list[Objective](["delta_m"]))
    sampler: SamplerConfig = SamplerConfig()
    pruner: PrunerConfig | None = None
    #: Architectures costing more single-task networks than this are infeasible: they get
    #: an Optuna constraint and end PRUNED without training.
    cost_budget: float | None = Field(default=None, gt=0)
    runtime: RuntimeSpec = RuntimeSpec()
    #: What Δm is measured against (see :data:`ReferenceMode`). A study keeps the mode it
    #: was created with; one stored before the option existed keeps ``fixed``.
    reference: ReferenceMode = "paired"
    confirm: ConfirmConfig = ConfirmConfig()
    #: Which trained networks keep their weights: ``best`` (the networks of the
    #: architecture ``autotask export`` writes), ``all`` or ``none``
    #: (:mod:`autotask.search.weights`).
    keep_weights: Literal["none", "best", "all"] = "best"
    #: With ``keep_weights: best``: most GiB of weights a running search keeps before it
    #: deletes those of the oldest networks outside its best trials (see
    #: :mod:`autotask.search.weights`).
    keep_weights_budget: float = Field(default=2.0, ge=0)

    @field_validator("suite", "sampler", "pruner", mode="before")
    @classmethod
    def _by_name(cls, value: Any) -> Any:
        return _named(value)

    @field_validator("confirm", mode="before")
    @classmethod
    def _confirm_off(cls, value: Any) -> Any:
        """``confirm: 0`` (or ``false``) turns confirmation off."""
        return {"top": 0} if value is False or value == 0 else value

    @model_validator(mode="after")
    def _objectives(self) -> StudyConfig:
        if self.objectives not in (["delta_m"], ["delta_m", "cost"]):
            raise ValueError(
                f"objectives must be [delta_m] or [delta_m, cost], got {self.objectives}"
            )
        pruner = None if self.pruner is None else self.pruner.name
        if self.multi_objective and pruner in ("median", "hyperband"):
            raise ValueError(
                f"pruner {pruner!r} needs one objective (Optuna cannot prune multi-objective "
                "studies); use pruner: dominated"
            )
        if not self.multi_objective and pruner == "dominated":
            raise ValueError("pruner 'dominated' is for objectives [delta_m, cost]; use median")
        return self

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def identity(self) -> dict[str, Any]:
        """What a resumed study must share with the stored one (not the budget, storage,
        seeding, sampler, pruner, runtime, confirmation or kept weights, which may change
        between runs; numerics-changing runtime settings are part of every network's cache key; the
        reference mode is the stored study's own, see :func:`stored_reference`)."""
        return self.model_dump(
            mode="json",
            exclude={
                "trials",
                "timeout",
                "storage",
                "affinity",
                "sampler",
                "pruner",
                "runtime",
                "reference",
                "confirm",
                "keep_weights",
                "keep_weights_budget",
            },
        )


def stored_reference(stored: dict[str, Any]) -> ReferenceMode:
    """The reference mode of a stored study configuration: ``fixed`` for one stored before
    the option existed (its trials were measured against fixed references)."""
    mode = stored.get("reference", "fixed")
    return mode if mode in REFERENCE_MODES else "fixed"


_MODELS: tuple[type[BaseModel], ...] = (
    StudyConfig,
    ConfirmConfig,
    SuiteConfig,
    AffinitySeeding,
    SamplerConfig,
    PrunerConfig,
    RuntimeSpec,
)


def load_study_config(path: str | Path) -> StudyConfig:
    """Read a study YAML; a ``search_space`` path is resolved relative to the file."""
    path = Path(path)
    data = read_yaml_mapping(path, "study file")
    space = data.get("search_space")
    if isinstance(space, str):
        space_path = (path.parent / space).resolve()
        data["search_space"] = load_search_space(space_path)
    elif isinstance(space, dict) or space is None:
        data["search_space"] = parse_search_space(space, f"{path}: search_space")
    else:
        raise ConfigError(f"{path}: search_space must be a file path or a mapping")
    try:
        config = StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path), _MODELS)) from None
    if config.affinity is not None:
        from autotask.affinity.estimators import build_estimator

        try:
            build_estimator(config.affinity.estimator, **config.affinity.settings)
        except ConfigError as exc:
            raise ConfigError(f"{path}: affinity: {exc}") from None
    return config
