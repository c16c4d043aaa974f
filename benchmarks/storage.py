"""What kept weights cost on disk.

1. Bytes per network (the safetensors file ``autotask`` writes) for a suite preset's
   backbone: a single-task network, the all-in-one network, and a tree branching at
   half depth, built from the suite's interface (no training, no data for CelebA: its
   interface is that of the ``celeba-tag`` study, 9 binary attributes on 64x64 images).
2. A study's size with ``keep_weights: all`` and ``best``: run the study YAML twice on
   fresh databases, once each way, and print the database and weights folder sizes.

    python benchmarks/storage.py [--study studies/digits.yaml] [--trials N]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import optuna
import torch
import yaml

from autotask.models import build_network
from autotask.search.run import run_study
from autotask.search.study_config import load_study_config
from autotask.spec import BackboneSpec, ModelInterface, TaskTree
from autotask.suites import get_suite
from autotask.trained.weights import network_bytes

CELEBA_TASKS = 9  # the celeba-tag study's attributes


def _sizes(name: str, interface: ModelInterface, backbone: BackboneSpec, stages: int) -> None:
    tasks = tuple(sorted(interface.heads))
    half = max(1, stages // 2)
    trees = {
        "single-task": TaskTree(tasks=(tasks[0],)),
        f"all {len(tasks)} tasks, shared": TaskTree(tasks=tasks),
        f"all {len(tasks)} tasks, branching at stage {half}": TaskTree(
            tasks=tasks,
            branch_at=half,
            children=tuple(TaskTree(tasks=(t,)) for t in tasks),
        ),
    }
    for label, tree in trees.items():
        with torch.random.fork_rng(devices=[]):
            net = build_network(tree, backbone, interface)
        size = len(network_bytes(net, {"tree": tree.describe()}))
        print(f"  {name:8s} {backbone.name}{backbone.params}  {label:38s} {size / 1024:9.1f} KiB")


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="studies/digits.yaml")
    parser.add_argument("--trials", type=int, default=None)
    args = parser.parse_args()
    logging.getLogger("autotask").setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    print("Bytes per network (safetensors, fp32):")
    digits = get_suite("digits", seed=0)
    _sizes(
        "digits",
        ModelInterface(
            input_shape=tuple(digits.input_shape),
            heads={t.name: (t.kind, t.out_features) for t in digits.tasks},
        ),
        BackboneSpec.model_validate(digits.default_backbone),
        4,
    )
    celeba = ModelInterface(
        input_shape=(3, 64, 64), heads={f"attr{i}": ("binary", 1) for i in range(CELEBA_TASKS)}
    )
    _sizes("celeba", celeba, BackboneSpec(name="resnet", params={"width": 64, "blocks": 2}), 4)

    print(f"\nStudy size ({args.study}):")
    raw = yaml.safe_load(Path(args.study).read_text())
    for keep in ("all", "best"):
        with tempfile.TemporaryDirectory() as tmp:
            study = Path(args.study).resolve()
            raw_copy = {**raw, "keep_weights": keep}
            space = raw_copy.get("search_space")
            if isinstance(space, str):
                raw_copy["search_space"] = str((study.parent / space).resolve())
            config_path = Path(tmp) / "study.yaml"
            config_path.write_text(yaml.safe_dump(raw_copy))
            config = load_study_config(config_path)
            url = f"sqlite:///{tmp}/study.db"
            run = run_study(config, storage=url, trials=args.trials)
            networks = len(run.session.context.runner.cache.rows())  # type: ignore[attr-defined]
            weights = Path(tmp) / "study.artifacts"
            files = list(weights.glob("weights-*"))
            print(
                f"  keep_weights: {keep:4s}  {networks} networks trained, database "
                f"{Path(tmp, 'study.db').stat().st_size / 1024:.0f} KiB, {len(files)} weights "
                f"files {sum(f.stat().st_size for f in files) / 1024:.0f} KiB "
                f"(artifact folder {_folder_bytes(weights) / 1024:.0f} KiB)"
            )


if __name__ == "__main__":
    main()
