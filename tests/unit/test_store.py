from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from autotask.engine.job import NetworkJob
from autotask.engine.result import NetworkResult
from autotask.errors import StorageError
from autotask.spec import BackboneSpec, BalancerSpec, OptimizerSpec, TaskTree
from autotask.store import Database, DatabaseCache
from autotask.store.models import SCHEMA_VERSION


def job(seed: int = 0, lr: float = 0.001) -> NetworkJob:
    return NetworkJob(
        "suite",
        TaskTree(tasks=("a", "b")),
        BackboneSpec(name="mlp"),
        OptimizerSpec(lr=lr),
        BalancerSpec(),
        seed,
    )


def result(value: float) -> NetworkResult:
    return NetworkResult(tasks=["a", "b"], status="ok", val_metrics={"a": value, "b": value})


def test_key_depends_on_everything_that_determines_training() -> None:
    assert job().key == job().key
    assert len({job().key, job(seed=1).key, job(lr=0.01).key}) == 3


def test_cache_round_trip_and_first_result_wins(tmp_path: Path) -> None:
    cache = DatabaseCache(Database(f"sqlite:///{tmp_path}/s.db"))
    assert cache.get(job()) is None
    stored = cache.put(job(), result(0.5), "study")
    assert cache.get(job()) == stored
    again = cache.put(job(), result(0.9), "other")
    assert again.val_metrics == {"a": 0.5, "b": 0.5}
    assert len(cache.rows()) == 1


def test_sqlite_database_uses_wal(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/s.db")
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    db = Database(url)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE autotask_schema SET version = :v"), {"v": SCHEMA_VERSION + 1})
    with pytest.raises(StorageError, match="newer than this autotask"):
        Database(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [("not a url", "not a database URL"), ("nosuchdb://x/y", "cannot use database URL")],
)
def test_bad_urls_are_storage_errors(url: str, message: str) -> None:
    with pytest.raises(StorageError, match=message):
        Database(url)


def test_an_older_schema_is_migrated_forward(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, inspect

    from autotask.store.models import GroupResultRow, SchemaVersionRow

    url = f"sqlite:///{tmp_path}/old.db"
    engine = create_engine(url)
    with engine.begin() as conn:  # a version-1 database: no claims table yet
        SchemaVersionRow.__table__.create(conn)
        GroupResultRow.__table__.create(conn)
        conn.execute(text("INSERT INTO autotask_schema (id, version) VALUES (1, 1)"))
    engine.dispose()
    db = Database(url)
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM autotask_schema")).scalar() == SCHEMA_VERSION
        assert inspect(conn).has_table("autotask_claims")
        assert inspect(conn).has_table("autotask_affinity")


def test_a_newer_schema_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, inspect

    url = f"sqlite:///{tmp_path}/new.db"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE autotask_schema (id INTEGER PRIMARY KEY, version INTEGER)"))
        conn.execute(text("INSERT INTO autotask_schema VALUES (1, :v)"), {"v": SCHEMA_VERSION + 5})
    with pytest.raises(StorageError, match="newer than this autotask"):
        Database(url)
    with engine.connect() as conn:
        assert inspect(conn).get_table_names() == ["autotask_schema"]


def test_numerics_are_stored_and_filled_in_by_the_migration(tmp_path: Path) -> None:
    """Version 3 had no numerics column: migrating fills it from each row's key (rows from
    before numerics existed are fp32, ``{}``); ``put`` writes it from then on."""
    from sqlalchemy import create_engine

    url = f"sqlite:///{tmp_path}/v3.db"
    bf16 = NetworkJob(*_fields(job()), {"precision": "bf16"})
    unknown = job(seed=7)
    engine = create_engine(url)
    with engine.begin() as conn:  # autotask's tables as version 3 wrote them
        conn.execute(text("CREATE TABLE autotask_schema (id INTEGER PRIMARY KEY, version INTEGER)"))
        conn.execute(text("INSERT INTO autotask_schema VALUES (1, 3)"))
        conn.execute(
            text(
                "CREATE TABLE autotask_group_results (id INTEGER PRIMARY KEY, key VARCHAR(64) "
                "UNIQUE, suite_key VARCHAR(64), tasks TEXT, tree JSON, balancer JSON, "
                "optimizer JSON, backbone JSON, seed INTEGER, epochs INTEGER, status "
                "VARCHAR(16), reason TEXT, result JSON, val_loss FLOAT, train_seconds FLOAT, "
                "study_name VARCHAR(512), created_at DATETIME)"
            )
        )
        for key, stored in ((job().key, job()), (bf16.key, bf16), ("0" * 32, unknown)):
            conn.execute(
                text(
                    "INSERT INTO autotask_group_results (key, suite_key, tasks, tree, balancer, "
                    "optimizer, backbone, seed, epochs, status, result, train_seconds) VALUES "
                    "(:key, :suite, 'a,b', :tree, :balancer, :optimizer, :backbone, :seed, 20, "
                    "'ok', :result, 0.0)"
                ),
                {
                    "key": key,
                    "suite": stored.suite_key,
                    "tree": stored.tree.model_dump_json(),
                    "balancer": stored.balancer.model_dump_json(),
                    "optimizer": stored.optimizer.model_dump_json(),
                    "backbone": stored.backbone.model_dump_json(),
                    "seed": stored.seed,
                    "result": json.dumps(result(0.5).to_dict()),
                },
            )
    engine.dispose()
    cache = DatabaseCache(Database(url))
    assert [row.numerics for row in cache.rows()] == [{}, {"precision": "bf16"}, None]
    assert cache.get(bf16) == result(0.5)
    tf32 = NetworkJob(*_fields(job(seed=1)), {"tf32": True})
    cache.put(tf32, result(0.7), "study")
    assert cache.rows()[-1].numerics == {"tf32": True}


def _fields(j: NetworkJob) -> tuple[str, TaskTree, BackboneSpec, OptimizerSpec, BalancerSpec, int]:
    return j.suite_key, j.tree, j.backbone, j.optimizer, j.balancer, j.seed


def test_weights_references_live_on_the_cache_row(tmp_path: Path) -> None:
    """Version 5 records where a network's weights are kept; rows start without."""
    cache = DatabaseCache(Database(f"sqlite:///{tmp_path}/w.db"))
    first, second = job(seed=1), job(seed=2)
    cache.put(first, result(0.5), "study")
    cache.put(second, result(0.6), "other")
    assert cache.weights_of(first) is None and cache.kept_weights("study") == {}
    ref = {"artifact_id": "weights-x.safetensors", "sha256": "0" * 64, "bytes": 10}
    assert cache.set_weights(first, ref) and cache.set_weights(second, ref)
    assert not cache.set_weights(job(seed=3), ref)  # no such row
    assert cache.weights_of(first) == ref
    assert cache.kept_weights("study") == {first.key: ref}
    cache.clear_weights(first.key)
    assert cache.weights_of(first) is None and cache.kept_weights("study") == {}
    assert cache.weights_of(second) == ref
