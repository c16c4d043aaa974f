"""Training networks through the result cache: :class:`Runner`.

Every network goes one path: look it up in the cache; claim it (another process may be
training it: then its stored result is taken); report it (``on_network``); train it;
store it (``on_trained``). Three strategies train the claimed networks:

- sequential: one network at a time, each claimed just before it trains;
- fused: networks of one structure together
  (:func:`~autotask.engine.fused.train_networks`), all claimed first;
- lockstep: every network one epoch in turn, all claimed first, with a callback after
  every round (the search prunes architectures on it).

Claims are always acquired in the order of cache keys, so two processes never hold one
claim each while waiting for the other's. A job listed twice trains once: its second
use is a reuse.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import torch

from autotask.engine.cache import ResultCache
from autotask.engine.fused import fused_enabled, runtime_blocker, train_networks
from autotask.engine.job import NetworkJob
from autotask.engine.loop import EpochCallback, EpochReport, TrainingRun, run_to_end, train_epochs
from autotask.engine.observer import StepObserver
from autotask.engine.result import NetworkResult
from autotask.engine.rng import RngStream
from autotask.engine.runtime import Runtime, RuntimeSpec, free_device_memory, place_splits
from autotask.errors import TrialDiverged
from autotask.models import interface_for
from autotask.models.tree import TreeNetwork
from autotask.spec import BackboneSpec, BalancerSpec, ModelInterface, OptimizerSpec, TaskTree
from autotask.suites.base import Split, TaskSuite

__all__ = [
    "EpochTally",
    "NetworkCallback",
    "NetworkKeeper",
    "RoundCallback",
    "Runner",
    "RunnerEvents",
]

#: Called with a network's tree in spec notation (``[a,b]``).
NetworkCallback = Callable[[str], None]
#: ``(round, results)`` after every round of a lockstep run: per job, in the order given,
#: its stored result, or what it would report if it stopped now (:meth:`_Lockstep.partial`).
#: It may raise (e.g. ``optuna.TrialPruned``) to stop training; nothing partial is stored.
RoundCallback = Callable[[int, list[NetworkResult]], None]
ObserverFactory = Callable[[TreeNetwork], StepObserver]
#: Called with every network trained and stored here, before it is dropped (to keep its
#: weights); only for results that train here and are stored as they are.
NetworkKeeper = Callable[[NetworkJob, TreeNetwork, NetworkResult], None]


@dataclass(eq=False)
class _Listener:
    on_network: NetworkCallback | None
    on_trained: NetworkCallback | None


class RunnerEvents:
    """What a runner tells its subscribers: a network starts (``on_network``) and has
    finished (``on_trained``) training, by its tree in spec notation."""

    def __init__(self) -> None:
        self._listeners: list[_Listener] = []

    def subscribe(
        self,
        *,
        on_network: NetworkCallback | None = None,
        on_trained: NetworkCallback | None = None,
    ) -> Callable[[], None]:
        """Add listeners; returns the function that removes them again."""
        listener = _Listener(on_network, on_trained)
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    @contextmanager
    def subscribed(
        self,
        *,
        on_network: NetworkCallback | None = None,
        on_trained: NetworkCallback | None = None,
    ) -> Iterator[None]:
        """:meth:`subscribe` for the duration of a block."""
        unsubscribe = self.subscribe(on_network=on_network, on_trained=on_trained)
        try:
            yield
        finally:
            unsubscribe()

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    def on_network(self, tree: str) -> None:
        for listener in list(self._listeners):
            if listener.on_network is not None:
                listener.on_network(tree)

    def on_trained(self, tree: str) -> None:
        for listener in list(self._listeners):
            if listener.on_trained is not None:
                listener.on_trained(tree)


@dataclass
class EpochTally:
    """Epochs a lockstep run has trained so far: its finished networks' and its running
    ones' (which are not stored if the run is stopped). Kept up to date while the run
    trains, so it still holds the count after the run was stopped by an exception."""

    epochs: int = 0


@dataclass(eq=False)
class _Claimed:
    """A job this process holds the claim on."""

    job: NetworkJob
    heartbeat: EpochCallback


@dataclass
class _Dispatch:
    """One call's jobs and what is known of them (cache key -> result, trained here)."""

    runner: Runner
    jobs: Sequence[NetworkJob]
    found: dict[str, tuple[NetworkResult, bool]] = field(default_factory=dict)

    def store(
        self, claimed: _Claimed, result: NetworkResult, network: TreeNetwork | None = None
    ) -> NetworkResult:
        """Store a network trained here (the cache's stored result wins), hand it to the
        runner's keeper, and report it."""
        runner, job = self.runner, claimed.job
        stored = runner.cache.put(job, result, runner.study_name)
        if runner.keep is not None and network is not None and stored is result and result.ok:
            runner.keep(job, network, result)
        self.found[job.key] = (stored, True)
        runner.events.on_trained(job.tree.describe())
        return stored

    def outcome(self) -> list[tuple[NetworkResult, bool]]:
        """Per job: its result and whether it trained here (the first use of a job listed
        twice; the second is a reuse)."""
        seen: set[str] = set()
        out = []
        for job in self.jobs:
            result, trained = self.found[job.key]
            out.append((result, trained and job.key not in seen))
            seen.add(job.key)
        return out


Strategy = Callable[[_Dispatch, list[_Claimed]], None]


class Runner:
    """A suite's splits on their device, the result cache, and how networks train there.

    ``runtime`` (default: plain fp32 on the training split's device) applies to every
    network; ``fused`` (None: ``$AUTOTASK_FUSED``, on by default) lets :meth:`run_many`
    train networks of one structure together where the runtime allows it. ``keep`` sees
    every network trained and stored here (to keep its weights).
    """

    def __init__(
        self,
        suite: TaskSuite,
        data: Mapping[str, Split],
        cache: ResultCache,
        *,
        runtime: Runtime | None = None,
        study_name: str | None = None,
        events: RunnerEvents | None = None,
        fused: bool | None = None,
        keep: NetworkKeeper | None = None,
    ) -> None:
        self.suite = suite
        self.data = dict(data)
        self.cache = cache
        self.runtime = runtime if runtime is not None else Runtime(self.data["train"].x.device)
        self.study_name = study_name
        self.events = events if events is not None else RunnerEvents()
        self.fused = fused
        self.keep = keep
        self.interface: ModelInterface = interface_for(suite)

    @classmethod
    def place(
        cls,
        suite: TaskSuite,
        cache: ResultCache,
        *,
        device: torch.device,
        runtime: RuntimeSpec | None = None,
        study_name: str | None = None,
        events: RunnerEvents | None = None,
    ) -> Runner:
        """The suite's splits placed for ``device`` (those over the runtime's data budget
        stay on the host and are streamed batch by batch) under ``runtime`` (default
        settings: bf16 autocast and TF32 on CUDA, fp32 elsewhere)."""
        resolved = (runtime or RuntimeSpec()).resolve(device)
        data = place_splits(suite.splits, resolved)
        return cls(suite, data, cache, runtime=resolved, study_name=study_name, events=events)

    @property
    def device(self) -> torch.device:
        """Where networks train (splits over the data budget stay on the host)."""
        return self.runtime.device

    @contextmanager
    def device_data_released(self) -> Iterator[None]:
        """Inside, this runner holds its splits on the host only (its device copies are
        dropped and the allocator's cache returned), e.g. while worker processes train on
        the same GPU; they are placed again on exit. Nothing may train inside."""
        if self.device.type == "cpu":
            yield
            return
        self.data = {name: split.to("cpu") for name, split in self.suite.splits.items()}
        free_device_memory(self.device)
        try:
            yield
        finally:
            self.data = place_splits(self.suite.splits, self.runtime)

    @property
    def tasks(self) -> list[str]:
        return self.suite.task_names

    def higher_is_better(self) -> dict[str, bool]:
        return {t.name: t.higher_is_better for t in self.suite.tasks}

    def job(
        self,
        tree: TaskTree,
        backbone: BackboneSpec,
        optimizer: OptimizerSpec,
        balancer: BalancerSpec,
        seed: int,
    ) -> NetworkJob:
        """The job of one network on this suite, under this runner's numerics."""
        return NetworkJob(
            self.suite.key(), tree, backbone, optimizer, balancer, seed, self.runtime.numerics()
        )

    # -- training without the cache ----------------------------------------------------

    def train(
        self,
        job: NetworkJob,
        *,
        on_epoch: EpochCallback | None = None,
        observer_factory: ObserverFactory | None = None,
        refit: bool = False,
    ) -> tuple[TreeNetwork, NetworkResult]:
        """Train ``job`` on this runner's data now (no cache lookup, nothing stored).

        ``refit``: train on the training and validation rows together for exactly
        ``job.optimizer.epochs`` epochs and keep the last epoch's weights (its validation
        metrics are then measured on rows it trained on)."""
        if refit:
            data = {**self.data, "train": self.data["train"].joined(self.data["val"])}
            return run_to_end(
                train_epochs(
                    job,
                    data,
                    self.interface,
                    on_epoch=on_epoch,
                    runtime=self.runtime,
                    keep_last=True,
                )
            )
        return run_to_end(self.epochs(job, on_epoch=on_epoch, observer_factory=observer_factory))

    def epochs(
        self,
        job: NetworkJob,
        *,
        on_epoch: EpochCallback | None = None,
        observer_factory: ObserverFactory | None = None,
        epoch_metrics: bool = False,
    ) -> TrainingRun:
        """``job``'s training on this runner, epoch by epoch (see :func:`train_epochs`)."""
        return train_epochs(
            job,
            self.data,
            self.interface,
            on_epoch=on_epoch,
            observer_factory=observer_factory,
            epoch_metrics=epoch_metrics,
            runtime=self.runtime,
        )

    # -- training through the cache ----------------------------------------------------

    def pending(self, jobs: Sequence[NetworkJob]) -> int:
        """How many distinct networks of ``jobs`` the cache does not hold yet."""
        return len({job.key for job in jobs if self.cache.get(job) is None})

    def run(self, job: NetworkJob) -> tuple[NetworkResult, bool]:
        """The job's result from the cache, or trained now and stored; and whether it trained."""
        return self._dispatch([job], self._sequential, together=False)[0]

    def run_many(self, jobs: Sequence[NetworkJob]) -> list[tuple[NetworkResult, bool]]:
        """:meth:`run` for each job, training the uncached ones together where their
        networks share a structure and :meth:`fuses` allows it (then every job trained
        here is claimed first); each is stored as soon as its network finishes."""
        if self.fuses(len(jobs)):
            return self._dispatch(jobs, self._fused, together=True)
        return self._dispatch(jobs, self._sequential, together=False)

    def run_lockstep(
        self,
        jobs: Sequence[NetworkJob],
        on_round: RoundCallback,
        *,
        tally: EpochTally | None = None,
    ) -> list[tuple[NetworkResult, bool]]:
        """:meth:`run` for each job, the uncached ones trained one epoch each in turn (the
        results equal training them one after another); ``on_round`` sees every job's
        result so far after each round, and ``tally`` the epochs trained.

        A network that diverges stops the run: it is stored, the others are dropped, and
        :class:`TrialDiverged` is raised. So is anything ``on_round`` raises.
        """
        tally = tally if tally is not None else EpochTally()
        tally.epochs = 0
        return self._dispatch(
            jobs, lambda d, mine: self._lockstep(d, mine, on_round, tally), together=True
        )

    def fuses(self, jobs: int) -> bool:
        """Whether :meth:`run_many` trains ``jobs`` jobs with the fused strategy: fusion on
        (``fused``, else ``$AUTOTASK_FUSED``), two jobs or more, and a runtime that allows
        grouping (:meth:`runtime_allows_grouping`)."""
        fused = fused_enabled() if self.fused is None else self.fused
        return fused and jobs >= 2 and self.runtime_allows_grouping()

    def runtime_allows_grouping(self) -> bool:
        """Whether networks can train grouped under this runtime and data: fp32 or bf16
        (TF32 either way) on splits held on the device, without torch.compile
        (:func:`~autotask.engine.fused.runtime_blocker`). Channels-last convolutional
        networks are left to :func:`~autotask.engine.fused.train_networks`, which trains
        them one at a time."""
        return runtime_blocker(self.runtime, self.data) is None

    # -- the one path ------------------------------------------------------------------

    def _dispatch(
        self, jobs: Sequence[NetworkJob], strategy: Strategy, *, together: bool
    ) -> list[tuple[NetworkResult, bool]]:
        """Look up, claim (in the order of cache keys), report, train (``strategy``) and
        store. ``together``: claim every job first and train them in one go; otherwise
        claim each just before it trains (another process may train the next meanwhile)."""
        dispatch = _Dispatch(self, jobs)
        todo: dict[str, NetworkJob] = {}
        for job in jobs:
            if job.key in dispatch.found or job.key in todo:
                continue
            cached = self.cache.get(job)
            if cached is not None:
                dispatch.found[job.key] = (cached, False)
            else:
                todo[job.key] = job
        keys = sorted(todo)
        for part in [keys] if together else [[key] for key in keys]:
            with ExitStack() as claims:
                mine: list[_Claimed] = []
                for key in part:
                    claim = claims.enter_context(self.cache.claim(todo[key]))
                    if claim.result is not None:  # another process stored it meanwhile
                        dispatch.found[key] = (claim.result, False)
                    else:
                        mine.append(_Claimed(todo[key], claim.heartbeat))
                for claimed in mine:
                    self.events.on_network(claimed.job.tree.describe())
                if mine:
                    strategy(dispatch, mine)
        return dispatch.outcome()

    # -- strategies --------------------------------------------------------------------

    def _sequential(self, dispatch: _Dispatch, mine: list[_Claimed]) -> None:
        for claimed in mine:
            network, result = self.train(claimed.job, on_epoch=claimed.heartbeat)
            dispatch.store(claimed, result, network)
            del network  # its blocks stay in the allocator's cache for the next network

    def _fused(self, dispatch: _Dispatch, mine: list[_Claimed]) -> None:
        def store(index: int, network: TreeNetwork, result: NetworkResult) -> None:
            dispatch.store(mine[index], result, network)

        train_networks(
            [c.job for c in mine],
            self.data,
            self.interface,
            on_epoch=[c.heartbeat for c in mine],
            fused=True,
            on_result=store,
            runtime=self.runtime,
        )

    def _lockstep(
        self,
        dispatch: _Dispatch,
        mine: list[_Claimed],
        on_round: RoundCallback,
        tally: EpochTally,
    ) -> None:
        first = {job.key: i for i, job in reversed(list(enumerate(dispatch.jobs)))}
        runs = {
            c.job.key: _Lockstep(c, self.epochs(c.job, on_epoch=c.heartbeat, epoch_metrics=True))
            for c in sorted(mine, key=lambda c: first[c.job.key])  # in the order of the jobs
        }
        finished_epochs = 0
        round_ = 0
        try:
            while runs:
                round_ += 1
                for key, run in list(runs.items()):
                    finished = run.advance()
                    if finished is not None:
                        del runs[key]
                        finished_epochs += finished.epochs_run
                    tally.epochs = finished_epochs + sum(r.epochs for r in runs.values())
                    if finished is None:
                        continue
                    dispatch.store(run.claimed, finished, run.network)
                    run.network = None
                    if not finished.ok:
                        raise TrialDiverged(
                            f"network {run.claimed.job.tree.describe()} diverged: {finished.reason}"
                        )
                partial = [
                    runs[job.key].partial() if job.key in runs else dispatch.found[job.key][0]
                    for job in dispatch.jobs
                ]
                on_round(round_, partial)
        finally:  # pruned, diverged or interrupted: drop the partial runs
            for run in runs.values():
                run.close()


class _Lockstep:
    """One network's :func:`train_epochs` run, interleaved with others: its global RNG
    state (dropout, random balancers) is swapped in around each of its epochs."""

    def __init__(self, claimed: _Claimed, run: TrainingRun) -> None:
        self.claimed = claimed
        self.run = run
        self.rng = RngStream()  # starts where the run seeds itself
        self.report: EpochReport | None = None
        self.epochs = 0
        self.network: TreeNetwork | None = None  # once the run has ended

    def advance(self) -> NetworkResult | None:
        """Train one more epoch; the final result once the run has ended."""
        with self.rng.active():
            try:
                self.report = next(self.run)
                self.epochs = self.report.epoch
                return None
            except StopIteration as done:
                self.network, result = done.value
                self.epochs = result.epochs_run
                return result  # type: ignore[no-any-return]

    def partial(self) -> NetworkResult:
        """The network's result if it stopped now (validation metrics of its best epoch)."""
        metrics = {} if self.report is None else self.report.best_val_metrics
        tasks = list(self.claimed.job.tree.tasks)
        return NetworkResult(tasks=tasks, status="ok", val_metrics=dict(metrics))

    def close(self) -> None:
        self.run.close()
