"""Kept weights in S3-compatible object storage (``$AUTOTASK_ARTIFACTS=s3://...``),
against moto's in-process S3."""

from __future__ import annotations

from pathlib import Path

import pytest

boto3 = pytest.importorskip("boto3")
moto = pytest.importorskip("moto")

from autotask.errors import ConfigError, DataError  # noqa: E402
from autotask.search.model_export import export_trial_model  # noqa: E402
from autotask.search.run import run_study  # noqa: E402
from autotask.search.study_config import StudyConfig  # noqa: E402
from autotask.search.weights import weight_store_for  # noqa: E402
from autotask.store.artifacts import (  # noqa: E402
    ARTIFACTS_ENV,
    PrefixedArtifactStore,
    artifact_store_for,
)
from autotask.trained.model import load_model  # noqa: E402


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> object:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        ARTIFACTS_ENV: "s3://models/runs/one",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with moto.mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="models")
        yield client


def test_an_s3_location_gives_a_prefixed_bucket_store(bucket: object) -> None:
    store = artifact_store_for("sqlite:///anything.db")
    assert isinstance(store, PrefixedArtifactStore)
    weights = weight_store_for("sqlite:///anything.db")
    ref = weights.save("abc", b"bytes of a network")
    listed = bucket.list_objects_v2(Bucket="models")["Contents"]  # type: ignore[attr-defined]
    assert [o["Key"] for o in listed] == ["runs/one/weights-abc.safetensors"]
    assert weights.load(ref) == b"bytes of a network"
    weights.remove(ref)
    with pytest.raises(DataError, match="missing from the artifact store"):
        weights.load(ref)


def test_a_bucketless_location_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ARTIFACTS_ENV, "s3://")
    with pytest.raises(ConfigError, match="s3://bucket"):
        artifact_store_for("sqlite:///x.db")


def test_a_search_keeps_and_exports_its_weights_through_s3(bucket: object, tmp_path: Path) -> None:
    config = StudyConfig.model_validate(
        {
            "name": "s3",
            "suite": {"name": "synthetic", "seed": 0, "n_samples": 240},
            "search_space": {
                "partition": {"max_groups": 2},
                "branching": {"depths": [None]},
                "optimizer": {"epochs": 2},
            },
            "trials": 2,
            "confirm": 0,
        }
    )
    url = f"sqlite:///{tmp_path}/s3.db"
    run = run_study(config, storage=url)
    listed = bucket.list_objects_v2(Bucket="models")["Contents"]  # type: ignore[attr-defined]
    keys = [o["Key"] for o in listed if "/weights-" in o["Key"]]
    assert keys and all(k.startswith("runs/one/weights-") for k in keys)
    assert not (tmp_path / "s3.artifacts").exists()  # nothing on the local disk
    session = run.session
    manifest = export_trial_model(
        session.study, session.config, session.context, weight_store_for(url), tmp_path / "m"
    )
    model = load_model(tmp_path / "m")
    assert model.manifest == manifest
