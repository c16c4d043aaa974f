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
    runtime:                  # optional: precision, tf32, channels_last, compile, data budget
      precision: auto         # (autotask.train.runtime.RuntimeSpec); not part of the study's
                              # identity: results under other numerics are cached apart
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from autotask.errors import ConfigError
from autotask.search.space import SearchSpace, load_search_space, parse_search_space
from autotask.train.runtime import RuntimeSpec
from autotask.validation import format_validation_error, read_yaml_mapping

__all__ = ["AffinitySeeding", "StudyConfig", "SuiteConfig", "load_study_config"]


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
    """Start the study from an affinity estimate: its best partitions (TAG rule) are
    enqueued as the first trials, then the sampler explores."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    estimator: str = "lookahead"
    settings: dict[str, Any] = Field(default_factory=dict)
    candidates: int = Field(default=10, ge=0)


class StudyConfig(BaseModel):
    """A study: suite, search space, trial budget and seed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    suite: SuiteConfig
    search_space: SearchSpace = SearchSpace()
    trials: int = Field(default=30, ge=1)
    timeout: float | None = Field(default=None, gt=0)
    seed: int = Field(default=0, ge=0)
    storage: str | None = None
    affinity: AffinitySeeding | None = None
    runtime: RuntimeSpec = RuntimeSpec()

    @field_validator("suite", mode="before")
    @classmethod
    def _suite_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


_MODELS: tuple[type[BaseModel], ...] = (StudyConfig, SuiteConfig, AffinitySeeding, RuntimeSpec)


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
