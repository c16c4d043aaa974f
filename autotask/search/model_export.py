"""Model folders out of a study or an architecture file: the networks' trained weights
beside the architecture (:mod:`autotask.trained.bundle`).

- :func:`export_trial_model`: a study's trial (default: the one ``autotask export``
  writes), its networks' kept weights or, where none were kept, the networks trained
  again (seeded: on the CPU they reproduce the stored results exactly);
- :func:`save_trained`: networks trained anywhere (``autotask train``), with the
  metrics of these weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna

from autotask.engine.cache import MemoryCache
from autotask.engine.device import pick_device
from autotask.engine.runner import RunnerEvents
from autotask.engine.runtime import Runtime
from autotask.errors import ConfigError, DataError, StorageError, TrialDiverged
from autotask.models import interface_for
from autotask.search.confirmed import chosen_trial
from autotask.search.evaluate import EvaluationPlan, check_balancers
from autotask.search.export import exported_document
from autotask.search.record import TrialRecord
from autotask.search.scoring import TrainingContext, best_serving
from autotask.search.study import build_suite, study_suite, study_training_context
from autotask.search.study_config import StudyConfig
from autotask.search.weights import TrainedNetwork, trained_networks
from autotask.spec import ArchitectureSpec
from autotask.store.cache import DatabaseCache
from autotask.store.db import Database
from autotask.suites import list_suites
from autotask.suites.base import TaskSuite
from autotask.trained.bundle import Manifest, task_outputs
from autotask.trained.model import SavedNetwork, save_model
from autotask.trained.weights import WeightStore
from autotask.validation import read_yaml_mapping

__all__ = [
    "TrainedArchitecture",
    "export_trial_model",
    "file_seed",
    "file_serving",
    "save_trained",
    "study_context",
    "train_architecture",
]


def study_context(
    study: optuna.Study,
    config: StudyConfig,
    db: Database,
    *,
    device: str | None = None,
    events: RunnerEvents | None = None,
) -> TrainingContext:
    """A training context on a stored study's suite and cache, as its search had: the
    study seed, baseline settings, runtime and reference mode.

    The suite is built only when its name is registered (built in or an installed entry
    point), never from a ``module:function`` reference read from the database; its data
    must be what the study trained on (same data key)."""
    name = config.suite.name
    if ":" in name or name not in list_suites():
        raise StorageError(
            f"study {study.study_name!r}: suite {name!r} is not a registered suite; a "
            "suite named by module:function is not imported from a database (install it "
            "as an entry point)"
        )
    suite = build_suite(config.suite)
    stored = study_suite(study, config).key()
    if suite.key() != stored:
        raise DataError(
            f"study {study.study_name!r}: suite {name!r} now has data key {suite.key()}, the "
            f"study trained on {stored} (its data or parameters changed)"
        )
    return study_training_context(config, suite, db, study.study_name, device=device, events=events)


def save_trained(
    directory: Path,
    spec: ArchitectureSpec,
    networks: Sequence[TrainedNetwork],
    suite: TaskSuite,
    *,
    suite_name: str,
    numerics: Mapping[str, Any],
    source: Mapping[str, Any],
    architecture_yaml: str | None = None,
    serving: Mapping[str, int] | None = None,
    record_keys: bool = True,
    force: bool = False,
) -> Manifest:
    """Write a model folder of ``networks`` (in the order of ``spec.networks``); each
    task is served by ``serving``'s network, else by the best on validation.
    ``record_keys``: list each network's cache key (not for a refit, which no cache
    holds)."""
    higher = {t.name: t.higher_is_better for t in suite.tasks}
    results = [n.result for n in networks]
    chosen = {**best_serving(spec.tasks, results, higher), **(serving or {})}
    metrics = {
        split: {t: getattr(results[i], f"{split}_metrics")[t] for t, i in chosen.items()}
        for split in ("val", "test")
    }
    serving = chosen
    return save_model(
        directory,
        spec,
        [SavedNetwork(n.network, n.job.seed, n.job.key if record_keys else None) for n in networks],
        outputs=task_outputs(suite, spec.tasks),
        suite=suite_name,
        suite_key=suite.key(),
        numerics=numerics,
        source=source,
        metrics=metrics,
        serving=serving,
        architecture_yaml=architecture_yaml,
        force=force,
    )


def export_trial_model(
    study: optuna.Study,
    config: StudyConfig,
    context: TrainingContext,
    store: WeightStore,
    directory: Path,
    *,
    trial: optuna.trial.FrozenTrial | None = None,
    force: bool = False,
    on_start: Callable[[int], None] | None = None,
) -> Manifest:
    """Write ``trial``'s model folder (default: :func:`chosen_trial`): the architecture
    as ``autotask export`` writes it, and its networks' weights at the study seed, the
    seed of the trial's stored metrics. ``on_start(n)``: how many networks train again
    (their weights were not kept)."""
    trial = trial or chosen_trial(study)
    spec, info = exported_document(study, config, trial)
    jobs = context.network_jobs(TrialRecord.from_trial(trial).architecture_spec())
    cache = context.runner.cache
    if not isinstance(cache, DatabaseCache):
        raise TypeError("a study's weights live in its database")
    networks = trained_networks(context.runner, cache, store, jobs, on_start=on_start)
    return save_trained(
        directory,
        spec,
        networks,
        context.suite,
        suite_name=config.suite.name,
        numerics=context.runner.runtime.numerics(),
        source={"study": study.study_name, "trial": trial.number, "seed": context.seed},
        architecture_yaml=spec.to_yaml(extra=info),
        force=force,
    )


@dataclass(frozen=True)
class TrainedArchitecture:
    """An architecture file's networks trained at one seed: the spec as the model folder
    writes it (interface and backbone filled in) and each network with its result."""

    spec: ArchitectureSpec
    networks: list[TrainedNetwork]
    seed: int
    refit: bool
    #: per network (in order): the epochs a refit trained, chosen on validation
    epochs: list[int]


def file_seed(path: Path) -> int:
    """The seed an exported architecture file's metrics were measured at (``study: {seed}``),
    else 0."""
    study = read_yaml_mapping(path).get("study")
    seed = study.get("seed", 0) if isinstance(study, Mapping) else 0
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"{path}: study.seed must be a non-negative integer, got {seed!r}")
    return seed


def file_serving(path: Path, spec: ArchitectureSpec) -> dict[str, int] | None:
    """The ``serving:`` mapping a file may carry (task -> index into ``networks``), checked."""
    serving = read_yaml_mapping(path).get("serving")
    if serving is None:
        return None
    if not isinstance(serving, Mapping):
        raise ConfigError(f"{path}: serving must map tasks to network indexes")
    checked: dict[str, int] = {}
    for task, index in serving.items():
        if task not in spec.tasks:
            raise ConfigError(f"{path}: serving names unknown task {task!r}")
        if not isinstance(index, int) or not 0 <= index < len(spec.networks):
            raise ConfigError(f"{path}: serving[{task!r}] must be a network index, got {index!r}")
        if task not in spec.networks[index].tasks:
            raise ConfigError(f"{path}: network {index} does not serve {task!r}")
        checked[str(task)] = index
    return checked


def train_architecture(
    plan: EvaluationPlan,
    seed: int,
    *,
    device: str | None = None,
    refit: bool = False,
    events: RunnerEvents | None = None,
    on_runtime: Callable[[Runtime], None] | None = None,
) -> TrainedArchitecture:
    """Train every network of ``plan``'s architecture at ``seed``, as a search trains it
    (same job, same result for the same seed and numerics).

    ``refit``: each network first trains as above, which chooses its epoch count on the
    validation split (the best epoch); then it trains again from scratch on the training
    and validation rows for that many epochs, and those weights are kept.
    """
    spec = plan.spec
    context = TrainingContext.create(
        plan.suite,
        MemoryCache(),
        seed=seed,
        device=pick_device(device),
        baseline_optimizer=plan.baseline_optimizer,
        baseline_backbone=plan.baseline_backbone,
        runtime=plan.settings,
        events=events,
        reference=plan.reference,
    )
    runner = context.runner
    check_balancers(runner.runtime, spec)
    if on_runtime is not None:
        on_runtime(runner.runtime)
    networks, epochs = [], []
    for job in context.network_jobs(spec):
        name = job.tree.describe()
        runner.events.on_network(name)
        network, result = runner.train(job)
        if not result.ok:
            raise TrialDiverged(f"network {name} diverged: {result.reason}")
        if refit:
            chosen = replace(
                job, optimizer=job.optimizer.model_copy(update={"epochs": result.best_epoch})
            )
            runner.events.on_network(f"{name} (refit, {result.best_epoch} epochs)")
            network, result = runner.train(chosen, refit=True)
            if not result.ok:
                raise TrialDiverged(f"network {name} diverged in its refit: {result.reason}")
            job = chosen
        runner.events.on_trained(name)
        networks.append(TrainedNetwork(job, network.eval(), result))
        epochs.append(result.epochs_run)
    full = spec.model_copy(
        update={
            "interface": interface_for(plan.suite),
            "backbone": spec.backbone or plan.baseline_backbone,
        }
    )
    return TrainedArchitecture(full, networks, seed, refit, epochs)
