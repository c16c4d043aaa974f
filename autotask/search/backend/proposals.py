"""Proposing only parameter sets that no trial holds yet.

:class:`DistinctSampler` wraps the study's sampler. When a trial is created — under the
study's gate (:mod:`autotask.search.backend.workers`), so one process at a time — it draws the
trial's whole parameter set ahead of time: it runs the sampling procedure
(:func:`autotask.search.sampling.sample_architecture`) on a draft trial that asks the
wrapped sampler exactly as the real trial would, in the same order, but writes nothing.
While the drawn set is *taken* it draws again; after :data:`MAX_DRAWS` draws it takes the
first untried set of the space in enumeration order (:func:`parameter_sets`), which
settles spaces whose sampler keeps returning to tried partitions. The chosen set is
written on the trial (system attribute :data:`PROPOSAL_ATTR`) before the gate opens, so a
process creating the next trial sees it while it runs; the trial itself then gets exactly
these values. When no set is ever taken, the draft asks the sampler what the trial would
have asked, so the trials are the ones the bare sampler gives.

A set is *taken* by every trial that counts against the budget
(:func:`autotask.search.backend.workers.count_budget_trials`: COMPLETE, PRUNED, RUNNING, and
FAIL unless it was retried) and by waiting trials. So no parameter set is trained twice,
the budget counts distinct sets only, and a space with fewer sets than the budget is
exhausted after exactly that many trials (:func:`count_parameter_sets`; the search stops
there). Values fixed by ``enqueue_trial`` are kept: a trial enqueued with every parameter
fixed to a tried set runs as asked (it reuses the cached networks) and records
``duplicate_of``.

Repeats are kept from being proposed rather than run from the cache outside the budget:
a repeat teaches the sampler nothing, such trials would crowd the study and the
dashboard, and on a space smaller than the budget (or with a sampler that has converged)
the budget would never be reached.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from autotask.search.backend.optuna_private import (
    DraftTrial,
    OfflineTrial,
    distribution_contains,
    study_storage,
    trial_id,
)
from autotask.search.backend.workers import COUNTED, retried_trial_numbers

__all__ = [
    "MAX_DRAWS",
    "PROPOSAL_ATTR",
    "DistinctSampler",
    "count_parameter_sets",
    "param_key",
    "parameter_sets",
    "taken_parameter_sets",
]

logger = logging.getLogger("autotask")

#: Trial system attribute: the parameter set chosen for the trial when it was created.
PROPOSAL_ATTR = "autotask:proposal"
#: Draws from the sampler before the first untried set in enumeration order is taken.
MAX_DRAWS = 16

#: Runs the sampling procedure on a trial (the return value is ignored).
Propose = Callable[[optuna.Trial], object]
ParamKey = tuple[tuple[str, Any], ...]


class UnboundedSpace(Exception):
    """The space has a continuous parameter: its parameter sets cannot be enumerated."""


def param_key(params: Mapping[str, Any]) -> ParamKey:
    """A hashable form of a parameter set; floats compare to 12 significant digits (a
    stepped float may be computed in more than one way)."""
    return tuple(
        (name, float(f"{value:.12g}") if isinstance(value, float) else value)
        for name, value in sorted(params.items())
    )


def _held_params(trial: FrozenTrial) -> Mapping[str, Any] | None:
    """The parameter set ``trial`` holds: a running trial's proposal (its parameters are
    written as it samples them), a waiting trial's preset or fixed values."""
    if trial.state == TrialState.RUNNING and PROPOSAL_ATTR in trial.system_attrs:
        proposal = trial.system_attrs[PROPOSAL_ATTR]
        return proposal if isinstance(proposal, dict) else None
    if trial.state == TrialState.WAITING and not trial.params:
        fixed = trial.system_attrs.get("fixed_params")
        return fixed if isinstance(fixed, dict) else None
    return trial.params


def taken_parameter_sets(
    trials: Sequence[FrozenTrial], exclude: int | None = None
) -> dict[ParamKey, int]:
    """The parameter sets taken by ``trials`` (see the module's docstring), each with the
    number of the first trial holding it; trial ``exclude`` (the one being proposed) is
    left out."""
    retried = retried_trial_numbers(trials)
    taken: dict[ParamKey, int] = {}
    for trial in trials:
        if trial.number == exclude:
            continue
        if trial.state not in (*COUNTED, TrialState.WAITING):
            continue
        if trial.state == TrialState.FAIL and trial.number in retried:
            continue
        params = _held_params(trial)
        if params is not None:
            taken.setdefault(param_key(params), trial.number)
    return taken


def _option_count(distribution: BaseDistribution) -> tuple[int, Callable[[int], Any]]:
    """How many values ``distribution`` has, and the ``i``-th of them."""
    if isinstance(distribution, CategoricalDistribution):
        choices = distribution.choices
        return len(choices), choices.__getitem__
    if isinstance(distribution, IntDistribution):
        ints = range(distribution.low, distribution.high + 1, distribution.step)
        return len(ints), ints.__getitem__
    if isinstance(distribution, FloatDistribution) and distribution.step is not None:
        low, step = distribution.low, distribution.step
        count = round((distribution.high - low) / step) + 1
        return count, lambda i: low + i * step
    raise UnboundedSpace(f"continuous parameter {distribution}")


class _PathTrial(OfflineTrial):
    """A trial that takes the ``path[i]``-th value at its ``i``-th decision (0 beyond the
    path) and records each decision's index and number of values."""

    def __init__(self, path: Sequence[int], fixed: Mapping[str, Any]) -> None:
        super().__init__(
            FrozenTrial(
                number=0,
                state=TrialState.RUNNING,
                value=None,
                datetime_start=None,
                datetime_complete=None,
                params={},
                distributions={},
                user_attrs={},
                system_attrs={"fixed_params": dict(fixed)},
                intermediate_values={},
                trial_id=0,
            )
        )
        self.path = path
        self.picks: list[int] = []
        self.sizes: list[int] = []

    def draw(self, name: str, distribution: BaseDistribution) -> Any:
        size, value = _option_count(distribution)
        index = len(self.picks)
        pick = self.path[index] if index < len(self.path) else 0
        self.picks.append(pick)
        self.sizes.append(size)
        return value(pick)


def parameter_sets(
    propose: Propose, fixed: Mapping[str, Any] | None = None
) -> Iterator[dict[str, Any]]:
    """Every parameter set the sampling procedure ``propose`` can ask for (``fixed``
    values kept), depth first in the order of each parameter's values; raises
    :class:`UnboundedSpace` on reaching a continuous parameter."""
    path: list[int] = []
    while True:
        trial = _PathTrial(path, fixed or {})
        propose(trial)
        yield dict(trial.params)
        picks, sizes = trial.picks, trial.sizes
        while picks and picks[-1] + 1 >= sizes[len(picks) - 1]:
            picks.pop()
        if not picks:
            return
        picks[-1] += 1
        path = picks


def count_parameter_sets(propose: Propose, limit: int) -> int | None:
    """How many parameter sets the space of ``propose`` holds, if at most ``limit``;
    None for more, or for a space with a continuous parameter."""
    count = 0
    try:
        for _ in parameter_sets(propose):
            count += 1
            if count > limit:
                return None
    except UnboundedSpace:
        return None
    return count


def _first_untried(
    propose: Propose, fixed: Mapping[str, Any], taken: Mapping[ParamKey, int]
) -> dict[str, Any] | None:
    """The first parameter set in enumeration order that is not taken (None if all are,
    or if the space cannot be enumerated)."""
    try:
        for params in parameter_sets(propose, fixed):
            if param_key(params) not in taken:
                return params
    except UnboundedSpace:
        return None
    return None


class DistinctSampler(optuna.samplers.BaseSampler):
    """``sampler``, proposing for each new trial a parameter set no other trial holds (see
    the module's docstring); ``propose`` is the sampling procedure the objective runs.

    ``seed`` and ``session`` (this process's sampler seed and sampling-session number, see
    :func:`autotask.search.backend.objectives.sampler_seed`) are written on each trial as the user
    attributes ``sampler_seed`` and ``sampler_session``: a session replays from them.
    """

    def __init__(
        self,
        sampler: optuna.samplers.BaseSampler,
        propose: Propose,
        *,
        seed: int | None = None,
        session: int | None = None,
        max_draws: int = MAX_DRAWS,
    ) -> None:
        self.sampler, self.propose = sampler, propose
        self.seed, self.session, self.max_draws = seed, session, max_draws
        self._chosen: dict[int, dict[str, Any]] = {}

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.sampler.before_trial(study, trial)
        storage, id_ = study_storage(study), trial_id(trial)
        if self.session is not None:
            storage.set_trial_user_attr(id_, "sampler_session", self.session)
        if self.seed is not None:
            storage.set_trial_user_attr(id_, "sampler_seed", self.seed)
        taken = taken_parameter_sets(study.get_trials(deepcopy=False), exclude=trial.number)
        params, notes = self._choose(study, trial, taken)
        for key, value in notes.items():
            storage.set_trial_user_attr(id_, key, value)
        storage.set_trial_system_attr(id_, PROPOSAL_ATTR, params)
        self._chosen[trial.number] = params

    def _choose(
        self, study: optuna.Study, trial: FrozenTrial, taken: Mapping[ParamKey, int]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The parameter set for ``trial`` and the user attributes saying how it was found."""
        params: dict[str, Any] = {}
        draws = max(1, self.max_draws)
        for draw in range(draws):
            draft = DraftTrial(study, trial, self.sampler)
            self.propose(draft)
            params = dict(draft.params)
            if param_key(params) not in taken:
                return params, ({"redraws": draw} if draw else {})
        fixed = {**trial.system_attrs.get("fixed_params", {}), **trial.params}
        untried = _first_untried(self.propose, fixed, taken)
        if untried is not None:
            logger.info(
                "trial %d: the sampler drew only tried parameter sets (%d draws); "
                "taking the first untried one",
                trial.number,
                draws,
            )
            return untried, {"redraws": draws, "proposal": "first untried"}
        first = taken[param_key(params)]
        logger.warning(
            "trial %d repeats the parameters of trial %d (no untried set is left%s): "
            "it reuses that trial's networks",
            trial.number,
            first,
            " with its enqueued values" if fixed else "",
        )
        return params, {"redraws": draws, "duplicate_of": first}

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {}  # every value was chosen in before_trial

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        chosen = self._chosen.get(trial.number, {})
        if param_name in chosen:
            value = chosen[param_name]
            if distribution_contains(param_distribution, value):
                return value
        # the objective asked for something the proposal did not: sample it plainly
        return self.sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._chosen.pop(trial.number, None)
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()
