"""Trained models: weights files, model folders, loading checks, predictions, refits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from autotask.engine.cache import MemoryCache
from autotask.engine.evaluation import evaluate_network
from autotask.engine.runner import Runner
from autotask.errors import ConfigError, DataError
from autotask.models import build_network
from autotask.spec import (
    ArchitectureSpec,
    BackboneSpec,
    BalancerSpec,
    ModelInterface,
    OptimizerSpec,
    TaskTree,
)
from autotask.suites import get_suite
from autotask.trained.bundle import MANIFEST_FILE, TaskOutput, check_bundle_target
from autotask.trained.model import SavedNetwork, decode, load_model, save_model
from autotask.trained.weights import check_state, network_bytes, read_weights, sha256_of

INTERFACE = ModelInterface(
    input_shape=(12,),
    heads={"a": ("classification", 4), "b": ("regression", 1), "c": ("binary", 1)},
)
BACKBONE = BackboneSpec(name="mlp", params={"width": 16, "depth": 2})
OUTPUTS = {
    "a": TaskOutput(kind="classification", metric="accuracy", higher_is_better=True),
    "b": TaskOutput(
        kind="regression",
        metric="mae",
        higher_is_better=False,
        target_scaling={"mean": 10.0, "std": 2.0},
    ),
    "c": TaskOutput(kind="binary", metric="accuracy", higher_is_better=True),
}


def _spec() -> ArchitectureSpec:
    return ArchitectureSpec(
        networks=(
            TaskTree(
                tasks=("a", "b"),
                branch_at=1,
                children=(TaskTree(tasks=("a",)), TaskTree(tasks=("b",))),
            ),
            TaskTree(tasks=("c",)),
        ),
        backbone=BACKBONE,
        interface=INTERFACE,
    )


def _saved(
    folder: Path, seed: int = 0, force: bool = False
) -> tuple[ArchitectureSpec, list[torch.nn.Module]]:
    torch.manual_seed(seed)
    spec = _spec()
    networks = [build_network(tree, BACKBONE, INTERFACE) for tree in spec.networks]
    save_model(
        folder,
        spec,
        [SavedNetwork(net, seed=seed, key=f"k{i}") for i, net in enumerate(networks)],
        outputs=OUTPUTS,
        suite="toy",
        suite_key="toykey",
        numerics={},
        source={"test": True},
        metrics={"test": {"a": 0.5}},
        force=force,
    )
    return spec, networks


def test_weights_bytes_round_trip_exactly_and_carry_their_header() -> None:
    net = build_network(TaskTree(tasks=("a", "b")), BACKBONE, INTERFACE)
    data = network_bytes(net, {"tree": "[a,b]", "seed": 3})
    state, header = read_weights(data, sha256=sha256_of(data), what="w")
    assert header == {"tree": "[a,b]", "seed": 3}
    assert state.keys() == net.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert data[:1] != b"\x80"  # safetensors, not a pickle


def test_damaged_or_foreign_weights_are_one_line_data_errors() -> None:
    net = build_network(TaskTree(tasks=("a",)), BACKBONE, INTERFACE)
    data = network_bytes(net, {})
    with pytest.raises(DataError, match="SHA-256 does not match") as hashed:
        read_weights(data[:-1] + b"\x00", sha256=sha256_of(data), what="w")
    assert "\n" not in str(hashed.value)
    with pytest.raises(DataError, match="not a readable safetensors") as broken:
        read_weights(b"\xff" * 40, sha256=None, what="w")
    assert "\n" not in str(broken.value)
    from safetensors.torch import save

    with pytest.raises(DataError, match="not an autotask network weights file"):
        read_weights(save({"x": torch.zeros(2)}), sha256=None, what="w")
    wider = BackboneSpec(name="mlp", params={"width": 32, "depth": 2})
    other = build_network(TaskTree(tasks=("a",)), wider, INTERFACE)
    with pytest.raises(DataError, match="has shape"):
        check_state(other, net.state_dict(), "w")
    with pytest.raises(DataError, match="does not fit this network"):
        check_state(
            build_network(TaskTree(tasks=("b",)), BACKBONE, INTERFACE), net.state_dict(), "w"
        )


def test_a_model_folder_loads_back_to_the_same_outputs(tmp_path: Path) -> None:
    spec, networks = _saved(tmp_path / "m")
    model = load_model(tmp_path / "m")
    assert not model.training
    x = torch.randn(5, 12)
    outputs = model(x)
    assert torch.equal(outputs["a"], networks[0](x)["a"])
    assert torch.equal(outputs["c"], networks[1](x)["c"])
    manifest = json.loads((tmp_path / "m" / MANIFEST_FILE).read_text())
    assert [n["file"] for n in manifest["networks"]] == [
        "network-0.safetensors",
        "network-1.safetensors",
    ]
    assert manifest["metrics"] == {"test": {"a": 0.5}}
    assert model.manifest is not None and model.manifest.networks[0].key == "k0"
    assert len(spec.networks) == 2


def test_predict_returns_classes_probabilities_and_original_units(tmp_path: Path) -> None:
    _saved(tmp_path / "m")
    model = load_model(tmp_path / "m")
    x = torch.randn(6, 12)
    raw = model(x)
    predicted = model.predict(x)
    a = predicted["a"]
    assert a.probabilities is not None
    assert torch.allclose(a.probabilities.sum(dim=1), torch.ones(6))
    assert torch.equal(a.value, raw["a"].argmax(dim=1))
    assert torch.allclose(predicted["b"].value, raw["b"] * 2.0 + 10.0)
    c = predicted["c"]
    assert c.probabilities is not None
    assert torch.equal(c.value, (raw["c"] > 0).long())
    assert c.probabilities.shape == (6,)


def test_decode_per_pixel_kinds() -> None:
    seg = decode(
        torch.randn(2, 3, 4, 4),
        TaskOutput(kind="segmentation", metric="miou", higher_is_better=True),
    )
    assert seg.value.shape == (2, 4, 4) and seg.probabilities is not None
    depth = decode(
        torch.ones(2, 1, 4, 4), TaskOutput(kind="depth", metric="abs_err", higher_is_better=False)
    )
    assert depth.probabilities is None and torch.equal(depth.value, torch.ones(2, 1, 4, 4))


def test_tampered_missing_and_mismatched_folders_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    _saved(folder)
    weights = folder / "network-1.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-4] + b"\x00\x00\x00\x01")
    with pytest.raises(DataError, match="SHA-256 does not match"):
        load_model(folder)
    weights.unlink()
    with pytest.raises(DataError, match="missing"):
        load_model(folder)
    # weights of another suite, recorded with a matching hash
    net = build_network(TaskTree(tasks=("c",)), BACKBONE, INTERFACE)
    foreign = network_bytes(net, {"suite_key": "elsewhere", "tree": "[c]"})
    weights.write_bytes(foreign)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["networks"][1].update(sha256=sha256_of(foreign), bytes=len(foreign))
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="weights of another suite"):
        load_model(folder)
    (folder / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(DataError, match="unreadable"):
        load_model(folder)
    with pytest.raises(DataError, match="no such model folder"):
        load_model(tmp_path / "nowhere")


def test_a_model_folder_is_not_overwritten_without_force(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    _saved(folder)
    with pytest.raises(ConfigError, match="pass --force"):
        check_bundle_target(folder, force=False)
    check_bundle_target(folder, force=True)
    (folder / "network-7.safetensors").write_bytes(b"from an older, larger model")
    (folder / "notes.txt").write_text("mine")
    _saved(folder, force=True)
    assert sorted(p.name for p in folder.iterdir()) == [
        "architecture.yaml",
        "manifest.json",
        "network-0.safetensors",
        "network-1.safetensors",
        "notes.txt",
    ]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        check_bundle_target(tmp_path / "file", force=True)


def test_network_settings_override_the_architectures_and_keep_cache_keys() -> None:
    plain = TaskTree(tasks=("a", "b"))
    own = TaskTree(tasks=("a", "b"), optimizer=OptimizerSpec(lr=0.01))
    assert "optimizer" not in plain.model_dump(mode="json")
    assert own.structure() == plain and own.has_own_settings
    spec = ArchitectureSpec(networks=(own, TaskTree(tasks=("c",))), optimizer=OptimizerSpec())
    assert spec.optimizer_of(spec.networks[0]).lr == 0.01
    assert spec.optimizer_of(spec.networks[1]).lr == OptimizerSpec().lr
    assert not spec.uniform
    with pytest.raises(ValueError, match="only a network's root"):
        TaskTree(
            tasks=("a", "b"),
            branch_at=1,
            children=(TaskTree(tasks=("a",), optimizer=OptimizerSpec()), TaskTree(tasks=("b",))),
        )


def test_a_refit_trains_all_its_epochs_on_train_and_val(tmp_path: Path) -> None:
    suite = get_suite("synthetic", seed=0, n_samples=240)
    runner = Runner(suite, suite.splits, MemoryCache())
    job = runner.job(
        TaskTree(tasks=tuple(suite.task_names[:2])),
        BackboneSpec.model_validate(suite.default_backbone),
        OptimizerSpec(epochs=3, patience=1),
        BalancerSpec(),
        0,
    )
    _, result = runner.train(job, refit=True)
    assert result.epochs_run == 3 and result.best_epoch == 3
    _, again = runner.train(job, refit=True)
    assert again.test_metrics == result.test_metrics  # seeded
    _, plain = runner.train(job)
    assert plain.test_metrics != result.test_metrics  # it saw other rows


def test_kept_weights_are_written_as_networks_are_stored_and_pruned_to_budget(
    tmp_path: Path,
) -> None:
    from optuna.artifacts import FileSystemArtifactStore

    from autotask.search.weights import prune_weights, trained_networks, weights_keeper
    from autotask.store.cache import DatabaseCache
    from autotask.store.db import Database
    from autotask.trained.weights import WeightStore

    suite = get_suite("synthetic", seed=0, n_samples=240)
    cache = DatabaseCache(Database(f"sqlite:///{tmp_path}/s.db"))
    (tmp_path / "art").mkdir()
    store = WeightStore(FileSystemArtifactStore(tmp_path / "art"))
    runner = Runner(suite, suite.splits, cache, study_name="s", keep=weights_keeper(cache, store))
    backbone = BackboneSpec.model_validate(suite.default_backbone)
    jobs = [
        runner.job(TaskTree(tasks=(t,)), backbone, OptimizerSpec(epochs=2), BalancerSpec(), 0)
        for t in suite.task_names[:3]
    ]
    runs = runner.run_many(jobs)  # trained together where they share a structure
    kept = cache.kept_weights("s")
    assert list(kept) == [job.key for job in sorted(jobs, key=lambda j: j.key)]
    loaded = trained_networks(runner, cache, store, jobs)
    for job, network, (stored, _) in zip(jobs, loaded, runs, strict=True):
        assert network.result == stored
        evaluated = evaluate_network(network.network, suite.splits["test"], _kinds(suite))
        assert evaluated == stored.test_metrics  # the weights the stored metrics came from
        assert network.job == job
    size = next(iter(kept.values()))["bytes"]
    newest = list(kept)[-1]
    assert prune_weights("s", cache, store, {newest}, budget_bytes=size) == 2
    assert list(cache.kept_weights("s")) == [newest]
    assert len(list((tmp_path / "art").iterdir())) == 1
    assert prune_weights("s", cache, store, set()) == 1 and not cache.kept_weights("s")


def _kinds(suite: object) -> dict[str, str]:
    return {t.name: t.kind for t in suite.tasks}  # type: ignore[attr-defined]
