"""``autotask search``, ``status`` and ``export``: running and reading studies."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from autotask.cli.app import app
from autotask.cli.console import err, out, progress_bar, table
from autotask.cli.stages import ProgressEvents
from autotask.errors import ConfigError, StorageError

if TYPE_CHECKING:  # imported where used: ``status`` and ``--help`` start without torch
    import optuna
    from rich.progress import Progress

    from autotask.search.backend.launcher import Placement
    from autotask.search.confirmed import Confirmation
    from autotask.search.scoring import ArchitectureScore
    from autotask.search.study import SearchSession
    from autotask.select.matrix import AffinityMatrix

logger = logging.getLogger("autotask")

#: More local workers than this on one SQLite file get a warning.
SQLITE_MAX_WORKERS = 4
#: The device every process of a search uses unless told otherwise (see ``pick_device``).
DEVICE_ENV = "AUTOTASK_DEVICE"
STORAGE_HELP = "SQLAlchemy URL of the study database (default: sqlite:///studies/<name>.db)."


def print_runtime(session: SearchSession) -> None:
    """The device and resolved runtime (precision, TF32, ...), once per process."""
    err.print(f"device: {session.context.runner.runtime.describe()}")


def _best_line(study: optuna.Study) -> str:
    from autotask.search.backend.objectives import best_trial
    from autotask.search.record import TrialRecord

    try:
        trial = best_trial(study)
    except StorageError:
        return "no completed trial yet"
    record = TrialRecord.from_trial(trial)
    return f"best Δm {_num(record.delta_m_val):+.2f}% (trial {trial.number})"


@app.command()
def search(
    study_file: Path = typer.Argument(..., help="Study YAML (see studies/)."),
    storage: str | None = typer.Option(None, help=STORAGE_HELP),
    study_name: str | None = typer.Option(None, help="Study name (default: the YAML's name: key)."),
    trials: int | None = typer.Option(None, min=1, help="Finished trials the study should have."),
    timeout: float | None = typer.Option(None, min=1, help="Stop starting trials after SEC."),
    seed: int | None = typer.Option(None, min=0, help="Override the study's seed."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1, mps (default: best)."),
    workers: int = typer.Option(
        1, min=1, help="Local worker processes sharing the study (spread over GPUs)."
    ),
    gpus: str | None = typer.Option(
        None, help="One worker per entry (visible GPU indices), e.g. 0,1 or 0,0."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    json_out: bool = typer.Option(
        False, "--json", help="Print the study's summary as JSON (no progress bar)."
    ),
) -> None:
    """Search task groupings, branch depths and balancers.

    Resumes the study of the same name if the database has it."""
    from autotask.search.backend.launcher import parse_gpus
    from autotask.search.backend.storage import resolve_storage_url
    from autotask.search.run import SEARCH, PoolSettings, run_study
    from autotask.search.study_config import load_study_config
    from autotask.store.db import is_sqlite

    config = load_study_config(study_file)
    gpu_list = parse_gpus(gpus)
    if gpu_list and device is not None:
        raise ConfigError(
            "--gpus and --device exclude each other: with --gpus the search "
            "itself trains on the first GPU listed"
        )
    placement = place_search(gpu_list, workers, device)
    name = study_name or config.name
    url = resolve_storage_url(storage, config.storage, name)
    pool_size = len(placement.gpus) or workers
    if pool_size > SQLITE_MAX_WORKERS and is_sqlite(url):
        logger.warning(
            "%d workers share one SQLite file: expect lock waits; use PostgreSQL for many "
            "workers (--storage postgresql+psycopg://...)",
            pool_size,
        )
    pool = None
    if pool_size > 1 or placement.gpus:
        pool = PoolSettings(study_file, workers, placement.gpus, placement.worker_device)
    if placement.note:
        err.print(placement.note)
    with ExitStack() as shown:
        run = run_study(
            config,
            CliEvents(progress_bar(quiet or json_out), shown, best_line=True),
            plan=SEARCH,
            storage=url,
            study_name=name,
            seed=seed,
            device=placement.parent_device,
            trials=trials,
            timeout=timeout,
            pool=pool,
        )
    study = run.session.study
    if json_out:
        from autotask.report.summary import study_summary

        summary = study_summary(study, config, run.session.db)
        out.print_json(json.dumps(summary, default=str))
        return
    _print_best(study, run.all_in_one, run.session.storage_url)


def place_search(gpus: list[str], workers: int, device: str | None) -> Placement:
    """Where ``search`` and its workers train (see
    :func:`~autotask.search.backend.launcher.plan_placement`), from the GPUs this process
    sees; ``$AUTOTASK_DEVICE`` counts as ``--device``."""
    import torch

    from autotask.search.backend.launcher import plan_placement

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    wanted = device or os.environ.get(DEVICE_ENV) or None
    return plan_placement(gpus, workers, wanted, os.environ, count)


class CliEvents(ProgressEvents):
    """How ``search`` and ``worker`` show a running study: the device, then progress bars
    (shown from the study's opening until ``shown`` closes; the trials bar names the best
    trial when ``best_line``), worker failures, and the study's figures published to its
    dashboard page."""

    def __init__(self, progress: Progress, shown: ExitStack, *, best_line: bool) -> None:
        super().__init__(progress, self._status)
        self.shown, self.best_line = shown, best_line
        self.session: SearchSession | None = None

    def _status(self) -> str:
        if not self.best_line or self.session is None:
            return ""
        return _best_line(self.session.study)

    def opened(self, session: SearchSession) -> None:
        self.session = session
        print_runtime(session)
        self.shown.enter_context(self.progress)

    def worker_failed(self, line: str) -> None:
        err.print(f"worker failed: {line}", style="red")

    def stopping_workers(self) -> None:
        err.print("interrupted: stopping the workers (running trials end FAIL: interrupted)")

    def publish_affinity(
        self,
        session: SearchSession,
        matrix: AffinityMatrix,
        groups: Sequence[Sequence[str]] | None,
    ) -> None:
        from autotask.report.dashboard import publish_affinity

        publish_affinity(session, matrix, groups)

    def publish_results(self, session: SearchSession) -> None:
        from autotask.report.dashboard import publish_results

        publish_results(session)


def _print_best(study: optuna.Study, all_in_one: ArchitectureScore, storage_url: str) -> None:
    from autotask.search.backend.objectives import is_multi_objective
    from autotask.search.backend.stored import CONFIG_ATTR, TAG_ATTR, study_record
    from autotask.search.confirmed import chosen_trial, load_confirmation
    from autotask.search.pareto import pareto_trials
    from autotask.search.record import TrialRecord
    from autotask.search.study_config import stored_reference

    best = chosen_trial(study)
    record = TrialRecord.from_trial(best)
    spec = record.architecture_spec()
    confirmation = load_confirmation(study)
    out.print(f"Study {study.study_name}  ({storage_url})", style="bold")
    mode = stored_reference(study_record(study, CONFIG_ATTR, {}))
    out.print(f"Δm: {reference_text(mode)}")
    if confirmation is not None and confirmation.best.trial == best.number:
        print_confirmation(confirmation)
        delta_m_val = confirmation.best.delta_m_val.mean
    else:
        out.print(f"Best architecture (trial {best.number}): {spec.describe()}", style="bold")
        delta_m_val = _num(record.delta_m_val)
        out.print(
            f"  Δm val {delta_m_val:+.2f}%  test {_num(record.delta_m_test):+.2f}%"
            f"  cost {_num(record.cost):.2f} single-task networks  (one seed, not confirmed)",
        )
    if record.tuning_gain_val is not None and mode == "paired":
        out.print(
            f"  its training settings alone: Δm val {record.tuning_gain_val:+.2f}% "
            "(its single-task networks against those at the default settings; not part of "
            "the Δm above)"
        )
    out.print(
        f"  all-in-one network: Δm val {all_in_one.delta_m_val:+.2f}%  "
        f"test {all_in_one.delta_m_test:+.2f}%"
    )
    verdict = "beats" if delta_m_val > all_in_one.delta_m_val else "does NOT beat"
    out.print(f"  the best architecture {verdict} the all-in-one network on validation Δm")
    tag = study_record(study, TAG_ATTR)
    if tag:
        out.print(
            f"  TAG-selected grouping ({tag['estimator']}): {tag['architecture']}  Δm val "
            f"{tag['delta_m_val']:+.2f}%  test {tag['delta_m_test']:+.2f}%  cost {tag['cost']:.2f}"
        )
    if is_multi_objective(study):
        front = [TrialRecord.from_trial(t) for t in pareto_trials(study)]
        out.print(
            f"  Pareto front (Δm vs cost): {len(front)} architectures, cost "
            f"{_num(front[0].cost):.2f} to {_num(front[-1].cost):.2f}; "
            f"autotask export {study.study_name} --pareto writes them all"
        )
    command = export_command(study.study_name, storage_url)
    out.print(f"Export it with: {command}")
    out.print(
        "  or the trained model (autotask.load_model): "
        + command.replace(" -o best.yaml", " -o model --weights", 1)
    )


def reference_text(mode: str) -> str:
    """What Δm is measured against, in one line."""
    from autotask.labels import reference_label

    why = (
        "what sharing, branching and balancing bring"
        if mode == "paired"
        else "this study's stored mode: fixed"
    )
    return f"mean relative change against {reference_label(mode)} ({why})"


def print_confirmation(confirmation: Confirmation) -> None:
    """The confirmed best, the ranking over the confirmation seeds, the seed noise, the
    verdict on the runner-up and the compute confirmation took."""
    best = confirmation.best
    seeds = ", ".join(str(s) for s in confirmation.seeds)
    out.print(
        f"Best architecture (trial {best.trial}, confirmed over seeds {seeds}): "
        f"{best.architecture}",
        style="bold",
    )
    out.print(
        f"  Δm val {best.delta_m_val.describe()}  test {best.delta_m_test.describe()}  "
        f"(mean ± 95 % interval over seeds {seeds})  cost {best.cost:.2f} single-task networks"
    )
    out.print(
        "  per seed: val "
        + ", ".join(f"{v:+.2f}" for v in best.delta_m_val.values)
        + f";  the search saw {best.search_delta_m_val:+.2f}% at its own seed"
    )
    rows = [
        (
            a.trial,
            a.delta_m_val.describe(),
            a.delta_m_test.describe(),
            f"{a.search_delta_m_val:+.2f}%",
            a.architecture,
        )
        for a in confirmation.architectures
    ]
    out.print(
        table(
            f"Confirmed over seeds {seeds}, best first (Δm: mean ± 95 % interval)",
            ["trial", "Δm val", "Δm test", "one seed", "arch"],
            rows,
        )
    )
    for trial, reason in confirmation.failed.items():
        err.print(f"trial {trial} left the confirmation: {reason}")
    out.print(
        f"  seed noise (std of Δm val over seeds): {confirmation.seed_noise:.2f};  "
        f"{confirmation.verdict()}"
    )
    share = confirmation.share_of_search
    share_text = "" if share is None else f", {100 * share:.0f}% of the search's epochs"
    out.print(
        f"  confirmation trained {confirmation.networks_trained} networks "
        f"({confirmation.epochs_trained} epochs{share_text}, {confirmation.seconds:.0f} s)"
    )


def _num(value: float | None) -> float:
    """A stored number, NaN where the trial has none (printed ``nan``)."""
    return float("nan") if value is None else value


def export_command(study_name: str, storage_url: str) -> str:
    """A pasteable ``autotask export`` command line for the study: no ``--storage`` for the
    default database, and never a password (PostgreSQL reads it from ``PGPASSWORD`` or
    ``~/.pgpass``)."""
    from sqlalchemy.engine import make_url

    from autotask.store.db import STUDY_NAME_PATTERN, default_storage_url

    command = f"autotask export {shlex.quote(study_name)} -o best.yaml"
    named_file = re.fullmatch(STUDY_NAME_PATTERN, study_name) is not None
    if named_file and storage_url == default_storage_url(study_name):
        return command
    url = make_url(storage_url)
    note = ""
    if url.password is not None:
        url = url._replace(password=None)  # URL.set ignores None
        note = "  (password from PGPASSWORD or ~/.pgpass)"
    plain = url.render_as_string(hide_password=False)
    return f"{command} --storage {shlex.quote(plain)}{note}"


def _storage_for(study_name: str, storage: str | None) -> str:
    from autotask.search.backend.storage import resolve_storage_url

    return resolve_storage_url(storage, None, study_name)


@app.command()
def status(
    study_name: str = typer.Argument(..., help="Name of the study."),
    storage: str | None = typer.Option(None, help=STORAGE_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Show a study's trials by state and its best architecture.

    The best architecture's per-task metrics are shown beside the single-task baselines;
    with a stored affinity matrix, how its estimate ranked the trained groups."""
    from autotask.contributions import points
    from autotask.labels import CONTRIBUTION_LEGEND, METRIC_LEGEND, metric_label
    from autotask.report.summary import find_best, study_summary
    from autotask.search.backend.stored import BASELINES_ATTR, load_study, study_record
    from autotask.search.confirmed import load_confirmation, shown_readings

    study, config, db = load_study(study_name, _storage_for(study_name, storage))
    trials = study.get_trials(deepcopy=False)
    summary = study_summary(study, config, db)
    states, states_by_number = Counter(summary["trials"]), {t.number: t.state.name for t in trials}
    trained, reused = summary["networks_trained"], summary["networks_reused"]
    baselines: dict[str, Any] = study_record(study, BASELINES_ATTR, {})
    all_in_one: dict[str, Any] = summary["all_in_one"]
    record = find_best(study)
    if json_out:
        out.print_json(json.dumps(summary, default=str))
        return
    out.print(
        table(
            f"Study {study_name} ({config.suite.name})", ["state", "trials"], sorted(states.items())
        )
    )
    out.print(
        f"networks trained: {trained}, reused from the cache: {reused}; "
        f"epochs trained in trials: {summary['epochs_trained']}"
        + (
            f"; single-task references trained in trials: {summary['references_trained']} "
            f"({summary['reference_epochs']} epochs)"
            if summary["references_trained"]
            else ""
        )
    )
    proposers = summary["proposed_by"]
    if set(proposers) != {"sampler"} and proposers:
        out.print(
            "trials proposed by: "
            + ", ".join(f"{name} {count}" for name, count in sorted(proposers.items()))
        )
    for number, reason in summary["failed"].items():
        err.print(f"trial {number} failed: {reason}")
    for failed, retry in summary["retried"].items():
        out.print(f"trial {failed} was retried as trial {retry} ({states_by_number[retry]})")
    if record is None:
        out.print("no completed trial yet")
        return
    out.print(
        f"Best trial {record.number} ({record.proposed_by}): {record.architecture}",
        style="bold",
    )
    confirmation = load_confirmation(study)
    confirmed = None if confirmation is None else confirmation.architecture(record.number)
    meta = {t: (b.get("metric"), b.get("higher_is_better")) for t, b in baselines.items()}
    tasks = sorted(baselines)
    title = "Per task (best, one seed)"
    if confirmation is not None and confirmed is not None:
        seeds = ", ".join(str(s) for s in confirmation.seeds)
        title = f"Per task (confirmed best, means over seeds {seeds})"
    readings = {
        split: shown_readings(tasks, record, confirmed, baselines, split, meta)
        for split in ("val", "test")
    }
    rows = [
        (
            val.task,
            metric_label(val.metric, val.higher_is_better),
            val.value,
            val.reference,
            points(val.contribution),
            test.value,
            test.reference,
            points(test.contribution),
        )
        for val, test in zip(readings["val"], readings["test"], strict=True)
    ]
    out.print(
        table(
            title,
            [
                "task",
                "metric",
                "val",
                "ref",
                "pts",
                "test",
                "ref",
                "pts",
            ],
            rows,
        )
    )
    out.print(
        f"ref: the single-task reference on the same split; {reference_text(summary['reference'])}"
    )
    out.print(METRIC_LEGEND + CONTRIBUTION_LEGEND)
    secondary = record.secondary or {}
    extra = [
        (task, metric, value, secondary.get("test", {}).get(task, {}).get(metric))
        for task, metrics in sorted(secondary.get("val", {}).items())
        for metric, value in metrics.items()
    ]
    if extra:
        out.print(table("Secondary metrics (best)", ["task", "metric", "val", "test"], extra))
    out.print(
        f"Δm val {_num(record.delta_m_val):+.2f}%  test {_num(record.delta_m_test):+.2f}%"
        f" at the study seed (one seed)  cost {_num(record.cost):.2f};  all-in-one Δm val "
        f"{all_in_one.get('delta_m_val', float('nan')):+.2f}%"
    )
    if record.tuning_gain_val is not None and summary["reference"] == "paired":
        out.print(
            f"its training settings alone: Δm val {record.tuning_gain_val:+.2f}% (single-task "
            "networks at its settings against those at the defaults; not in its Δm)"
        )
    if confirmation is not None:
        print_confirmation(confirmation)
    elif config.confirm.enabled:
        out.print("not confirmed over seeds yet (confirmation runs once the budget is spent)")
    tag = summary["tag_grouping"]
    if tag:
        out.print(
            f"TAG-selected grouping ({tag['estimator']}): {tag['architecture']}  "
            f"Δm val {tag['delta_m_val']:+.2f}%  cost {tag['cost']:.2f}"
        )
    print_affinity_audit(summary.get("affinity_audit"))
    if "pareto" in summary:
        front = [
            (p["trial"], p["cost"], p["delta_m_val"], p["architecture"]) for p in summary["pareto"]
        ]
        out.print(table("Pareto front (Δm vs cost)", ["trial", "cost", "Δm val", "arch"], front))


def print_affinity_audit(audit: dict[str, Any] | None) -> None:
    """The affinity audit's line (from :func:`~autotask.report.summary.study_summary`),
    with its warning, once it covers enough measured groups."""
    if not audit:
        return
    from autotask.search.affinity_audit import MIN_GROUPS  # loaded already: a matrix is stored

    if audit["groups"] < MIN_GROUPS:
        return
    out.print(audit["verdict"])
    if audit["warning"]:
        err.print(f"warning: {audit['warning']}", style="yellow")


@app.command()
def export(
    study_name: str = typer.Argument(..., help="Name of the study."),
    output: Path | None = typer.Option(
        None,
        "-o",
        "--output",
        help="File to write (default best.yaml; with --pareto a folder; with --weights or "
        "--onnx the model folder, default model).",
    ),
    storage: str | None = typer.Option(None, help=STORAGE_HELP),
    budget: float | None = typer.Option(
        None, min=0, help="Best architecture costing at most B single-task networks."
    ),
    pareto: bool = typer.Option(
        False, "--pareto", help="Every Pareto-optimal architecture (Δm vs cost), one file each."
    ),
    weights: bool = typer.Option(
        False,
        "--weights",
        help="Write a model folder: the architecture, its trained weights (safetensors) and "
        "a manifest, for autotask.load_model.",
    ),
    onnx: bool = typer.Option(
        False, "--onnx", help="With the weights, one ONNX file per network, checked."
    ),
    device: str | None = typer.Option(
        None, help="Where networks whose weights were not kept train again (default: best)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Write the best architecture as YAML, or (--weights) the model.

    The file holds the architecture with its suite and metrics. With --weights the
    networks' kept weights are written (networks whose weights were not kept train
    again, seeded as in the search)."""
    from autotask.outputs import check_outputs
    from autotask.search.backend.stored import load_study
    from autotask.search.export import export_best
    from autotask.search.pareto import best_within_budget, pareto_trials
    from autotask.search.record import TrialRecord

    if pareto and budget is not None:
        raise ConfigError("--pareto and --budget exclude each other")
    if pareto and (weights or onnx):
        raise ConfigError("--pareto writes architecture files only (no --weights or --onnx)")
    url = _storage_for(study_name, storage)
    study, config, db = load_study(study_name, url)
    if pareto:
        folder = output or Path("pareto")
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"{folder} is a file; --pareto writes a folder of files")
        front = pareto_trials(study)
        check_outputs(
            [folder / f"trial-{t.number}.yaml" for t in front], force=force, storage_url=url
        )
        rows = []
        for trial in front:
            path = folder / f"trial-{trial.number}.yaml"
            spec = export_best(study, config, path, trial)
            record = TrialRecord.from_trial(trial)
            rows.append((str(path), record.cost, record.delta_m_val, spec.describe()))
        out.print(table("Pareto-optimal architectures", ["file", "cost", "Δm val", "arch"], rows))
        return
    chosen = None if budget is None else best_within_budget(study, budget)
    if weights or onnx:
        _export_model(
            study, config, db, output or Path("model"), chosen, device, onnx, force, quiet
        )
        return
    path = output or Path("best.yaml")
    check_outputs([path], force=force, storage_url=url)
    spec = export_best(study, config, path, chosen)
    out.print(f"wrote {path}: {spec.describe()}")


def _export_model(
    study: Any,
    config: Any,
    db: Any,
    folder: Path,
    trial: Any,
    device: str | None,
    onnx: bool,
    force: bool,
    quiet: bool,
) -> None:
    """``export --weights``: the model folder of ``trial`` (default: the chosen one)."""
    from autotask.cli.models import network_progress, print_model, write_onnx
    from autotask.engine.runner import RunnerEvents
    from autotask.search.model_export import export_trial_model, study_context
    from autotask.search.weights import weight_store_for
    from autotask.trained.bundle import check_bundle_target

    check_bundle_target(folder, force=force)
    events = RunnerEvents()
    context = study_context(study, config, db, device=device, events=events)
    with network_progress(
        events, "training networks whose weights were not kept", quiet=quiet
    ) as shown:
        manifest = export_trial_model(
            study,
            config,
            context,
            weight_store_for(db.url),
            folder,
            trial=trial,
            force=force,
            on_start=shown.start,
        )
    if onnx:
        write_onnx(folder, context.suite.splits["test"].x[:8])
    print_model(folder, manifest)
