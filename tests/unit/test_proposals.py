"""Per-process sampler seeds and proposals that never repeat a parameter set."""

from __future__ import annotations

import hashlib
from typing import Any

import optuna
import pytest

from autotask.search.backend.objectives import build_sampler, sampler_seed
from autotask.search.backend.proposals import (
    PROPOSAL_ATTR,
    DistinctSampler,
    UnboundedSpace,
    count_parameter_sets,
    param_key,
    parameter_sets,
    taken_parameter_sets,
)
from autotask.search.sampling import sample_architecture
from autotask.search.study import take_sampler_session
from autotask.search.study_config import StudyConfig

State = optuna.trial.TrialState
TASKS = ["a", "b", "c", "d"]
BACKBONE = {"name": "mlp", "params": {"width": 8, "depth": 3}}
MIXED = {
    "partition": {"max_groups": 3},
    "branching": {"depths": [None, 1]},
    "balancers": [{"name": "equal"}, {"name": "uw"}],
    "optimizer": {"lr": {"low": 0.001, "high": 0.1, "log": True}},
}
GROUPING = {"branching": {"depths": [None]}}  # 4 tasks: the 15 partitions, nothing else


def config(space: dict[str, Any], sampler: Any = "tpe", seed: int = 3) -> StudyConfig:
    return StudyConfig.model_validate(
        {
            "name": "p",
            "suite": {"name": "synthetic"},
            "search_space": space,
            "sampler": sampler,
            "seed": seed,
        }
    )


def propose_for(cfg: StudyConfig) -> Any:
    return lambda trial: sample_architecture(trial, cfg.search_space, TASKS, BACKBONE)


def score(params: dict[str, Any]) -> float:
    """A deterministic stand-in for Δm: the trials' values depend on their parameters only."""
    digest = hashlib.sha256(repr(sorted(params.items())).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


def optimize(study: optuna.Study, cfg: StudyConfig, n: int) -> None:
    propose = propose_for(cfg)

    def objective(trial: optuna.Trial) -> float:
        propose(trial)
        return score(trial.params)

    study.optimize(objective, n_trials=n)


def distinct(cfg: StudyConfig, seed: int, session: int) -> DistinctSampler:
    return DistinctSampler(build_sampler(cfg, seed), propose_for(cfg), seed=seed, session=session)


def test_the_first_session_keeps_the_study_seed_and_the_others_differ() -> None:
    assert sampler_seed(7, 0) == 7
    later = [sampler_seed(7, k) for k in range(1, 200)]
    assert len(set(later)) == len(later) and 7 not in later
    assert all(0 <= s < 2**32 for s in later)
    assert sampler_seed(7, 1) != sampler_seed(8, 1)  # derived from the study seed too


@pytest.mark.parametrize("sampler", ["tpe", "random", {"name": "nsga2", "population_size": 4}])
def test_without_repeats_the_trials_are_those_of_the_bare_sampler(sampler: Any) -> None:
    # 24 trials: TPE models after its 10 random ones, NSGA-II breeds several generations.
    cfg = config(MIXED, sampler)
    bare = optuna.create_study(sampler=build_sampler(cfg), direction="maximize")
    optimize(bare, cfg, 24)
    keys = [param_key(t.params) for t in bare.trials]
    wrapped = optuna.create_study(sampler=distinct(cfg, cfg.seed, 0), direction="maximize")
    optimize(wrapped, cfg, 24)
    redrawn = [t.number for t in wrapped.trials if "redraws" in t.user_attrs]
    first = redrawn[0] if redrawn else 24
    # identical up to the first repeat the bare sampler made, which the wrapper redrew
    assert [param_key(t.params) for t in wrapped.trials][:first] == keys[:first]
    assert first == 24 or keys[first] in keys[:first]
    assert len({param_key(t.params) for t in wrapped.trials}) == 24


def test_no_partition_twice_until_all_were_tried() -> None:
    cfg = config(GROUPING, seed=0)
    assert count_parameter_sets(propose_for(cfg), limit=100) == 15
    assert count_parameter_sets(propose_for(cfg), limit=14) is None
    bare = optuna.create_study(sampler=build_sampler(cfg), direction="maximize")
    optimize(bare, cfg, 15)
    assert len({param_key(t.params) for t in bare.trials}) < 15  # the bare sampler repeats
    study = optuna.create_study(sampler=distinct(cfg, 0, 0), direction="maximize")
    optimize(study, cfg, 15)
    assert len({param_key(t.params) for t in study.trials}) == 15
    assert any(t.user_attrs.get("proposal") == "first untried" for t in study.trials)
    # Past exhaustion (the search stops before it) a trial says which one it repeats.
    optimize(study, cfg, 1)
    last = study.trials[-1]
    first = next(t for t in study.trials if param_key(t.params) == param_key(last.params))
    assert last.user_attrs["duplicate_of"] == first.number < last.number


def test_the_recorded_seed_replays_a_session() -> None:
    cfg = config(MIXED)
    study = optuna.create_study(sampler=distinct(cfg, sampler_seed(cfg.seed, 0), 0))
    optimize(study, cfg, 12)  # past TPE's random start-up trials
    study.sampler = distinct(cfg, sampler_seed(cfg.seed, 1), 1)  # resumed by a second process
    optimize(study, cfg, 6)
    trials = study.trials
    assert {t.user_attrs["sampler_session"] for t in trials[:12]} == {0}
    assert {t.user_attrs["sampler_seed"] for t in trials[:12]} == {cfg.seed}
    resumed = trials[12:]
    assert {t.user_attrs["sampler_session"] for t in resumed} == {1}
    assert len({param_key(t.params) for t in trials}) == 18
    # From the record alone: the trials before the session and its seed give its proposals.
    replay = optuna.create_study(sampler=distinct(cfg, resumed[0].user_attrs["sampler_seed"], 1))
    replay.add_trials(trials[:12])
    optimize(replay, cfg, 6)
    assert [t.params for t in replay.trials[12:]] == [t.params for t in resumed]
    # The study seed instead of the recorded one proposes other sets.
    other = optuna.create_study(sampler=distinct(cfg, cfg.seed, 1))
    other.add_trials(trials[:12])
    optimize(other, cfg, 6)
    assert [t.params for t in other.trials[12:]] != [t.params for t in resumed]


def test_sampling_sessions_are_counted_in_the_study() -> None:
    fresh = optuna.create_study()
    fresh.enqueue_trial({"x": 1.0})  # enqueued (e.g. affinity-seeded) trials are not sampled
    assert [take_sampler_session(fresh) for _ in range(3)] == [0, 1, 2]
    old = optuna.create_study()  # sampled before sessions were counted: plain seed used
    old.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert take_sampler_session(old) == 1


def test_held_parameter_sets() -> None:
    study = optuna.create_study()
    x = optuna.distributions.FloatDistribution(0, 1)
    done = optuna.trial.create_trial(params={"x": 0.1}, distributions={"x": x}, value=1.0)
    failed = optuna.trial.create_trial(params={"x": 0.2}, distributions={"x": x}, state=State.FAIL)
    study.add_trials([done, failed])
    running = study.ask()  # its values are not written yet: its proposal is
    study._storage.set_trial_system_attr(running._trial_id, PROPOSAL_ATTR, {"x": 0.3})
    study.enqueue_trial({"x": 0.4})
    taken = taken_parameter_sets(study.get_trials())
    assert taken == {(("x", v),): n for n, v in enumerate([0.1, 0.2, 0.3, 0.4])}
    assert (("x", 0.3),) not in taken_parameter_sets(study.get_trials(), exclude=2)
    # A FAIL that was retried frees its set for the retry.
    retry = optuna.trial.create_trial(
        params={"x": 0.2}, distributions={"x": x}, value=0.0, system_attrs={"retry_history": [1]}
    )
    study.add_trial(retry)
    assert taken_parameter_sets(study.get_trials())[(("x", 0.2),)] == 4


def test_parameter_sets_enumerates_each_set_once() -> None:
    cfg = config({"partition": {"max_groups": 2}, "branching": {"depths": [None, 1]}})
    sets = list(parameter_sets(propose_for(cfg)))
    # partitions of 4 tasks into at most 2 groups: 1 + 7; each group of 2+ tasks has 2 depths
    assert len(sets) == len({param_key(p) for p in sets}) == 2 + 4 * 2 + 3 * 2 * 2
    fixed = {"group[b]/1": 0, "group[c]/1": 0, "group[d]/1": 0}
    assert len(list(parameter_sets(propose_for(cfg), fixed))) == 2
    with pytest.raises(UnboundedSpace):
        list(parameter_sets(propose_for(config(MIXED))))
    assert count_parameter_sets(propose_for(config(MIXED)), limit=10**6) is None
