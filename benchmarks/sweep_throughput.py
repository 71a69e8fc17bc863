"""Does a sweep pay for the teacher once? The same T x sigma sweep of `kd` on one tiny pair,
run as two studies side by side in one invocation: the teacher online in every trial, then
its cached log-probs (cache build included). Prints the ratios the issue targets:

    python benchmarks/sweep_throughput.py   # tiny-qwen2-l (1.64M) -> tiny-qwen2-s (91k params)

- sweep wall: teacher signals (the cache build) + trials, cached / online (target <= 0.5);
  the teacher's own preparation is shared and cached, so it is done before both and excluded;
  the teacher's earlier caches are removed first, so the build is always counted;
- step time: a cached `kd` training step / an `sft` step of the same student in the same
  study (target <= 1.2), from each trial's train_seconds / steps.

The tiny world's vocabulary is cached whole, so the cached runs are exact (noise included)."""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from kdray.cli.args import config_from_flags
from kdray.study.grid import run_study
from kdray.tracking.runs import PARENT_TAG


def study_args(args, signal: str, work: Path) -> list[str]:
    return [
        "--teacher", args.teacher, "--students", args.student, "--methods", "kd",
        "--temperatures", args.temperatures, "--noise-sigmas", args.noise_sigmas,
        "--steps", str(args.steps), "--teacher-signal", signal,
        "--tracking-uri", f"sqlite:///{work}/mlflow.db", "--experiment", f"sweep-{signal}",
        "--results-dir", str(work / signal),
    ] + (["--cache-dir", args.cache_dir] if args.cache_dir else [])  # fmt: skip


def fixed_seconds(run) -> float:
    """What a trial pays beyond training and evaluation: its MLflow run's wall time less
    train_seconds and eval_seconds (Ray Train workers, DeepSpeed set-up, export, checkpoints,
    tracking)."""
    metrics = run.data.metrics
    wall = (run.info.end_time - run.info.start_time) / 1000
    return wall - metrics.get("train_seconds", 0.0) - metrics.get("eval_seconds", 0.0)


def trial_rows(outcome) -> list[dict]:
    client = MlflowClient(outcome.tracking_uri)
    runs = client.search_runs(
        [outcome.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{outcome.parent_run_id}'"
    )
    rows = []
    for run in runs:
        metrics, params = run.data.metrics, run.data.params
        rows.append(
            {
                "trial": run.info.run_name,
                "method": params.get("method"),
                "signal": params.get("teacher_signal"),
                "step_seconds": 1 / metrics["steps_per_second"],
                "score": metrics.get("score"),
                "fixed_seconds": fixed_seconds(run),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="tiny-qwen2-l")
    parser.add_argument("--student", default="tiny-qwen2-s")
    parser.add_argument("--temperatures", default="1,2,5")
    parser.add_argument("--noise-sigmas", default="0,1")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--cache-dir", help="kdray cache (default: the user's)")
    parser.add_argument("--json", help="also write the measurements here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kdray-sweep-"))
    outcomes, walls = {}, {}
    for signal in ("online", "cache"):
        config = config_from_flags("temperature", study_args(args, signal, work))
        if signal == "cache":  # the build is part of the sweep: drop any earlier one
            for folder in (config.cache_root() / "teacher_cache").glob(f"{args.teacher}-*"):
                shutil.rmtree(folder)
        started = time.time()
        outcomes[signal] = run_study(config)
        walls[signal] = time.time() - started
    rows = {signal: trial_rows(outcome) for signal, outcome in outcomes.items()}

    def sweep_seconds(signal: str) -> float:
        phases = outcomes[signal].phase_seconds
        return phases["teacher_signals"] + phases["trials"]

    def mean_step(signal: str, method: str) -> float:
        return statistics.mean(r["step_seconds"] for r in rows[signal] if r["method"] == method)

    result = {
        "teacher": args.teacher,
        "student": args.student,
        "trials": {signal: len(r) for signal, r in rows.items()},
        "sweep_seconds": {s: sweep_seconds(s) for s in outcomes},
        "study_wall_seconds": walls,
        "phases": {s: o.phase_seconds for s, o in outcomes.items()},
        "kd_step_seconds": {s: mean_step(s, "kd") for s in outcomes},
        "sft_step_seconds": {s: mean_step(s, "sft") for s in outcomes},
        "scores": {s: {r["trial"]: r["score"] for r in rows[s]} for s in outcomes},
    }
    result["sweep_ratio_cache_over_online"] = sweep_seconds("cache") / sweep_seconds("online")
    result["kd_step_over_sft_step_cached"] = mean_step("cache", "kd") / mean_step("cache", "sft")
    result["kd_step_over_sft_step_online"] = mean_step("online", "kd") / mean_step("online", "sft")

    print(
        f"\nsweep: {args.teacher} -> {args.student}, kd, T in {{{args.temperatures}}}, "
        f"sigma in {{{args.noise_sigmas}}}, {args.steps} steps, plus the student's sft trial"
    )
    print("| | online teacher | cached teacher | ratio |")
    print("|---|---|---|---|")
    print(
        f"| sweep wall (cache build + trials) | {sweep_seconds('online'):.0f} s "
        f"| {sweep_seconds('cache'):.0f} s | {result['sweep_ratio_cache_over_online']:.2f} |"
    )
    print(
        f"| teacher signals (cache build) | {result['phases']['online']['teacher_signals']:.0f} s "
        f"| {result['phases']['cache']['teacher_signals']:.0f} s | |"
    )
    print(
        f"| kd step / sft step | {result['kd_step_over_sft_step_online']:.2f} "
        f"| {result['kd_step_over_sft_step_cached']:.2f} | |"
    )
    fixed = {s: statistics.median(r["fixed_seconds"] for r in rows[s]) for s in outcomes}
    result["fixed_seconds_per_trial"] = fixed
    print(
        f"| fixed cost per trial (median: wall - train - eval) | {fixed['online']:.1f} s "
        f"| {fixed['cache']:.1f} s | |"
    )
    online_kd, cached_kd = mean_step("online", "kd"), mean_step("cache", "kd")
    print(
        f"| kd step | {1000 * online_kd:.1f} ms | {1000 * cached_kd:.1f} ms "
        f"| {cached_kd / online_kd:.2f} |"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
