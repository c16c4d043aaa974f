"""The :class:`AffinityEstimator` interface: a trained-signal measurement -> AffinityMatrix.

Estimators take an :class:`EstimationContext` (a :class:`~autotask.engine.runner.Runner`
with the suite's splits on their device and the group-result cache, and the settings of
the networks they train: the seed and a study's baseline optimizer and backbone; a
search's ``TrainingContext`` is one) and return an
:class:`~autotask.select.matrix.AffinityMatrix` over the suite's tasks, higher meaning
"training these together helps". Settings are validated here like balancer
hyperparameters: unknown names fail with the known ones.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from autotask.errors import ConfigError
from autotask.spec import BackboneSpec, BalancerSpec, OptimizerSpec, TaskTree

if TYPE_CHECKING:
    from autotask.engine.job import NetworkJob
    from autotask.engine.runner import Runner
    from autotask.select.matrix import AffinityMatrix

__all__ = ["AffinityEstimator", "EstimationContext", "ProgressCallback", "reference_job"]

#: ``progress(done, total, what)``: called as an estimator makes progress.
ProgressCallback = Callable[[int, int, str], None]


class EstimationContext(Protocol):
    """What an estimator trains with: a runner, and the seed, backbone and optimizer of
    the networks it trains (equal weighting)."""

    @property
    def runner(self) -> Runner: ...

    @property
    def seed(self) -> int: ...

    @property
    def baseline_optimizer(self) -> OptimizerSpec: ...

    @property
    def baseline_backbone(self) -> BackboneSpec: ...


def reference_job(
    context: EstimationContext, tasks: tuple[str, ...], optimizer: OptimizerSpec | None = None
) -> NetworkJob:
    """One fully shared network of ``tasks`` under the context's settings (``optimizer``
    in place of its own), equal weighting: for one task, that task's single-task baseline."""
    return context.runner.job(
        TaskTree(tasks=tasks),
        context.baseline_backbone,
        optimizer or context.baseline_optimizer,
        BalancerSpec(),
        context.seed,
    )


class AffinityEstimator(ABC):
    """Base class; subclasses declare ``name``, ``description`` and ``defaults``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: setting -> default value
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **settings: Any) -> None:
        unknown = sorted(set(settings) - set(self.defaults))
        if unknown:
            known = ", ".join(sorted(self.defaults)) or "none"
            raise ConfigError(
                f"affinity estimator {self.name!r}: unknown setting(s) {unknown}; known: {known}"
            )
        self.settings: dict[str, Any] = {**self.defaults, **settings}
        self.validate()

    def validate(self) -> None:  # noqa: B027 - optional hook
        """Check ``self.settings``; raise :class:`ConfigError` on a bad value."""

    def _one_of(self, key: str, options: tuple[str, ...]) -> None:
        if self.settings[key] not in options:
            raise ConfigError(
                f"affinity estimator {self.name!r}: {key} must be one of {', '.join(options)}, "
                f"got {self.settings[key]!r}"
            )

    def _probe_settings(self) -> None:
        """``every`` (a positive integer) and ``epochs`` (None or a positive integer)."""
        self._positive_int("every")
        if self.settings["epochs"] is not None:
            self._positive_int("epochs")

    def _positive_int(self, key: str) -> int:
        value = self.settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(
                f"affinity estimator {self.name!r}: {key} must be a positive integer, got {value!r}"
            )
        return value

    @abstractmethod
    def estimate(
        self, context: EstimationContext, progress: ProgressCallback | None = None
    ) -> AffinityMatrix:
        """Measure the affinity of the context's tasks."""
