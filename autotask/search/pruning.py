"""Stopping bad trials early from the architecture's Δm after every epoch.

One objective: the Δm of each epoch is reported to Optuna (``trial.report``) and the
study's pruner (median, Hyperband) decides. Δm and cost: Optuna cannot prune
multi-objective studies, so autotask applies its own ``dominated`` rule (see
:class:`~autotask.search.study_config.PrunerConfig`). Either way every trial keeps its
per-epoch Δm in the user attribute ``delta_m_epochs``, and a stopped trial's networks are
not stored: the cache only holds networks trained to their end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import optuna

from autotask.engine.runner import EpochTally
from autotask.search.record import EPOCHS_ATTR, TrialRecord, attr_name
from autotask.search.scoring import EpochScoreCallback
from autotask.search.study_config import PrunerConfig

__all__ = ["EPOCHS_ATTR", "EpochPruning", "dominating_trials", "value_at_epoch"]


def value_at_epoch(values: Sequence[float], epoch: int) -> float | None:
    """``values[epoch - 1]``, the last value past the end, None if there is none."""
    if not values:
        return None
    return float(values[min(epoch, len(values)) - 1])


def dominating_trials(
    trials: Sequence[optuna.trial.FrozenTrial], *, epoch: int, delta_m: float, cost: float
) -> int:
    """Completed trials that cost no more than ``cost`` and had a higher Δm at ``epoch``."""
    count = 0
    for trial in trials:
        record = TrialRecord.from_trial(trial)
        other_cost, values = record.cost, record.delta_m_epochs
        if other_cost is None or values is None:
            continue
        value = value_at_epoch(values, epoch)
        if value is not None and other_cost <= cost and value > delta_m:
            count += 1
    return count


class EpochPruning:
    """The per-epoch callback of one trial (pass :meth:`callback` and :attr:`tally` to
    ``score``; the tally then holds the epochs trained, also after a prune)."""

    def __init__(
        self,
        trial: optuna.Trial,
        config: PrunerConfig | None,
        *,
        multi_objective: bool,
        cost: float,
    ) -> None:
        self.trial, self.config = trial, config
        self.multi_objective, self.cost = multi_objective, cost
        self.values: list[float] = []
        self.tally = EpochTally()

    @property
    def callback(self) -> EpochScoreCallback | None:
        """None when nothing prunes (the networks then train one after another)."""
        if self.config is None or self.config.name == "none":
            return None
        return self._on_epoch

    def _on_epoch(self, epoch: int, delta_m: float) -> None:
        if math.isnan(delta_m):
            return
        self.values.append(delta_m)
        if self.multi_objective:
            stop = self._dominated(epoch, delta_m)
        else:
            self.trial.report(delta_m, epoch)
            stop = self.trial.should_prune()
        if stop:
            self.trial.set_user_attr(attr_name("pruned_at_epoch"), epoch)
            raise optuna.TrialPruned(f"Δm {delta_m:+.2f}% after epoch {epoch}")

    def _dominated(self, epoch: int, delta_m: float) -> bool:
        assert self.config is not None
        if epoch < self.config.warmup_epochs:
            return False
        study = self.trial.study
        done = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
        if len(done) < self.config.startup_trials:
            return False
        ahead = dominating_trials(done, epoch=epoch, delta_m=delta_m, cost=self.cost)
        return ahead >= self.config.dominated_by

    def record(self) -> None:
        """Store the per-epoch Δm on the trial (also when it was pruned)."""
        if self.values:
            self.trial.set_user_attr(EPOCHS_ATTR, self.values)
