"""Trained models out of a search, end to end through the CLI: kept weights, export
--weights, load_model and predict, select -o, train (and --refit), inspect, and the
one-line errors for damaged weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest
from sqlalchemy import select

import autotask
from autotask.engine.evaluation import evaluate_network
from autotask.engine.result import NetworkResult
from autotask.search.confirmed import chosen_trial
from autotask.store.db import Database
from autotask.store.models import GroupResultRow
from tests.integration.cli_runner import run_cli

STUDY = """
name: {name}
suite: {{name: digits, seed: 0}}
search_space:
  partition: {{max_groups: 3}}
  branching: {{depths: [null, 1]}}
  optimizer: {{lr: 0.005, epochs: 6, patience: 3}}
trials: 4
seed: 0
confirm: {{top: 2, seeds: 1}}
keep_weights: {keep}
runtime: {{precision: fp32}}
"""


def _search(root: Path, name: str, keep: str, env: dict[str, str] | None = None) -> None:
    (root / f"{name}.yaml").write_text(STUDY.format(name=name, keep=keep))
    run = run_cli("search", f"{name}.yaml", "--quiet", cwd=root, env=env)
    assert run.returncode == 0, run.stderr


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study keeping its best networks' weights (default), trained the default way
    (fused where networks share a structure)."""
    folder = tmp_path_factory.mktemp("trained")
    _search(folder, "kept", "best")
    return folder


def _study(root: Path, name: str) -> optuna.Study:
    url = f"sqlite:///{root}/studies/{name}.db"
    return optuna.load_study(study_name=name, storage=url)


def _rows(root: Path, name: str) -> dict[str, GroupResultRow]:
    db = Database(f"sqlite:///{root}/studies/{name}.db")
    with db.session() as session:
        return {row.key: row for row in session.scalars(select(GroupResultRow))}


def _measured(model: autotask.TrainedModel, split: str) -> dict[str, float]:
    """Each task's primary metric of the model's serving network on a digits split."""
    suite = autotask.get_suite("digits", seed=0)
    kinds = {t.name: t.kind for t in suite.tasks}
    data = suite.splits[split]
    measured: dict[str, float] = {}
    for index, network in enumerate(model.networks):
        values = evaluate_network(network, data, kinds)  # type: ignore[arg-type]
        measured.update({t: values[t] for t, i in model.serving.items() if i == index})
    return measured


def test_export_weights_reproduces_the_chosen_trials_test_metrics_exactly(root: Path) -> None:
    run = run_cli("export", "kept", "-o", "model", "--weights", cwd=root)
    assert run.returncode == 0, run.stderr
    assert "wrote model: " in run.stdout
    trial = chosen_trial(_study(root, "kept"))
    stored = {t: trial.user_attrs[f"test.{t}"] for t in autotask.get_suite("digits").task_names}
    model = autotask.load_model(root / "model")
    assert _measured(model, "test") == stored  # exactly, on the CPU
    assert model.manifest is not None
    assert model.manifest.metrics["test"] == stored
    assert model.manifest.source["trial"] == trial.number
    predicted = model.predict(autotask.get_suite("digits").splits["test"].x[:4])
    assert predicted["digit"].value.dtype.is_floating_point is False
    assert predicted["digit"].probabilities is not None
    assert predicted["ink"].probabilities is None  # regression: values in original units


def test_best_keeps_only_the_chosen_networks_weights(root: Path) -> None:
    trial = chosen_trial(_study(root, "kept"))
    keys = set(trial.user_attrs["network_keys"])
    kept = {k for k, row in _rows(root, "kept").items() if row.weights}
    assert kept == keys
    files = sorted(p.name for p in (root / "studies" / "kept.artifacts").glob("weights-*"))
    assert files == sorted(f"weights-{k}.safetensors" for k in keys)


def test_inspect_checks_a_folder_and_damage_is_one_line_exit_2(root: Path) -> None:
    run = run_cli("export", "kept", "-o", "damaged", "--weights", cwd=root)
    assert run.returncode == 0, run.stderr
    assert run_cli("inspect", "damaged", cwd=root).returncode == 0
    weights = root / "damaged" / "network-0.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    run = run_cli("inspect", "damaged", cwd=root)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "SHA-256 does not match" in run.stderr
    # a file that is no safetensors at all, recorded with its own hash
    import hashlib

    junk = b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}!!"
    weights.write_bytes(junk)
    manifest = json.loads((root / "damaged" / "manifest.json").read_text())
    manifest["networks"][0].update(sha256=hashlib.sha256(junk).hexdigest(), bytes=len(junk))
    (root / "damaged" / "manifest.json").write_text(json.dumps(manifest))
    run = run_cli("inspect", "damaged", cwd=root)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "not a readable safetensors" in run.stderr
    run = run_cli("export", "kept", "-o", "damaged", "--weights", cwd=root)
    assert run.returncode == 2 and "pass --force" in run.stderr


def test_tampered_kept_weights_stop_export_with_one_line(root: Path, tmp_path: Path) -> None:
    shutil.copytree(root / "studies", tmp_path / "studies")
    stored = next((tmp_path / "studies" / "kept.artifacts").glob("weights-*"))
    stored.write_bytes(stored.read_bytes()[:-1] + b"\x01")
    run = run_cli("export", "kept", "-o", "m", "--weights", cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "SHA-256 does not match" in run.stderr
    assert not (tmp_path / "m" / "manifest.json").exists()


def test_refit_trains_on_train_and_val_for_the_chosen_epochs(root: Path) -> None:
    run = run_cli("export", "kept", "-o", "best.yaml", cwd=root)
    assert run.returncode == 0, run.stderr
    run = run_cli("train", "best.yaml", "-o", "refit", "--refit", "--quiet", cwd=root)
    assert run.returncode == 0, run.stderr
    assert "refit on train+val" in run.stdout
    manifest = json.loads((root / "refit" / "manifest.json").read_text())
    assert manifest["source"]["refit"] is True
    assert all(n["key"] is None for n in manifest["networks"])
    assert all(1 <= e <= 6 for e in manifest["source"]["epochs"])
    assert autotask.load_model(root / "refit").manifest is not None


@pytest.mark.slow
def test_select_then_train_reproduces_the_cached_networks(tmp_path: Path) -> None:
    """Networks trained alone (fusion off) train again bit for bit: ``select -o`` writes
    exactly their jobs, ``train`` reproduces their stored metrics."""
    _search(tmp_path, "alone", "none", env={"AUTOTASK_FUSED": "0"})
    assert not list((tmp_path / "studies" / "alone.artifacts").glob("weights-*"))
    run = run_cli("select", "--study", "alone", "--budget", "3", "-o", "sel.yaml", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    run = run_cli("train", "sel.yaml", "-o", "model", "--quiet", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    manifest = json.loads((tmp_path / "model" / "manifest.json").read_text())
    rows = _rows(tmp_path, "alone")
    keys = [n["key"] for n in manifest["networks"]]
    assert all(key in rows for key in keys)  # the very networks the study cached
    for split in ("val", "test"):
        for task, index in manifest["serving"].items():
            cached = NetworkResult.from_dict(rows[keys[index]].result)
            assert manifest["metrics"][split][task] == getattr(cached, f"{split}_metrics")[task]
    model = autotask.load_model(tmp_path / "model")
    assert _measured(model, "test") == manifest["metrics"]["test"]
    # with --weights the same selection becomes a model folder directly (no weights were
    # kept: its networks train again, and equal the cached ones)
    run = run_cli(
        "select", "--study", "alone", "--budget", "3", "-o", "selected", "--weights", cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    direct = json.loads((tmp_path / "selected" / "manifest.json").read_text())
    assert direct["metrics"] == manifest["metrics"]
    # equal weights and metadata give equal files
    assert [n["sha256"] for n in direct["networks"]] == [n["sha256"] for n in manifest["networks"]]
