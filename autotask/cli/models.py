"""``autotask train``, and what ``export``/``select`` share to write a model folder:
progress while networks train, ONNX files, and the summary printed at the end."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from autotask.cli.app import app
from autotask.cli.console import err, fmt, out, progress_bar, table

if TYPE_CHECKING:
    import torch

    from autotask.engine.runner import RunnerEvents
    from autotask.trained.bundle import Manifest


class NetworkProgress:
    """A progress bar over the networks a runner trains, started once their number is
    known (:meth:`start`); nothing is shown when none trains."""

    def __init__(self, progress: Any, description: str) -> None:
        self.progress = progress
        self.description = description
        self.bar: Any = None

    def start(self, networks: int) -> None:
        if networks and self.bar is None:
            self.bar = self.progress.add_task(self.description, total=networks, status="")

    def network(self, name: str) -> None:
        if self.bar is not None:
            self.progress.update(self.bar, status=f"training {name}")

    def trained(self, _name: str) -> None:
        if self.bar is not None:
            self.progress.advance(self.bar)

    def finish(self) -> None:
        if self.bar is not None:
            self.progress.update(self.bar, status="done")


@contextmanager
def network_progress(
    events: RunnerEvents, description: str, *, quiet: bool = False
) -> Iterator[NetworkProgress]:
    """A :class:`NetworkProgress` fed by ``events`` for the duration of a block."""
    with progress_bar(quiet) as progress:
        shown = NetworkProgress(progress, description)
        with events.subscribed(on_network=shown.network, on_trained=shown.trained):
            yield shown
        shown.finish()


def write_onnx(directory: Path, sample: torch.Tensor) -> None:
    """Add the ONNX files to a model folder and print how close they are to PyTorch."""
    from autotask.trained.deploy import add_onnx

    checks = add_onnx(directory, sample)
    worst = max((d for c in checks for d in c.max_abs_diff.values()), default=0.0)
    out.print(
        f"ONNX: {len(checks)} file{'s' if len(checks) != 1 else ''}, outputs within "
        f"{worst:.1e} of PyTorch (tolerance {checks[0].atol:.0e})"
        if checks
        else "ONNX: no networks"
    )


def print_model(directory: Path, manifest: Manifest, verb: str = "wrote") -> None:
    """The model folder written: its networks, sizes and the metrics of its weights."""
    from autotask.labels import METRIC_LEGEND, metric_label

    size = sum(n.bytes for n in manifest.networks)
    rows = [
        (
            task,
            metric_label(output.metric, output.higher_is_better),
            fmt(manifest.metrics.get("val", {}).get(task)),
            fmt(manifest.metrics.get("test", {}).get(task)),
            manifest.networks[manifest.serving.get(task, 0)].tree,
        )
        for task, output in manifest.tasks.items()
    ]
    out.print(table("Trained model", ["task", "metric", "val", "test", "network"], rows))
    out.print(METRIC_LEGEND)
    out.print(
        f"{verb} {directory}: {len(manifest.networks)} network"
        f"{'s' if len(manifest.networks) != 1 else ''}, {size / 1024:.1f} KiB of weights; "
        f"load it with autotask.load_model({str(directory)!r})"
    )


@app.command()
def train(
    config: Path = typer.Argument(
        ..., help="Architecture YAML (hand-written, exported, or from `select -o`)."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Model folder to write."),
    seed: int | None = typer.Option(
        None, min=0, help="Seed (default: the file's study seed, else 0)."
    ),
    refit: bool = typer.Option(
        False,
        "--refit",
        help="Then train again on train+val for the epochs chosen on validation; keep those.",
    ),
    onnx: bool = typer.Option(
        False, "--onnx", help="Also write one checked ONNX file per network."
    ),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1, mps (default: best)."),
    precision: str | None = typer.Option(
        None, help="auto, bf16, fp16 or fp32 (overrides the file's runtime.precision)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite the model in a non-empty folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train an architecture file into a loadable model folder.

    Each network trains as a search trains it: the same seed gives the same weights."""
    from autotask.engine.runner import RunnerEvents
    from autotask.search.evaluate import plan_evaluation
    from autotask.search.model_export import (
        file_seed,
        file_serving,
        save_trained,
        train_architecture,
    )
    from autotask.trained.bundle import check_bundle_target

    check_bundle_target(output, force=force)
    plan = plan_evaluation(config, None if precision is None else {"precision": precision})
    serving = file_serving(config, plan.spec)
    chosen_seed = file_seed(config) if seed is None else seed
    events = RunnerEvents()
    with network_progress(events, f"training (seed {chosen_seed})", quiet=quiet) as shown:
        shown.start(len(plan.spec.networks))
        trained = train_architecture(
            plan,
            chosen_seed,
            device=device,
            refit=refit,
            events=events,
            on_runtime=lambda rt: err.print(f"device: {rt.describe()}"),
        )
    suite_name = plan.spec.suite.name if plan.spec.suite is not None else plan.suite.name
    manifest = save_trained(
        output,
        trained.spec,
        trained.networks,
        plan.suite,
        suite_name=suite_name,
        numerics=trained.networks[0].job.numerics if trained.networks else {},
        source={
            "trained_from": str(config),
            "seed": chosen_seed,
            "refit": refit,
            "epochs": trained.epochs,
        },
        serving=serving,
        record_keys=not refit,
        force=force,
    )
    if onnx:
        write_onnx(output, plan.suite.splits["test"].x[:8])
    print_model(output, manifest)
    if refit:
        out.print(
            "refit on train+val: the val metrics above are measured on rows the model "
            "trained on; the test metrics are not"
        )


@app.command()
def inspect(
    model: Path = typer.Argument(..., help="Model folder (export --weights, train, select)."),
) -> None:
    """Check a model folder's weights and show what the model holds."""
    from autotask.trained.model import load_model

    loaded = load_model(model)
    assert loaded.manifest is not None
    manifest = loaded.manifest
    source = ", ".join(f"{k} {v}" for k, v in manifest.source.items())
    out.print(f"{model}: suite {manifest.suite} (data key {manifest.suite_key}); {source}")
    rows = [
        (
            n.file,
            n.tree,
            n.seed,
            f"{n.bytes / 1024:.1f} KiB",
            n.onnx or "",
        )
        for n in manifest.networks
    ]
    out.print(
        table("Networks (weights checked)", ["file", "network", "seed", "size", "onnx"], rows)
    )
    print_model(model, manifest, verb="read")
