"""What confirmation over seeds changes in a search's answer, and what it costs.

For each study YAML and study seed: run the study (fresh database) with its confirmation
(``confirm: {top: 3, seeds: 3}`` unless the YAML says otherwise), then train the
single-seed best (the trial with the highest validation Δm at the study seed) and the
confirmed best (the highest mean over the confirmation seeds) again with ``--holdout``
seeds that neither the search nor the confirmation used. Prints per run and in total:

- whether the single-seed best is not the confirmed best;
- the Δm the user is promised (the single-seed best's validation Δm at the study seed; the
  confirmed best's mean over the confirmation seeds) and what re-training delivers (mean
  validation and test Δm over the holdout seeds), for both answers;
- confirmation's cost as a share of the search: epochs (the trials' networks and
  references) and wall time.

    python benchmarks/confirmation.py [--studies studies/digits.yaml studies/synthetic.yaml]
        [--seeds 0 1 2 3 4] [--trials N] [--holdout 100 101 102]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

from autotask.search.backend.objectives import best_trial
from autotask.search.record import TrialRecord
from autotask.search.run import SEARCH, run_study
from autotask.search.scoring import TrainingContext
from autotask.search.study_config import load_study_config

REPO = Path(__file__).resolve().parents[1]


def retrained(context: TrainingContext, record: TrialRecord, seeds: list[int]) -> dict[str, float]:
    """Mean validation and test Δm of ``record``'s architecture over ``seeds``."""
    spec = record.architecture_spec()
    scores = [context.at_seed(seed).score(spec) for seed in seeds]
    return {
        "val": statistics.fmean(s.delta_m_val for s in scores),
        "test": statistics.fmean(s.delta_m_test for s in scores),
    }


def one_run(
    study: Path, seed: int, trials: int | None, holdout: list[int], folder: Path
) -> dict[str, Any]:
    config = load_study_config(study)
    name = f"{config.name}-s{seed}"
    storage = f"sqlite:///{folder / f'{name}.db'}"
    started = time.perf_counter()
    run = run_study(config, plan=SEARCH, storage=storage, study_name=name, seed=seed, trials=trials)
    total = time.perf_counter() - started
    confirmation = run.confirmation
    if confirmation is None:
        raise SystemExit(f"{study}: the study ran no confirmation (confirm: is off?)")
    single = TrialRecord.from_trial(best_trial(run.session.study))
    by_number = {t.number: t for t in run.session.study.get_trials(deepcopy=False)}
    confirmed = TrialRecord.from_trial(by_number[confirmation.best.trial])
    context = run.session.context
    single_delivered = retrained(context, single, holdout)
    confirmed_delivered = (
        single_delivered
        if confirmed.number == single.number
        else retrained(context, confirmed, holdout)
    )
    return {
        "study": config.name,
        "seed": seed,
        "differs": confirmed.number != single.number,
        "single_trial": single.number,
        "confirmed_trial": confirmed.number,
        "single_promised": single.delta_m_val,
        "single_delivered": single_delivered,
        "confirmed_promised": confirmation.best.delta_m_val.mean,
        "confirmed_interval": confirmation.best.delta_m_val.half_width,
        "confirmed_delivered": confirmed_delivered,
        "seed_noise": confirmation.seed_noise,
        "epoch_share": confirmation.share_of_search,
        "time_share": confirmation.seconds / max(total - confirmation.seconds, 1e-9),
    }


def report(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'study':<12} {'seed':>4} {'differs':>7} | {'single: promised':>16} "
        f"{'delivered val/test':>18} | {'confirmed: promised':>22} {'delivered val/test':>18} "
        f"| {'noise':>5} {'epochs':>6} {'time':>5}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        s, c = r["single_delivered"], r["confirmed_delivered"]
        promised = f"{r['confirmed_promised']:+.2f} ± {r['confirmed_interval']:.2f}"
        print(
            f"{r['study']:<12} {r['seed']:>4} {'yes' if r['differs'] else 'no':>7} | "
            f"{r['single_promised']:>+16.2f} {s['val']:>+9.2f}/{s['test']:<+8.2f} | "
            f"{promised:>22} {c['val']:>+9.2f}/{c['test']:<+8.2f} | "
            f"{r['seed_noise']:>5.2f} {100 * r['epoch_share']:>5.0f}% "
            f"{100 * r['time_share']:>4.0f}%"
        )
    for study in sorted({r["study"] for r in rows}):
        part = [r for r in rows if r["study"] == study]

        def mean(key: str, split: str | None = None, runs: list[dict[str, Any]] = part) -> float:
            return statistics.fmean(r[key][split] if split else r[key] for r in runs)

        def spread(key: str, split: str, runs: list[dict[str, Any]] = part) -> float:
            values = [r[key][split] for r in runs]
            return statistics.stdev(values) if len(values) > 1 else 0.0

        print(
            f"\n{study} over {len(part)} study seeds: single-seed best != confirmed best in "
            f"{sum(r['differs'] for r in part)}/{len(part)} runs"
        )
        print(
            f"  single-seed best: promised {mean('single_promised'):+.2f}, delivered val "
            f"{mean('single_delivered', 'val'):+.2f} (sd over study seeds "
            f"{spread('single_delivered', 'val'):.2f}), test "
            f"{mean('single_delivered', 'test'):+.2f}"
        )
        print(
            f"  confirmed best:   promised {mean('confirmed_promised'):+.2f}, delivered val "
            f"{mean('confirmed_delivered', 'val'):+.2f} (sd over study seeds "
            f"{spread('confirmed_delivered', 'val'):.2f}), test "
            f"{mean('confirmed_delivered', 'test'):+.2f}"
        )
        inside = sum(
            abs(r["confirmed_delivered"]["val"] - r["confirmed_promised"])
            <= r["confirmed_interval"]
            for r in part
        )
        print(
            f"  confirmed interval holds the delivered val mean in {inside}/{len(part)} runs; "
            f"seed noise {mean('seed_noise'):.2f}"
        )
        print(
            f"  confirmation cost: {100 * mean('epoch_share'):.0f}% of the search's epochs, "
            f"{100 * mean('time_share'):.0f}% of its wall time"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--studies",
        nargs="+",
        type=Path,
        default=[REPO / "studies" / "digits.yaml", REPO / "studies" / "synthetic.yaml"],
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--trials", type=int, default=None, help="default: the YAML's")
    parser.add_argument("--holdout", nargs="+", type=int, default=[100, 101, 102])
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("autotask").setLevel(logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory(prefix="autotask-confirmation-") as folder:
        for study in args.studies:
            for seed in args.seeds:
                rows.append(one_run(study, seed, args.trials, args.holdout, Path(folder)))
                r = rows[-1]
                print(
                    f"done: {r['study']} seed {seed} (single {r['single_trial']}, confirmed "
                    f"{r['confirmed_trial']})",
                    flush=True,
                )
    print()
    report(rows)


if __name__ == "__main__":
    main()
