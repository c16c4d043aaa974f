"""Running a study: baselines first, then Optuna trials scored from cached networks."""

from __future__ import annotations

import gc
import logging
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, cast

import optuna
import torch
from sqlalchemy.exc import NoSuchModuleError, SQLAlchemyError

from autotask.backbones import build_backbone
from autotask.balancing import build_balancer
from autotask.engine.device import pick_device
from autotask.engine.device_errors import is_sticky_device_error
from autotask.engine.runner import RunnerEvents
from autotask.engine.runtime import free_device_memory
from autotask.errors import AutotaskError, ConfigError, DeviceFailed, StorageError
from autotask.search.backend.objectives import (
    best_trial,
    build_pruner,
    build_sampler,
    directions,
    metric_names,
    sampler_seed,
)
from autotask.search.backend.proposals import DistinctSampler, count_parameter_sets
from autotask.search.backend.storage import open_storage, resolve_storage_url
from autotask.search.backend.stored import (
    ALL_IN_ONE_ATTR,
    BASELINES_ATTR,
    CONFIG_ATTR,
    load_study,
    set_study_record,
    study_record,
)
from autotask.search.backend.workers import (
    INTERRUPTED_REASON,
    StaleTrialWatch,
    StorageCheck,
    count_budget_trials,
    run_gated,
)
from autotask.search.params import Searchable
from autotask.search.pruning import EpochPruning
from autotask.search.record import TrialRecord
from autotask.search.sampling import sample_architecture, task_units
from autotask.search.scoring import ArchitectureScore, TrainingContext
from autotask.search.space import SearchSpace, reachable_values
from autotask.search.study_config import (
    OBJECTIVES,
    StudyConfig,
    SuiteConfig,
    stored_reference,
)
from autotask.search.suite_record import SUITE_ATTR, SuiteRecord
from autotask.search.weights import weight_store_for, weights_keeper
from autotask.spec import ArchitectureSpec
from autotask.store.cache import DatabaseCache
from autotask.store.claims import default_owner
from autotask.store.db import Database, parse_url, redact, safe_url, without_password
from autotask.store.locks import SETUP_LOCK, LocalLock, StudyLock, study_lock
from autotask.suites import TaskSuite, get_suite_for_tasks, list_suites

__all__ = [
    "ALL_IN_ONE_ATTR",
    "BASELINES_ATTR",
    "CONFIG_ATTR",
    "FINISHED",
    "SearchSession",
    "build_suite",
    "load_study",
    "set_study_record",
    "study_record",
    "study_suite",
    "take_sampler_session",
    "validate_space",
]

logger = logging.getLogger("autotask")

#: How many processes have started sampling trials of the study (see
#: :meth:`SearchSession.run`).
SAMPLER_SESSIONS_ATTR = "autotask:sampler_sessions"
#: The most parameter sets counted to see whether a space holds fewer than the budget.
MAX_COUNTED_SETS = 5000
FINISHED = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
)
TrialCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


def build_suite(config: SuiteConfig) -> TaskSuite:
    """The configured suite, restricted to its task subset if one is given."""
    return get_suite_for_tasks(config.name, config.task_subset(), **config.suite_args())


def study_training_context(
    config: StudyConfig,
    suite: TaskSuite,
    db: Database,
    study_name: str,
    *,
    device: str | None = None,
    events: RunnerEvents | None = None,
) -> TrainingContext:
    """A training context on the study's cache as its search trains: the study seed,
    baseline settings, runtime and reference mode."""
    space = config.search_space
    return TrainingContext.create(
        suite,
        DatabaseCache(db),
        seed=config.seed,
        device=pick_device(device),
        baseline_optimizer=space.optimizer.default(),
        baseline_backbone=space.backbone.default(suite.default_backbone),
        study_name=study_name,
        runtime=config.runtime,
        events=events,
        reference=config.reference,
    )


def study_suite(study: optuna.Study, config: StudyConfig) -> SuiteRecord:
    """What readers need from a stored study's suite, without importing code it names.

    The suite record a search stored (see :mod:`autotask.search.suite_record`); for a study
    stored before that record existed, the suite is built only when its name is registered
    (built in or installed as an entry point), never from a ``module:function`` reference."""
    raw = study_record(study, SUITE_ATTR)
    if raw is not None:
        return SuiteRecord.from_json(raw, study.study_name)
    name = config.suite.name
    if ":" in name or name not in list_suites():
        raise StorageError(
            f"study {study.study_name!r} has no stored suite description and its suite "
            f"{name!r} is not a registered suite; a study database never makes autotask "
            "import code: run `autotask search` once with the study's YAML to record it"
        )
    return SuiteRecord.of(build_suite(config.suite))


def validate_space(space: SearchSpace, suite: TaskSuite) -> None:
    """Reject a search space that cannot produce a valid architecture for ``suite``."""
    for option in space.balancers:
        default = option.default()
        for params in _reachable_params(default.params, option.params):
            build_balancer(default.name, suite.task_names, **params)
    task_units(suite.task_names, space)
    backbone = space.backbone.default(suite.default_backbone)
    for params in _reachable_params(backbone.params, space.backbone.params):
        build_backbone(backbone.name, suite.input_shape, **params)
    stages = build_backbone(backbone.name, suite.input_shape, **backbone.params).num_stages
    for depth in space.branching.depths:
        if depth is not None and not 1 <= depth < stages:
            raise ConfigError(
                f"search space: branch depth {depth} is not in 1..{stages - 1} for the "
                f"{backbone.name!r} backbone with {stages} stages (null = no branching)"
            )


def _reachable_params(
    defaults: dict[str, Any], searched: dict[str, Searchable]
) -> list[dict[str, Any]]:
    """The defaults, then the defaults with one searched parameter at each value a trial
    may give it (a range's ends, each choice)."""
    variants = [dict(defaults)]
    for name, value in searched.items():
        variants += [{**defaults, name: v} for v in reachable_values(value)]
    return variants


def score_record(number: int, score: ArchitectureScore) -> TrialRecord:
    """The record of a trial scored ``score`` (stored as its user attributes, which
    optuna-dashboard shows as columns)."""
    secondary = (
        {"val": score.val_secondary, "test": score.test_secondary}
        if score.val_secondary or score.test_secondary
        else None
    )
    return TrialRecord(
        number=number,
        state="RUNNING",
        delta_m_val=score.delta_m_val,
        delta_m_test=score.delta_m_test,
        cost=score.cost,
        architecture=score.spec.describe(),
        spec=score.spec.to_dict(),
        networks_trained=score.trained,
        networks_reused=score.reused,
        network_keys=tuple(score.network_keys),
        epochs_trained=score.epochs_trained,
        val_metrics=score.val_metrics,
        test_metrics=score.test_metrics,
        secondary=secondary,
        reference={"val": score.reference_val, "test": score.reference_test},
        tuning_gain_val=score.tuning_gain_val,
        tuning_gain_test=score.tuning_gain_test,
        references_trained=score.references_trained,
        reference_epochs=score.reference_epochs,
    )


def _store(trial: optuna.Trial, **fields: Any) -> None:
    """Store the given :class:`TrialRecord` fields as ``trial``'s user attributes."""
    for key, value in TrialRecord(trial.number, "RUNNING", **fields).to_attrs().items():
        trial.set_user_attr(key, value)


def describe_objectives(config: StudyConfig) -> str:
    """The objectives with their units and directions, for the study's user attributes."""
    arrows = {"maximize": "↑", "minimize": "↓"}
    return ", ".join(
        f"{name} {arrows[OBJECTIVES[key][1]]}"
        for key, name in zip(config.objectives, metric_names(config), strict=True)
    )


def _write_study_labels(study: optuna.Study, config: StudyConfig, suite: TaskSuite) -> None:
    """The few short user attributes shown beside the study in optuna-dashboard and
    ``optuna studies``; the configuration itself is a record (:func:`study_record`)."""
    study.set_user_attr("suite", f"{config.suite.name} ({len(suite.task_names)} tasks)")
    study.set_user_attr("objectives", describe_objectives(config))
    study.set_user_attr("seed", config.seed)
    if config.cost_budget is not None:
        study.set_user_attr("cost budget", f"{config.cost_budget:g} single-task networks")


@dataclass
class SearchSession:
    """One study opened for searching: its Optuna study, suite and training context."""

    config: StudyConfig
    study: optuna.Study
    context: TrainingContext
    storage_url: str
    #: The study's cross-process trial gate (see :mod:`autotask.search.backend.workers`).
    gate: StudyLock | None = None
    #: Runs after every trial before ``run``'s callbacks: the affinity refinement
    #: (:class:`~autotask.search.refinement.AffinityRefinement`), which enqueues trials.
    refinement: TrialCallback | None = None
    #: The trial budget of the current ``run`` (None outside one).
    trial_budget: int | None = None
    #: The sampler built from the configuration when the study was opened.
    configured_sampler: optuna.samplers.BaseSampler | None = None
    #: This process's sampling-session number, taken by its first ``run``.
    sampler_session: int | None = None
    #: The study database (its result cache, affinity matrices).
    db: Database | None = None
    #: Why this process's device became unusable (a sticky CUDA error), once it did.
    device_failure: str | None = None

    #: Whether the study database is still there (checked before each trial).
    storage_check: StorageCheck = field(init=False)

    def __post_init__(self) -> None:
        self.storage_check = StorageCheck(self.storage_url)
        if self.gate is not None:
            # waiting for a network whose holder died mid-trial ends once its trial is stale
            watch = StaleTrialWatch(self.study, self.gate, self._release_dead_worker)
            self.context.runner.cache.set_wait_hook(watch)

    @classmethod
    def open(
        cls,
        config: StudyConfig,
        *,
        storage: str | None = None,
        study_name: str | None = None,
        seed: int | None = None,
        device: str | None = None,
        suite: TaskSuite | None = None,
    ) -> SearchSession:
        """Validate everything, then create (or resume) the study; ``suite`` (built by the
        caller, e.g. a replay's stand-in) replaces the configured one."""
        if seed is not None:
            config = config.model_copy(update={"seed": seed})
        name = study_name or config.name
        suite = suite if suite is not None else build_suite(config.suite)
        validate_space(config.search_space, suite)
        url = resolve_storage_url(storage, config.storage, name)
        # Concurrent workers: create tables, the study and its attributes one at a time.
        sampler = build_sampler(config)
        with _setup_lock(url):
            optuna_storage, db = open_storage(url)
            db.check_writable()
            study = optuna.create_study(
                study_name=name,
                storage=optuna_storage,
                directions=directions(config),
                sampler=sampler,
                pruner=build_pruner(config),
                load_if_exists=True,
            )
            stored = study_record(study, CONFIG_ATTR)
            if stored is None:
                set_study_record(study, CONFIG_ATTR, _config_record(config))
                _write_study_labels(study, config, suite)
            if study.metric_names != metric_names(config):  # also names with units on resume
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    study.set_metric_names(metric_names(config))
        if stored is not None and _stored_identity(stored) != config.identity():
            raise ConfigError(
                f"study {name!r} already exists in {db.safe_url} with a different suite, "
                "search space, objectives, cost budget or seed; choose another --study-name"
            )
        if study_record(study, SUITE_ATTR) is None:  # also for studies stored before it
            set_study_record(study, SUITE_ATTR, SuiteRecord.of(suite).to_json())
        if stored is not None and stored_reference(stored) != config.reference:
            logger.warning(
                "study %r measures Δm against %s references (kept for its stored trials), not %s",
                name,
                stored_reference(stored),
                config.reference,
            )
            config = config.model_copy(update={"reference": stored_reference(stored)})
        space = config.search_space
        context = study_training_context(config, suite, db, name, device=device)
        for option in space.balancers:
            context.runner.runtime.check_balancer(option.name)
        if config.keep_weights != "none":
            context.runner.keep = weights_keeper(
                cast(DatabaseCache, context.runner.cache), weight_store_for(url)
            )
        gate = study_lock(url, f"study:{name}")
        return cls(config, study, context, db.safe_url, gate, configured_sampler=sampler, db=db)

    def finished_trials(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=FINISHED))

    def baseline_networks_pending(self) -> int:
        """Networks :meth:`prepare_baselines` will train (those not cached yet)."""
        context = self.context
        jobs = [*context.baseline_jobs().values(), *context.network_jobs(context.all_in_one())]
        return context.runner.pending(jobs)

    def prepare_baselines(self) -> ArchitectureScore:
        """Train the single-task baselines and the all-in-one network; store their scores."""
        with _write_failures("storing the baselines"):
            return self._store_baselines()

    def _store_baselines(self) -> ArchitectureScore:
        baselines = self.context.baselines()
        tasks = {t.name: t for t in self.context.suite.tasks}
        set_study_record(
            self.study,
            BASELINES_ATTR,
            {
                name: {
                    "val": r.val_metrics[name],
                    "test": r.test_metrics[name],
                    "metric": tasks[name].metric,
                    "higher_is_better": tasks[name].higher_is_better,
                }
                for name, r in baselines.items()
            },
        )
        all_in_one = self.context.score(self.context.all_in_one())
        set_study_record(
            self.study,
            ALL_IN_ONE_ATTR,
            {**all_in_one.summary(), "architecture": all_in_one.spec.describe()},
        )
        return all_in_one

    def objective(self, trial: optuna.Trial) -> float | tuple[float, float]:
        """Sample, train and score one architecture; failures record ``fail_reason``."""
        try:
            return self._score_trial(trial)
        except KeyboardInterrupt:  # wherever it lands: Optuna marks the trial FAIL, re-raises
            _store(trial, fail_reason=INTERRUPTED_REASON)  # re-run on resume
            raise

    def _score_trial(self, trial: optuna.Trial) -> float | tuple[float, float]:
        pruning: EpochPruning | None = None
        try:
            _store(trial, worker=default_owner())
            spec = self.sample(trial)
            # also on trials that do not complete
            _store(trial, architecture=spec.describe(), spec=spec.to_dict())
            cost = self.context.cost(spec)
            self._check_budget(trial, cost)
            pruning = EpochPruning(
                trial,
                self.config.pruner,
                multi_objective=self.config.multi_objective,
                cost=cost,
            )
            # the references first: counted on the trial even if the pruner stops it
            _, references = self.context.train_references(spec)
            reference_epochs = sum(r.epochs_run for r in references)
            _store(trial, references_trained=len(references), reference_epochs=reference_epochs)
            score = self.context.score(
                spec, on_epoch_score=pruning.callback, tally=pruning.tally, tuning_gain=True
            )
            pruning.record()
            record = replace(
                score_record(trial.number, score),
                references_trained=len(references),
                reference_epochs=reference_epochs,
            )
            for key, value in record.to_attrs().items():
                trial.set_user_attr(key, value)
        except optuna.TrialPruned:
            if pruning is not None:  # stopped during training, not for its cost
                pruning.record()
                _store(trial, epochs_trained=pruning.tally.epochs)
            raise
        except Exception as exc:
            if isinstance(exc, torch.OutOfMemoryError):
                reason = f"out of memory: {_first_line(exc)}"
                traceback.clear_frames(exc.__traceback__)  # the training frames' tensors
                _free_memory()  # the worker goes on with its next trial
            elif is_sticky_device_error(exc):
                reason = f"device error: {_first_line(exc)}"
                self.device_failure = reason  # stops this process once the trial is FAIL
            elif isinstance(exc, AutotaskError):
                reason = str(exc)
            elif isinstance(exc, DATABASE_ERRORS):  # e.g. a full disk
                reason = f"database write failed: {_database_reason(exc)}"
            else:
                reason = f"{type(exc).__name__}: {exc}"
            try:
                _store(trial, fail_reason=reason)
            except DATABASE_ERRORS:  # the database still takes no writes: the log keeps it
                logger.warning("trial %d: could not store its fail_reason", trial.number)
            logger.warning("trial %d failed: %s", trial.number, reason)
            raise
        if self.config.multi_objective:
            return score.delta_m_val, score.cost
        return score.delta_m_val

    def sample(self, trial: optuna.Trial) -> ArchitectureSpec:
        """The architecture ``trial`` asks for (the sampling procedure of every trial)."""
        return sample_architecture(
            trial,
            self.config.search_space,
            self.context.tasks,
            self.context.suite.default_backbone,
        )

    def _check_budget(self, trial: optuna.Trial, cost: float) -> None:
        """Record the cost (and the budget constraint: <= 0 is feasible); an architecture
        over the budget ends PRUNED before anything is trained."""
        _store(trial, cost=cost)
        budget = self.config.cost_budget
        if budget is None:
            return
        trial.set_constraint("cost", cost - budget)
        _store(trial, constraint_cost=cost - budget)  # optuna-dashboard shows these
        if cost > budget:
            reason = f"cost {cost:.3g} is over the budget {budget:g}: not trained"
            _store(trial, pruned_reason=reason)
            raise optuna.TrialPruned(reason)

    def run(
        self,
        trials: int,
        timeout: float | None = None,
        callbacks: Sequence[TrialCallback] = (),
    ) -> int:
        """Run trials until the study has ``trials`` finished or running ones (or ``timeout``
        passes); the budget is shared with concurrent ``autotask worker`` processes. No
        parameter set is tried twice (:mod:`autotask.search.backend.proposals`): a search space
        with fewer sets than ``trials`` stops once each was tried.

        Returns the number of trials this call started.
        """
        gate = self.gate or LocalLock(self.storage_url, f"study:{self.study.study_name}")
        self._start_sampling(gate)
        budget = self._space_budget(trials)
        self.trial_budget = budget
        with _write_failures("running trials"):
            return run_gated(
                self.study,
                self.objective,
                gate,
                budget=budget,
                timeout=timeout,
                callbacks=[
                    self._stop_on_device_failure,
                    *([self.refinement] if self.refinement else []),
                    *callbacks,
                ],
                on_stale=self._release_dead_worker,
                storage_check=self.storage_check,
            )

    def _stop_on_device_failure(
        self, _study: optuna.Study, trial: optuna.trial.FrozenTrial
    ) -> None:
        """After a trial that hit a sticky device error (recorded FAIL with its reason):
        stop this process; nothing more can run on its device context."""
        if self.device_failure is not None:
            raise DeviceFailed(
                f"trial {trial.number}: {self.device_failure}; this process cannot use the "
                "device any more (restart it: the study resumes where it stopped)"
            )

    def _start_sampling(self, gate: StudyLock) -> None:
        """Once per process: take the next sampling-session number of the study (under its
        gate) and sample with the configured sampler seeded for it
        (:func:`~autotask.search.backend.objectives.sampler_seed`: the study seed for the first
        session), so that neither resuming a study nor concurrent workers replay a
        sequence; a sampler set on the study by hand is kept, unseeded by autotask."""
        if self.sampler_session is not None:
            return
        with gate:
            session = take_sampler_session(self.study)
        sampler, seed = self.study.sampler, None
        if self.configured_sampler is None or sampler is self.configured_sampler:
            seed = sampler_seed(self.config.seed, session)
            if session or self.configured_sampler is None:
                sampler = build_sampler(self.config, seed)
        self.study.sampler = DistinctSampler(sampler, self.sample, seed=seed, session=session)
        self.sampler_session = session

    def _space_budget(self, trials: int) -> int:
        """``trials``, or the number of parameter sets of a search space holding fewer
        (said once per call)."""
        found = count_parameter_sets(self.sample, limit=min(trials, MAX_COUNTED_SETS))
        if found is None or found >= trials:
            return trials
        logger.warning(
            "the search space holds only %d distinct architectures, fewer than the %d "
            "trials asked for: the study stops once each was tried (%d so far)",
            found,
            trials,
            min(found, count_budget_trials(self.study)),
        )
        return found

    def _release_dead_worker(self, trial: optuna.trial.FrozenTrial) -> None:
        """``trial``'s worker died: drop its network claims now, so that the retry (or
        anyone needing those networks) need not wait for the claims' own grace period."""
        owner = TrialRecord.from_trial(trial).worker
        if owner is not None:
            released = self.context.runner.cache.release_claims_of(owner)
            if released:
                logger.warning("released %d network claim(s) of dead worker %s", released, owner)

    def best_spec(self) -> ArchitectureSpec:
        return best_spec(self.study)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


#: What a failed database write raises: SQLAlchemy's errors, and Optuna's wrapper of them.
DATABASE_ERRORS = (SQLAlchemyError, optuna.exceptions.StorageInternalError)


def _database_reason(exc: BaseException) -> str:
    """The driver's own message (``database or disk is full``), without SQL or links."""
    if isinstance(exc, optuna.exceptions.StorageInternalError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return _first_line(getattr(exc, "orig", None) or exc)


@contextmanager
def _write_failures(what: str) -> Iterator[None]:
    """A failed database write (a full disk, a lost server) as a one-line error."""
    try:
        yield
    except DATABASE_ERRORS as exc:
        raise StorageError(f"database write failed while {what}: {_database_reason(exc)}") from None


def _free_memory() -> None:
    """Drop what a failed trial left behind (its tensors die with the traceback)."""
    gc.collect()
    free_device_memory(collect=False)


def best_spec(study: optuna.Study) -> ArchitectureSpec:
    """The spec of the best feasible completed trial (see :func:`objectives.best_trial`)."""
    return TrialRecord.from_trial(best_trial(study)).architecture_spec()


def take_sampler_session(study: optuna.Study) -> int:
    """The next sampling-session number of ``study`` (call it under the study's gate).
    A study stored before sessions were counted, with trials, had its first session."""
    count = study_record(study, SAMPLER_SESSIONS_ATTR)
    if not isinstance(count, int):
        waiting = optuna.trial.TrialState.WAITING
        count = int(any(t.state != waiting for t in study.get_trials(deepcopy=False)))
    set_study_record(study, SAMPLER_SESSIONS_ATTR, count + 1)
    return count


def _setup_lock(url: str) -> StudyLock:
    """The database-wide lock held while a study is created (see autotask.store.locks)."""
    parse_url(url)  # a one-line error for text that is not a URL, or a bad port
    try:
        return study_lock(url, SETUP_LOCK)
    except (NoSuchModuleError, ImportError) as exc:
        raise StorageError(
            f"cannot use database URL {safe_url(url)!r}: {redact(str(exc), url)}"
        ) from None


def _config_record(config: StudyConfig) -> dict[str, Any]:
    """The configuration as stored with the study: its storage URL without the password."""
    record = config.model_dump(mode="json")
    if config.storage is not None:
        record["storage"] = without_password(config.storage)
    return record


def _stored_identity(stored: dict[str, Any]) -> dict[str, Any]:
    """The stored configuration's identity, with fields added since filled by defaults."""
    try:
        return StudyConfig.model_validate(stored).identity()
    except ValueError:
        return {}
