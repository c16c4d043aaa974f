"""Contracts of the Optuna private names autotask relies on, one test per name, and a scan
keeping every other autotask module off Optuna's private names.

Each contract test runs the wrapper in :mod:`autotask.search.backend.optuna_private` on a
real study and checks the behaviour autotask relies on, so an Optuna upgrade that renames
or changes one of these names fails the test named after it.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import textwrap
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import update

import autotask
from autotask.search.backend.optuna_private import (
    ARTIFACTS_ATTR_PREFIX,
    OPTIMIZE_LOGGER,
    ArtifactStore,
    DraftTrial,
    OfflineTrial,
    distribution_contains,
    heartbeat_interval,
    heartbeat_stale_trial_callback,
    heartbeating_running_trials,
    set_study_system_attr,
    stale_trial_ids,
    stop_requested,
    study_id,
    study_storage,
    study_system_attrs,
    trial_id,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore::optuna.exceptions.ExperimentalWarning",
    "ignore:Heartbeat of storage is supposed to be used",
)

X = FloatDistribution(0, 1)


def _no_callback(_study: optuna.Study, _trial: FrozenTrial) -> None:
    pass


@pytest.fixture
def rdb(tmp_path: Path) -> Iterator[optuna.storages.RDBStorage]:
    """An SQLite RDB storage with heartbeats on (every 5 s, stale after 10 s)."""
    storage = optuna.storages.RDBStorage(
        f"sqlite:///{tmp_path}/contract.db",
        heartbeat_interval=5,
        grace_period=10,
        heartbeat_stale_trial_callback=_no_callback,
    )
    yield storage
    storage.engine.dispose()


def _age_heartbeats(storage: optuna.storages.RDBStorage) -> None:
    """Move every recorded heartbeat a day into the past."""
    with storage.engine.begin() as connection:
        connection.execute(
            update(models.TrialHeartbeatModel).values(heartbeat=datetime.now() - timedelta(days=1))
        )


# --- the study's storage and ids ----------------------------------------------------------


def test_study_storage_is_the_storage_the_study_uses(rdb: optuna.storages.RDBStorage) -> None:
    """``Study._storage``."""
    memory = optuna.storages.InMemoryStorage()
    assert study_storage(optuna.create_study(storage=memory)) is memory
    study = optuna.create_study(study_name="s", storage=rdb)
    study.add_trial(optuna.create_trial(value=1.0, params={"x": 0.5}, distributions={"x": X}))
    storage = study_storage(study)
    assert isinstance(storage, optuna.storages.BaseStorage)
    assert storage.get_study_name_from_id(study_id(study)) == "s"
    assert [t.params for t in storage.get_all_trials(study_id(study))] == [{"x": 0.5}]


def test_study_id_names_the_study_in_its_storage(rdb: optuna.storages.RDBStorage) -> None:
    """``Study._study_id``."""
    optuna.create_study(study_name="first", storage=rdb)
    study = optuna.create_study(study_name="second", storage=rdb)
    assert study_id(study) == rdb.get_study_id_from_name("second")
    assert study_id(study) != rdb.get_study_id_from_name("first")


def test_trial_id_names_the_trial_in_its_storage(rdb: optuna.storages.RDBStorage) -> None:
    """``Trial._trial_id`` and ``FrozenTrial._trial_id``."""
    optuna.create_study(study_name="other", storage=rdb).optimize(lambda t: 0.0, n_trials=2)
    study = optuna.create_study(study_name="s", storage=rdb)
    seen: list[tuple[int, int]] = []

    def objective(trial: optuna.Trial) -> float:
        seen.append((trial.number, trial_id(trial)))
        return 0.0

    study.optimize(objective, n_trials=2)
    for number, id_ in seen:
        assert id_ == rdb.get_trial_id_from_study_id_trial_number(study_id(study), number)
    assert [trial_id(t) for t in study.get_trials()] == [id_ for _, id_ in seen]


def test_study_system_attrs_are_what_optuna_records(rdb: optuna.storages.RDBStorage) -> None:
    """``Study._storage`` and ``Study._study_id`` as the study's system attributes."""
    study = optuna.create_study(study_name="s", storage=rdb)
    study.set_metric_names(["score"])  # Optuna keeps the metric names in a system attribute
    set_study_system_attr(study, "autotask:test", {"a": [1, 2]})
    attrs = study_system_attrs(study)
    assert attrs["autotask:test"] == {"a": [1, 2]}
    assert any(value == ["score"] for value in attrs.values())
    (summary,) = rdb.get_all_studies()  # the storage's public reader agrees
    assert summary.system_attrs == attrs
    assert "autotask:test" not in study.user_attrs


# --- Study.optimize -----------------------------------------------------------------------


def test_stop_requested_sees_study_stop_until_the_next_optimize_call() -> None:
    """``Study._stop_flag``: set by ``Study.stop``, cleared as ``optimize`` starts."""
    study = optuna.create_study()
    seen: list[bool] = []

    def stop_after_first(study: optuna.Study, _trial: FrozenTrial) -> None:
        seen.append(stop_requested(study))
        study.stop()
        seen.append(stop_requested(study))

    study.optimize(lambda t: 0.0, n_trials=5, callbacks=[stop_after_first])
    assert len(study.trials) == 1 and seen == [False, True]
    assert stop_requested(study)  # still set after optimize returned
    study.optimize(lambda t: float(stop_requested(t.study)), n_trials=1)
    assert study.trials[-1].value == 0.0  # the next optimize call cleared it


def test_optimize_logs_a_failed_trial_with_its_traceback_on_optimize_logger() -> None:
    """``optuna.study._optimize``'s logger: autotask filters the traceback of interrupted
    trials out of it."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger = logging.getLogger(OPTIMIZE_LOGGER)
    logger.addHandler(handler)

    def fail(_trial: optuna.Trial) -> float:
        raise ValueError("boom")

    try:
        optuna.create_study().optimize(fail, n_trials=1, catch=(ValueError,))
    finally:
        logger.removeHandler(handler)
    failed = [r for r in records if r.exc_info and isinstance(r.exc_info[1], ValueError)]
    assert failed and failed[0].name == OPTIMIZE_LOGGER


# --- heartbeats ---------------------------------------------------------------------------


def test_heartbeat_interval_is_the_storages_or_none(tmp_path: Path) -> None:
    """``optuna.storages._heartbeat.BaseHeartbeat`` and ``is_heartbeat_enabled``."""
    on = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/on.db", heartbeat_interval=7)
    off = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/off.db")
    assert heartbeat_interval(optuna.create_study(storage=on)) == 7
    assert heartbeat_interval(optuna.create_study(storage=off)) is None
    assert heartbeat_interval(optuna.create_study()) is None
    on.engine.dispose()
    off.engine.dispose()


def test_heartbeat_stale_trial_callback_is_the_storages(
    rdb: optuna.storages.RDBStorage, tmp_path: Path
) -> None:
    """``BaseHeartbeat.get_heartbeat_stale_trial_callback`` behind the study's storage."""
    assert heartbeat_stale_trial_callback(optuna.create_study(storage=rdb)) is _no_callback
    bare = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/bare.db", heartbeat_interval=5)
    assert heartbeat_stale_trial_callback(optuna.create_study(storage=bare)) is None
    assert heartbeat_stale_trial_callback(optuna.create_study()) is None
    bare.engine.dispose()


def test_stale_trial_ids_after_a_missed_heartbeat(rdb: optuna.storages.RDBStorage) -> None:
    """``BaseHeartbeat._get_stale_trial_ids``: RUNNING trials whose last heartbeat is older
    than the grace period; not trials that never sent one, nor finished ones."""
    study = optuna.create_study(storage=rdb)
    silent = study.ask({"x": X})  # never sent a heartbeat
    dead = study.ask({"x": X})
    done = study.ask({"x": X})
    for trial in (dead, done):
        rdb.record_heartbeat(trial_id(trial))
    assert stale_trial_ids(study) == []  # fresh heartbeats
    _age_heartbeats(rdb)
    study.tell(done, 1.0)
    assert stale_trial_ids(study) == [trial_id(dead)]
    assert trial_id(silent) not in stale_trial_ids(study)
    assert stale_trial_ids(optuna.create_study()) == []  # no heartbeats: none


def test_heartbeating_running_trials_counts_behind_the_cache(
    rdb: optuna.storages.RDBStorage,
) -> None:
    """``_CachedStorage._backend`` and ``optuna.storages._rdb.models``'s ``TrialModel`` /
    ``TrialHeartbeatModel``."""
    study = optuna.create_study(storage=rdb)
    assert isinstance(study_storage(study), optuna.storages._CachedStorage)
    other = optuna.create_study(storage=rdb)
    rdb.record_heartbeat(trial_id(other.ask({"x": X})))  # another study's: not counted
    study.ask({"x": X})  # no heartbeat: not counted
    beating = study.ask({"x": X})
    rdb.record_heartbeat(trial_id(beating))
    assert heartbeating_running_trials(study) == 1
    study.tell(beating, 1.0)
    assert heartbeating_running_trials(study) == 0
    assert heartbeating_running_trials(optuna.create_study()) == 0  # not an RDB


# --- distributions and trials -------------------------------------------------------------


@pytest.mark.parametrize(
    ("distribution", "inside", "outside"),
    [
        (IntDistribution(0, 10, step=2), 4, 5),
        (FloatDistribution(0, 1), 0.5, 2.0),
        (FloatDistribution(0, 1, step=0.25), 0.75, 0.3),
    ],
)
def test_distribution_contains(distribution: BaseDistribution, inside: Any, outside: Any) -> None:
    """``BaseDistribution._contains``."""
    assert distribution_contains(distribution, inside)
    assert not distribution_contains(distribution, outside)
    assert distribution_contains(CategoricalDistribution(["a", "b"]), "b")


class _Recording(OfflineTrial):
    def __init__(self, fixed: dict[str, Any]) -> None:
        super().__init__(
            optuna.create_trial(state=TrialState.RUNNING, system_attrs={"fixed_params": fixed})
        )
        self.drawn: list[str] = []

    def draw(self, name: str, distribution: BaseDistribution) -> Any:
        self.drawn.append(name)
        return {"x": 0.25, "n": 3, "c": "b"}[name]


def test_offline_trial_routes_every_suggest_through_suggest() -> None:
    """``Trial._suggest`` (every ``suggest_*``), ``_cached_frozen_trial``, ``_fixed_params``,
    ``Trial._is_fixed_param`` and ``optuna.distributions._get_single_value``."""
    trial = _Recording(fixed={"f": 7})
    assert trial.suggest_float("x", 0, 1) == 0.25
    assert trial.suggest_int("n", 1, 5) == 3
    assert trial.suggest_categorical("c", ["a", "b"]) == "b"
    assert trial.suggest_int("f", 0, 10) == 7  # fixed: not drawn
    assert trial.suggest_int("one", 4, 4) == 4  # single-valued: not drawn
    assert trial.suggest_categorical("only", ["z"]) == "z"
    assert trial.suggest_float("x", 0, 1) == 0.25  # asked again: the same, not drawn
    assert trial.drawn == ["x", "n", "c"]
    assert trial.params == {"x": 0.25, "n": 3, "c": "b", "f": 7, "one": 4, "only": "z"}
    assert set(trial.distributions) == set(trial.params)


def _propose(trial: optuna.Trial) -> None:
    trial.suggest_float("x", 0, 1)
    if trial.suggest_categorical("c", ["a", "b", "c"]) != "a":
        trial.suggest_int("n", 1, 9)


def _twin(sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    study = optuna.create_study(sampler=sampler)
    for i in range(12):
        params: dict[str, Any] = {"x": (i * 7 % 12) / 12, "c": "abc"[i % 3]}
        dists: dict[str, BaseDistribution] = {
            "x": X,
            "c": CategoricalDistribution(["a", "b", "c"]),
        }
        if params["c"] != "a":
            params["n"], dists["n"] = 1 + i % 9, IntDistribution(1, 9)
        study.add_trial(optuna.create_trial(value=float(i % 5), params=params, distributions=dists))
    return study


@pytest.mark.parametrize("relative", [True, False])
def test_draft_trial_draws_what_the_real_trial_would(relative: bool) -> None:
    """``Trial.relative_params`` / ``_relative_params`` / ``relative_search_space``,
    ``Trial._is_relative_param``, ``Trial._get_latest_trial`` and the ``study``,
    ``storage`` and ``_trial_id`` attributes they read: a draft of a new trial, asked with
    a seeded sampler, gets the parameters the real trial gets from a twin sampler, and the
    draft writes nothing."""

    def sampler() -> optuna.samplers.BaseSampler:
        if relative:
            return optuna.samplers.TPESampler(
                seed=3, multivariate=True, group=True, n_startup_trials=4
            )
        return optuna.samplers.RandomSampler(seed=3)

    draft_study, real_study = _twin(sampler()), _twin(sampler())
    draft_storage = study_storage(draft_study)
    created = draft_storage.create_new_trial(study_id(draft_study))
    frozen = draft_storage.get_trial(created)
    draft = DraftTrial(draft_study, frozen, draft_study.sampler)
    _propose(draft)
    if relative:
        assert draft.relative_search_space  # the multivariate path was taken
    real = real_study.ask()
    _propose(real)
    assert draft.params == real.params
    assert draft_storage.get_trial(created).params == {}


# --- optuna.artifacts ---------------------------------------------------------------------


def test_artifact_store_is_the_type_upload_artifact_takes(tmp_path: Path) -> None:
    """``optuna.artifacts._protocol.ArtifactStore`` and ``optuna.artifacts._upload``'s
    ``ARTIFACTS_ATTR_PREFIX``: uploading records the artifact's ``artifact_id`` and
    ``filename`` under a study system attribute with that prefix."""
    (tmp_path / "artifacts").mkdir()
    store = optuna.artifacts.FileSystemArtifactStore(str(tmp_path / "artifacts"))
    for method in ("open_reader", "write", "remove"):
        assert callable(getattr(ArtifactStore, method))
        assert callable(getattr(store, method))
    study = optuna.create_study()
    upload = tmp_path / "figure.html"
    upload.write_text("<p>figure</p>")
    artifact_store: ArtifactStore = store
    artifact = optuna.artifacts.upload_artifact(
        artifact_store=artifact_store, file_path=str(upload), study_or_trial=study
    )
    metas = [
        json.loads(value)
        for key, value in study_system_attrs(study).items()
        if key.startswith(ARTIFACTS_ATTR_PREFIX)
    ]
    assert [(m["artifact_id"], m["filename"]) for m in metas] == [(artifact, "figure.html")]


# --- no Optuna private name outside optuna_private.py ------------------------------------

#: The module allowed to use Optuna's private names.
WRAPPER = Path(autotask.__file__).parent / "search" / "backend" / "optuna_private.py"
#: Public names of Python's named tuples (e.g. SQLAlchemy's ``URL._replace``).
NAMEDTUPLE_API = frozenset({"_replace", "_asdict", "_fields", "_field_defaults", "_make"})
PRIVATE_MODULE = re.compile(r"optuna(\.\w+)*\._\w+(\.\w+)*")


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _optuna_private_names() -> frozenset[str]:
    """Every underscore name the installed Optuna defines or reads as an attribute."""
    names: set[str] = set()
    for path in Path(optuna.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
    return frozenset(n for n in names if _private(n)) - NAMEDTUPLE_API


OPTUNA_PRIVATE = _optuna_private_names()


def optuna_private_uses(source: str) -> list[str]:
    """``line: what`` for each use of an Optuna private name in ``source``: an import from
    a private Optuna module or of a private name; an attribute named as one of Optuna's
    private names (on ``self``/``cls`` only if the module does not define that name
    itself); ``getattr``-style access by such a name; a private Optuna module's dotted
    name as a string (e.g. a logger's)."""
    tree = ast.parse(source)
    own = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
    } | {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            module = (node.module or "") if isinstance(node, ast.ImportFrom) else ""
            full = [module] if module else []
            full += [f"{module}.{a.name}" if module else a.name for a in node.names]
            if any(n.split(".")[0] == "optuna" and any(map(_private, n.split("."))) for n in full):
                found.append(f"{node.lineno}: import {', '.join(full)}")
        elif isinstance(node, ast.Attribute) and node.attr in OPTUNA_PRIVATE:
            on_self = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if not (on_self and node.attr in own):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in OPTUNA_PRIVATE
        ):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and PRIVATE_MODULE.fullmatch(node.value)
        ):
            found.append(f"{node.lineno}: {node.value!r}")
    return sorted(found, key=lambda f: int(f.split(":")[0]))


def test_only_optuna_private_uses_optuna_private_names() -> None:
    package = Path(autotask.__file__).parent
    found = {
        str(path.relative_to(package.parent)): uses
        for path in sorted(package.rglob("*.py"))
        if path != WRAPPER
        for uses in [optuna_private_uses(path.read_text(encoding="utf-8"))]
        if uses
    }
    assert found == {}, "use autotask.search.backend.optuna_private instead"
    assert optuna_private_uses(WRAPPER.read_text(encoding="utf-8"))  # the scan sees them


PLANTED = """
import logging
import optuna
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.storages import _CachedStorage
import optuna.storages._rdb.models


class Draft(optuna.Trial):
    def values(self):
        return self._cached_frozen_trial.params


def gate(study, trial, distribution):
    storage = study._storage
    storage.get_trial(trial._trial_id)
    flag = getattr(study, "_stop_flag", False)
    logging.getLogger("optuna.study._optimize")
    return optuna.distributions._get_single_value(distribution), flag
"""

CLEAN = '''
"""Mentions optuna.storages._heartbeat in a docstring only."""
import optuna
from sqlalchemy.engine import make_url


class Lock:
    def __init__(self, study: optuna.Study) -> None:
        self._storage = study.study_name  # its own attribute of that name
        self._lock = None

    def acquire(self) -> None:
        print(self._storage, self._lock)


def host(url: str) -> str:
    return str(make_url(url)._replace(host="h"))
'''


def test_the_scan_catches_planted_private_names(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(PLANTED)
    assert optuna_private_uses(planted.read_text()) == [
        "4: import optuna.storages._heartbeat, optuna.storages._heartbeat.is_heartbeat_enabled",
        "5: import optuna.storages, optuna.storages._CachedStorage",
        "6: import optuna.storages._rdb.models",
        "11: self._cached_frozen_trial",
        "15: study._storage",
        "16: trial._trial_id",
        "17: getattr(study, '_stop_flag', False)",
        "18: 'optuna.study._optimize'",
        "19: optuna.distributions._get_single_value",
    ]
    clean = tmp_path / "clean.py"
    clean.write_text(textwrap.dedent(CLEAN))
    assert optuna_private_uses(clean.read_text()) == []
