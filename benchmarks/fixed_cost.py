"""What every trial pays whatever it trains, with each `--train-runs` choice: a Train run per
run, a Train run per setting (its seeds in turn), and the runs packed into the Train runs that
run at once (the default): the same small study run three ways, side by side in one
invocation.

    python benchmarks/fixed_cost.py   # tiny-qwen2-xs: sft + kd T=1,2, 3 seeds, 100 steps

Fixed cost per trial = (trials phase wall x trials in flight - the runs' train_seconds and
eval_seconds) / runs: Tune and Train start-up, worker processes and their imports, DeepSpeed
set-up, export, checkpoints and tracking. It prints each, its ratio to a Train run per run,
the trials phase walls, and whether the ways gave the same metrics (they should: the same
seeds, the same runs)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

from kdray.cli.args import config_from_flags
from kdray.study.grid import run_study
from kdray.study.runtime import trials_in_flight
from kdray.tracking.runs import PARENT_TAG

WAYS = ("run", "setting", "packed")
"""--train-runs choices, the first the baseline of the ratios."""
TIMINGS = ("seconds", "per_second", "peak_rss", "worker_nodes", "system/")
"""Metrics that measure the machine, not the run (system/: MLflow's CPU, memory, disk and
network samples): left out of the comparison."""


def finished_runs(outcome) -> dict[str, dict[str, float]]:
    """Each finished trial's metrics, by run name."""
    client = MlflowClient(outcome.tracking_uri)
    runs = client.search_runs(
        [outcome.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{outcome.parent_run_id}' "
        "and attributes.status = 'FINISHED'",
    )
    return {run.info.run_name: run.data.metrics for run in runs}


def fixed_cost_per_trial(outcome, runs: dict[str, dict[str, float]], in_flight: int) -> float:
    busy = sum(m.get("train_seconds", 0.0) + m.get("eval_seconds", 0.0) for m in runs.values())
    return (outcome.phase_seconds["trials"] * in_flight - busy) / len(runs)


def same_metrics(a: dict[str, dict], b: dict[str, dict]) -> tuple[int, int]:
    """(metrics equal, metrics compared) over the runs both have, timings left out."""
    equal = compared = 0
    for name in a.keys() & b.keys():
        for key, value in a[name].items():
            if any(part in key for part in TIMINGS):
                continue
            compared += 1
            equal += b[name].get(key) == value
    return equal, compared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", default="tiny-qwen2-xs")
    parser.add_argument("--temperatures", default="1,2")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--cache-dir", help="kdray cache (default: the user's)")
    parser.add_argument("--json", help="also write the measurements here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kdray-fixed-cost-"))
    result = {}
    runs = {}
    for way in WAYS:
        flags = [
            "--students", args.student, "--methods", "kd", "--temperatures", args.temperatures,
            "--seeds", args.seeds, "--steps", str(args.steps), "--train-runs", way,
            "--tracking-uri", f"sqlite:///{work}/mlflow.db", "--experiment", f"fixed-{way}",
            "--results-dir", str(work / way),
        ] + (["--cache-dir", args.cache_dir] if args.cache_dir else [])  # fmt: skip
        config = config_from_flags("temperature", flags)
        outcome = run_study(config)
        runs[way] = finished_runs(outcome)
        in_flight = trials_in_flight(config, config.student_train.num_workers)
        result[way] = {
            "runs": len(runs[way]),
            "trials_seconds": outcome.phase_seconds["trials"],
            "fixed_seconds_per_trial": fixed_cost_per_trial(outcome, runs[way], in_flight),
        }
    print(
        f"\n{args.student}: sft + kd T={args.temperatures}, seeds {args.seeds}, {args.steps} steps"
    )
    print("| --train-runs | fixed cost per run | ratio | trials phase wall | ratio | runs |")
    print("|---|---|---|---|---|---|")
    first = result[WAYS[0]]
    for way in WAYS:
        mine = result[way]
        print(
            f"| {way} | {mine['fixed_seconds_per_trial']:.1f} s "
            f"| {mine['fixed_seconds_per_trial'] / first['fixed_seconds_per_trial']:.2f} "
            f"| {mine['trials_seconds']:.1f} s "
            f"| {mine['trials_seconds'] / first['trials_seconds']:.2f} | {mine['runs']} |"
        )
    for way in WAYS[1:]:
        equal, compared = same_metrics(runs[WAYS[0]], runs[way])
        result[way]["metrics_equal"] = [equal, compared]
        print(f"metrics equal, {way} vs {WAYS[0]}: {equal} of {compared} (timings left out)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
