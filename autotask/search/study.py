"""Running a study: baselines first, then Optuna trials scored from cached networks."""

from __future__ import annotations

import gc
import logging
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from autotask.backbones import build_backbone
from autotask.balancing import build_balancer
from autotask.errors import AutotaskError, ConfigError, StorageError
from autotask.search.objectives import (
    best_trial,
    build_pruner,
    build_sampler,
    directions,
    metric_names,
)
from autotask.search.params import Searchable
from autotask.search.pruning import EpochPruning
from autotask.search.sampling import sample_architecture, task_units
from autotask.search.scoring import ArchitectureScore, TrainingContext
from autotask.search.space import SearchSpace, reachable_values
from autotask.search.storage import open_storage, resolve_storage_url, sqlite_file_missing
from autotask.search.study_config import OBJECTIVES, StudyConfig, SuiteConfig
from autotask.search.workers import (
    INTERRUPTED_REASON,
    StaleTrialWatch,
    StorageCheck,
    run_gated,
)
from autotask.spec import ArchitectureSpec
from autotask.store.cache import DatabaseCache
from autotask.store.claims import ClaimStore, default_owner
from autotask.store.db import Database
from autotask.store.locks import SETUP_LOCK, LocalLock, StudyLock, study_lock
from autotask.suites import TaskSuite, get_suite_for_tasks
from autotask.train.device import pick_device
from autotask.train.runtime import free_device_memory

__all__ = [
    "CONFIG_ATTR",
    "FINISHED",
    "SearchSession",
    "build_suite",
    "load_study",
    "set_study_record",
    "study_record",
    "validate_space",
]

logger = logging.getLogger("autotask")

#: autotask's own study records (read with :func:`study_record`): the study configuration,
#: the single-task baselines (per task ``val``, ``test``, ``metric``, ``higher_is_better``)
#: and the all-in-one network's score.
CONFIG_ATTR = "autotask:config"
BASELINES_ATTR = "autotask:baselines"
ALL_IN_ONE_ATTR = "autotask:all_in_one"
#: Trial user attribute: ``hostname:pid`` of the process running the trial.
WORKER_ATTR = "worker"
FINISHED = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
)
TrialCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


def build_suite(config: SuiteConfig) -> TaskSuite:
    """The configured suite, restricted to its task subset if one is given."""
    return get_suite_for_tasks(config.name, config.task_subset(), **config.suite_args())


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


def score_attrs(score: ArchitectureScore) -> dict[str, Any]:
    """Trial user attributes (optuna-dashboard shows them as columns)."""
    attrs: dict[str, Any] = {
        "delta_m_val": score.delta_m_val,
        "delta_m_test": score.delta_m_test,
        "cost": score.cost,
        "architecture": score.spec.describe(),
        "spec": score.spec.to_dict(),
        "networks_trained": score.trained,
        "networks_reused": score.reused,
        "network_keys": score.network_keys,
        "epochs_trained": score.epochs_trained,
    }
    attrs.update({f"val.{t}": v for t, v in score.val_metrics.items()})
    attrs.update({f"test.{t}": v for t, v in score.test_metrics.items()})
    if score.val_secondary or score.test_secondary:
        attrs["secondary"] = {"val": score.val_secondary, "test": score.test_secondary}
    return attrs


def study_record(study: optuna.Study, key: str, default: Any = None) -> Any:
    """One of autotask's own records of the study (``CONFIG_ATTR``, ``BASELINES_ATTR``, ...).

    They are kept as study system attributes, which optuna-dashboard and ``optuna studies``
    do not list; studies stored by earlier versions hold them as user attributes, read as a
    fallback."""
    system = study._storage.get_study_system_attrs(study._study_id)
    if key in system:
        return system[key]
    return study.user_attrs.get(key, default)


def set_study_record(study: optuna.Study, key: str, value: Any) -> None:
    """Store one of autotask's records of the study (see :func:`study_record`)."""
    study._storage.set_study_system_attr(study._study_id, key, value)


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


def load_study(study_name: str, storage_url: str) -> tuple[optuna.Study, StudyConfig, Database]:
    """An existing autotask study and its stored configuration (nothing is created)."""
    missing = sqlite_file_missing(storage_url)
    if missing is not None:
        raise StorageError(f"no study {study_name!r}: database {missing} does not exist")
    storage, db = open_storage(storage_url)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise StorageError(
            f"no study {study_name!r} in {db.safe_url}; studies there: {', '.join(names) or 'none'}"
        ) from None
    raw = study_record(study, CONFIG_ATTR)
    if raw is None:
        raise StorageError(f"study {study_name!r} was not created by autotask")
    return study, StudyConfig.model_validate(raw), db


@dataclass
class SearchSession:
    """One study opened for searching: its Optuna study, suite and training context."""

    config: StudyConfig
    study: optuna.Study
    context: TrainingContext
    storage_url: str
    #: The study's cross-process trial gate (see :mod:`autotask.search.workers`).
    gate: StudyLock | None = None
    #: Runs after every trial before ``run``'s callbacks: the affinity refinement
    #: (:class:`~autotask.search.refinement.AffinityRefinement`), which enqueues trials.
    refinement: TrialCallback | None = None
    #: The trial budget of the current ``run`` (None outside one).
    trial_budget: int | None = None

    #: Whether the study database is still there (checked before each trial).
    storage_check: StorageCheck = field(init=False)

    def __post_init__(self) -> None:
        self.storage_check = StorageCheck(self.storage_url)
        cache = self.context.cache
        if isinstance(cache, DatabaseCache) and self.gate is not None:
            # waiting for a network whose holder died mid-trial ends once its trial is stale
            cache.claims.on_wait = StaleTrialWatch(self.study, self.gate, self._release_dead_worker)

    @classmethod
    def open(
        cls,
        config: StudyConfig,
        *,
        storage: str | None = None,
        study_name: str | None = None,
        seed: int | None = None,
        device: str | None = None,
    ) -> SearchSession:
        """Validate everything, then create (or resume) the study."""
        if seed is not None:
            config = config.model_copy(update={"seed": seed})
        name = study_name or config.name
        suite = build_suite(config.suite)
        validate_space(config.search_space, suite)
        url = resolve_storage_url(storage, config.storage, name)
        # Concurrent workers: create tables, the study and its attributes one at a time.
        with _setup_lock(url):
            optuna_storage, db = open_storage(url)
            study = optuna.create_study(
                study_name=name,
                storage=optuna_storage,
                directions=directions(config),
                sampler=build_sampler(config),
                pruner=build_pruner(config),
                load_if_exists=True,
            )
            stored = study_record(study, CONFIG_ATTR)
            if stored is None:
                set_study_record(study, CONFIG_ATTR, config.model_dump(mode="json"))
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
        space = config.search_space
        context = TrainingContext.create(
            suite,
            DatabaseCache(db),
            seed=config.seed,
            device=pick_device(device),
            baseline_optimizer=space.optimizer.default(),
            baseline_backbone=space.backbone.default(suite.default_backbone),
            study_name=name,
            runtime=config.runtime,
        )
        assert context.runtime is not None
        for option in space.balancers:
            context.runtime.check_balancer(option.name)
        return cls(config, study, context, db.safe_url, study_lock(url, f"study:{name}"))

    def finished_trials(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=FINISHED))

    def baseline_networks_pending(self) -> int:
        """Networks :meth:`prepare_baselines` will train (those not cached yet)."""
        context = self.context
        jobs = [*context.baseline_jobs().values(), *context.network_jobs(context.all_in_one())]
        return context.pending(jobs)

    def prepare_baselines(self) -> ArchitectureScore:
        """Train the single-task baselines and the all-in-one network; store their scores."""
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
            trial.set_user_attr("fail_reason", INTERRUPTED_REASON)  # re-run on resume
            raise

    def _score_trial(self, trial: optuna.Trial) -> float | tuple[float, float]:
        trial.set_user_attr(WORKER_ATTR, default_owner())
        pruning: EpochPruning | None = None
        try:
            spec = sample_architecture(
                trial,
                self.config.search_space,
                self.context.tasks,
                self.context.suite.default_backbone,
            )
            trial.set_user_attr("architecture", spec.describe())
            trial.set_user_attr("spec", spec.to_dict())  # also on trials that do not complete
            cost = self.context.cost(spec)
            self._check_budget(trial, cost)
            pruning = EpochPruning(
                trial,
                self.config.pruner,
                multi_objective=self.config.multi_objective,
                cost=cost,
            )
            score = self.context.score(spec, on_epoch_score=pruning.callback)
        except optuna.TrialPruned:
            if pruning is not None:  # stopped during training, not for its cost
                pruning.record()
                trial.set_user_attr("epochs_trained", self.context.stopped_epochs)
            raise
        except Exception as exc:
            if isinstance(exc, torch.OutOfMemoryError):
                reason = f"out of memory: {_first_line(exc)}"
                traceback.clear_frames(exc.__traceback__)  # the training frames' tensors
                _free_memory()  # the worker goes on with its next trial
            elif isinstance(exc, AutotaskError):
                reason = str(exc)
            else:
                reason = f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("fail_reason", reason)
            logger.warning("trial %d failed: %s", trial.number, reason)
            raise
        pruning.record()
        for key, value in score_attrs(score).items():
            trial.set_user_attr(key, value)
        if self.config.multi_objective:
            return score.delta_m_val, score.cost
        return score.delta_m_val

    def _check_budget(self, trial: optuna.Trial, cost: float) -> None:
        """Record the cost (and the budget constraint: <= 0 is feasible); an architecture
        over the budget ends PRUNED before anything is trained."""
        trial.set_user_attr("cost", cost)
        budget = self.config.cost_budget
        if budget is None:
            return
        trial.set_constraint("cost", cost - budget)
        trial.set_user_attr("constraint.cost", cost - budget)  # optuna-dashboard shows these
        if cost > budget:
            reason = f"cost {cost:.3g} is over the budget {budget:g}: not trained"
            trial.set_user_attr("pruned_reason", reason)
            raise optuna.TrialPruned(reason)

    def run(
        self,
        trials: int,
        timeout: float | None = None,
        callbacks: Sequence[TrialCallback] = (),
    ) -> int:
        """Run trials until the study has ``trials`` finished or running ones (or ``timeout``
        passes); the budget is shared with concurrent ``autotask worker`` processes.

        Returns the number of trials this call started.
        """
        gate = self.gate or LocalLock(self.storage_url, f"study:{self.study.study_name}")
        self.trial_budget = trials
        return run_gated(
            self.study,
            self.objective,
            gate,
            budget=trials,
            timeout=timeout,
            callbacks=[*([self.refinement] if self.refinement else []), *callbacks],
            on_stale=self._release_dead_worker,
            storage_check=self.storage_check,
        )

    def _release_dead_worker(self, trial: optuna.trial.FrozenTrial) -> None:
        """``trial``'s worker died: drop its network claims now, so that the retry (or
        anyone needing those networks) need not wait for the claims' own grace period."""
        owner = trial.user_attrs.get(WORKER_ATTR)
        cache = self.context.cache
        if isinstance(owner, str) and isinstance(cache, DatabaseCache):
            released = ClaimStore(cache.db, owner=owner).release_all()
            if released:
                logger.warning("released %d network claim(s) of dead worker %s", released, owner)

    def best_spec(self) -> ArchitectureSpec:
        return best_spec(self.study)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _free_memory() -> None:
    """Drop what a failed trial left behind (its tensors die with the traceback)."""
    gc.collect()
    free_device_memory(collect=False)


def best_spec(study: optuna.Study) -> ArchitectureSpec:
    """The spec of the best feasible completed trial (see :func:`objectives.best_trial`)."""
    trial = best_trial(study)
    return ArchitectureSpec.from_dict(trial.user_attrs["spec"], source=f"trial {trial.number}")


def _setup_lock(url: str) -> StudyLock:
    """The database-wide lock held while a study is created (see autotask.store.locks)."""
    try:
        return study_lock(url, SETUP_LOCK)
    except ArgumentError:
        raise StorageError(f"not a database URL: {url!r}") from None
    except (NoSuchModuleError, ImportError) as exc:
        raise StorageError(f"cannot use database URL {url!r}: {exc}") from None


def _stored_identity(stored: dict[str, Any]) -> dict[str, Any]:
    """The stored configuration's identity, with fields added since filled by defaults."""
    try:
        return StudyConfig.model_validate(stored).identity()
    except ValueError:
        return {}
