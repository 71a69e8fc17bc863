"""Issue 19's findings table: the five findings of "On the Generalization vs Fidelity Paradox in
Knowledge Distillation" (ACL Findings 2025) as measured on the tiny world, each with its test,
n, statistic, p-value and, for a null, its minimal detectable effect (analysis/findings.py).

Starts from an MLflow store and kdray cache in which the default temperature study has run
(3 paired seeds: SFT and KD at T 1, 2 and 5 for tiny-qwen2-xs and -s, teacher tiny-qwen2-m) and
runs, into the same store and cache (world, bases and teacher reused), only what is missing:

- `noise.py --methods kd --noise-sigmas 5` (finding 4: KD T=1 sigma=5 against the temperature
  study's KD T=1);
- `teacher_domain.py --teacher-kind task-unaware` (finding 5: KD T=1 from the untuned base);
- with --with-size-study, `student_size.py --teacher tiny-qwen2-l` (finding 2 over 3 student
  sizes, xs, s and m, instead of the default study's 2);
- the temperature study's own KD cells where the store lacks them (a smoke study has T=2 only).

Each runs at the baseline's seeds and students into an experiment `<baseline>-findings-<name>`
and is skipped when that experiment already holds a completed study run (an interrupted one
is resumed, or run afresh if it never reached its trials). Every study script also trains SFT
per student and seed: those runs are compared with the baseline's (they should match to 1e-9
on one machine). Prints one table (accuracy and held-out NLL) and writes it to --out (.md and
.csv).

    python benchmarks/findings.py --store sqlite:///mlflow.db     # 2 studies of 12 runs each
    python benchmarks/findings.py --store sqlite:////tmp/stab/unperturbed/mlflow.db \
        --cache /tmp/stab/unperturbed/cache --with-size-study    # + teacher tiny-qwen2-l, its
                                                                 # base, 3 bases of -m, 18 runs
    python studies/temperature.py --smoke --tracking-uri sqlite:////tmp/s/mlflow.db \
        --cache-dir /tmp/s/cache && python benchmarks/findings.py --smoke \
        --store sqlite:////tmp/s/mlflow.db --cache /tmp/s/cache           # the path, n = 1

A study joins a Ray that already runs on this machine (`ray.init(address="auto")`), another
benchmark's included: set RAY_ADDRESS=local to give it a Ray of its own."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from analysis.findings import (
    FINDINGS,
    TOLERANCE,
    duplicate_runs,
    findings_markdown,
    findings_table,
    runs_of,
)
from analysis.loader import load_mlflow_results
from kdray.tracking.runs import role_is

ROOT = Path(__file__).resolve().parents[1]
TEMPERATURES = (1.0, 2.0, 5.0)
"""The KD temperatures findings 1-5 compare (with sigma 0 and the task-aware teacher)."""
TEMPERATURE_STUDY = ("temperature", "temperature-smoke")
"""The `kdray.study` tag of the baseline's study run (--smoke adds the suffix)."""
SIZE_TEACHER = "tiny-qwen2-l"


@dataclass(frozen=True)
class Study:
    """A study script to run, with the flags that keep it to the cells the findings need."""

    name: str
    script: str
    flags: tuple[str, ...]
    why: str


def say(text: str) -> None:
    print(f"[findings] {text}", flush=True)


def study_runs(client: MlflowClient, experiment: str) -> list:
    """The experiment's study (parent) runs, newest first; none if it does not exist."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs(
        [found.experiment_id], role_is("study"), order_by=["attributes.start_time DESC"]
    )


def completed(run) -> bool:
    """A study run that reached its end (kdray logs `trials` then), failed trials or not."""
    return "trials" in run.data.metrics


def baseline_experiment(client: MlflowClient, requested: str | None) -> str:
    """The experiment of the temperature study: `requested`, else the one whose latest
    completed temperature study has the most trials (printed with the others)."""
    if requested:
        return requested
    candidates = {}
    for experiment in client.search_experiments():
        if "-findings-" in experiment.name:
            continue
        runs = [r for r in study_runs(client, experiment.name) if completed(r)]
        runs = [r for r in runs if r.data.tags.get("kdray.study", "") in TEMPERATURE_STUDY]
        if runs:
            candidates[experiment.name] = int(runs[0].data.metrics["trials"])
    if not candidates:
        sys.exit(
            "findings.py: error: the store holds no completed temperature study: run "
            "`python studies/temperature.py` first, or pass --baseline-experiment"
        )
    chosen = max(candidates, key=candidates.get)
    listed = ", ".join(f"{name} ({trials} trials)" for name, trials in candidates.items())
    say(f"baseline: experiment {chosen!r} (temperature studies here: {listed})")
    return chosen


def load_experiment(uri: str, client: MlflowClient, experiment: str) -> pd.DataFrame:
    """Per-run rows of the experiment's latest completed study run (else its latest)."""
    runs = study_runs(client, experiment)
    if not runs:
        return pd.DataFrame()
    parent = next((r for r in runs if completed(r)), runs[0])
    runs = runs_of(load_mlflow_results(uri, parent.info.run_id), experiment)
    state = "" if completed(parent) else ", NOT completed"
    say(f"loaded {experiment}: {len(runs)} student runs (study run {parent.info.run_id}{state})")
    return runs


def missing_temperatures(baseline: pd.DataFrame, teacher: str) -> list[float]:
    """The KD temperatures (sigma 0, task-aware, from `teacher`) some student lacks."""
    kd = baseline[(baseline["method"] == "kd") & (baseline["noise_sigma"] == 0)]
    kd = kd[(kd["teacher_kind"] == "task-aware") & (kd["teacher"] == teacher)]
    have = kd.groupby("student")["temperature"].agg(set)
    students = baseline["student"].unique()
    return [t for t in TEMPERATURES if any(t not in have.get(s, set()) for s in students)]


def plan(baseline: pd.DataFrame, teacher: str, args: argparse.Namespace) -> list[Study]:
    """The studies the findings need beyond the baseline."""
    studies = []
    if missing := missing_temperatures(baseline, teacher):
        listed = ",".join(f"{t:g}" for t in missing)
        flags = ("--methods", "kd", "--temperatures", listed)
        studies.append(Study("temperature", "temperature.py", flags, f"KD at T {listed}"))
    noise = ("--methods", "kd", "--noise-sigmas", "5")
    studies.append(Study("noise", "noise.py", noise, "finding 4: KD T=1 σ=5"))
    unaware = ("--teacher-kind", "task-unaware")
    studies.append(Study("teacher-domain", "teacher_domain.py", unaware,
                         "finding 5: KD T=1 from the task-unaware teacher"))  # fmt: skip
    if args.with_size_study:
        size = ("--teacher", args.size_teacher)
        why = f"finding 2: every student smaller than {args.size_teacher}"
        studies.append(Study("student-size", "student_size.py", size, why))
    return studies


def study_flags(study: Study, experiment: str, common: list[str], args) -> list[str]:
    """The study's command line: its own flags, the shared ones, its experiment and folder."""
    flags = [*study.flags, *common, "--experiment", experiment]
    flags += ["--results-dir", str(args.out.parent / "studies" / study.name)]
    if study.name != "student-size":  # its design picks the students below its teacher
        flags += ["--students", ",".join(args.students), "--teacher", args.teacher]
    return flags


def run_study(study: Study, experiment: str, flags: list[str], client: MlflowClient) -> bool:
    """Run the study unless its experiment holds a completed study run (resume an
    interrupted one); True when it ended without failures."""
    runs = study_runs(client, experiment)
    if done := next((r for r in runs if completed(r)), None):
        failed = int(done.data.metrics.get("failed_trials", 0))
        say(f"{study.name}: skipped, experiment {experiment!r} holds completed study run "
            f"{done.info.run_id} ({failed} failed trials)")  # fmt: skip
        return failed == 0
    resume = ["--resume"] if runs else []
    say(f"{study.name} ({study.why}): running into experiment {experiment!r}")
    code = _run_script(study.script, [*flags, *resume])
    if code != 0 and resume:  # interrupted before its trials started: start it afresh
        say(f"{study.name}: --resume failed (exit {code}); running it afresh")
        code = _run_script(study.script, flags)
    return code == 0


def _run_script(script: str, flags: list[str]) -> int:
    command = [sys.executable, str(ROOT / "studies" / script), *flags]
    print("$", " ".join(command[1:]), flush=True)
    started = time.perf_counter()
    code = subprocess.run(command, check=False).returncode
    say(f"{script}: exit {code} after {time.perf_counter() - started:.0f} s")
    return code


def determinism(runs: pd.DataFrame) -> list[str]:
    """Lines on the runs two studies both trained: do accuracy and NLL match to TOLERANCE?"""
    shared = duplicate_runs(runs)
    if shared.empty:
        return ["No run was trained by more than one study: no determinism cross-check."]
    matching, copies = int(shared["match"].sum()), shared["copies"].sum()
    methods = ", ".join(sorted(set(shared["method"])))
    tolerance = f"{TOLERANCE:.0e}".replace("e-0", "e-")
    lines = [f"Determinism: {len(shared)} runs ({methods}) trained by more than one study, "
             f"{copies} copies in all: {matching} of {len(shared)} match to "
             f"{tolerance} (accuracy and NLL)."]  # fmt: skip
    for _, row in shared[~shared["match"]].iterrows():
        lines.append(f"- MISMATCH {row['student']} {row['method']} seed {row['seed']} "
                     f"({row['experiments']}): |Δ accuracy| {row['max_diff_accuracy']:.3g}, "
                     f"|Δ NLL| {row['max_diff_nll']:.3g}")  # fmt: skip
    return lines


def write(table: pd.DataFrame, text: str, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    table.to_csv(out.with_suffix(".csv"), index=False)
    say(f"wrote {out} and {out.with_suffix('.csv')}")


def document(table: pd.DataFrame, runs: pd.DataFrame, args, experiments: list[str]) -> str:
    """The markdown: what was tested on which runs, the determinism check and the table."""
    seeds = ", ".join(sorted(runs["seed"].unique()))
    claims = "; ".join(f"{f.number}. {f.claim}" for f in FINDINGS)
    return "\n".join([
        "## The study's findings on the tiny world", "",
        f"Findings: {claims}. Runs: {args.store}, experiments {', '.join(experiments)}; "
        f"seeds {seeds}; teacher {args.teacher}. Δ = treatment − reference per student and "
        "seed (same base, same data order), mean ± 95% t-interval; paired t and Spearman "
        "tests two-sided, raw p (no multiplicity correction); supported / contradicted: "
        "p < 0.05 with / against the claimed sign; MDE: the smallest |Δ| (|ρ| for Spearman) "
        "the test finds with power 0.8 at α 0.05 at its n and spread. NLL: held-out response "
        "NLL per token (lower is better, so the claimed signs flip).", "",
        *determinism(runs), "",
        findings_markdown(table),
    ])  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="sqlite:///mlflow.db", help="MLflow tracking URI")
    parser.add_argument("--cache", help="the kdray cache the temperature study used")
    parser.add_argument("--baseline-experiment", help="its experiment (default: found)")
    parser.add_argument(
        "--with-size-study",
        action="store_true",
        help=f"finding 2 from student_size.py --teacher {SIZE_TEACHER} (3 sizes, not 2)",
    )
    parser.add_argument("--size-teacher", default=SIZE_TEACHER, help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help="pass --smoke to every study")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "findings" / "findings.md")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    client = MlflowClient(args.store)
    baseline_name = baseline_experiment(client, args.baseline_experiment)
    baseline = load_experiment(args.store, client, baseline_name)
    kd = baseline[baseline["method"] != "sft"]
    args.teacher = kd["teacher"].mode().iloc[0]
    args.students = sorted(baseline["student"].unique())
    seeds = ",".join(sorted(baseline["seed"].unique(), key=int))
    say(f"baseline: teacher {args.teacher}, students {', '.join(args.students)}, seeds {seeds}")
    common = ["--tracking-uri", args.store, "--seeds", seeds, *(["--smoke"] * args.smoke)]
    common += ["--cache-dir", args.cache] if args.cache else []
    experiments, ok = [baseline_name], True
    for study in plan(baseline, args.teacher, args):
        experiment = f"{baseline_name}-findings-{study.name}"
        flags = study_flags(study, experiment, common, args)
        ok &= run_study(study, experiment, flags, client)
        experiments.append(experiment)
    frames = [baseline] + [load_experiment(args.store, client, e) for e in experiments[1:]]
    runs = pd.concat([f for f in frames if not f.empty], ignore_index=True)
    size_teacher = args.size_teacher if args.with_size_study else None
    table = findings_table(runs, args.teacher, size_teacher)
    text = document(table, runs, args, experiments)
    print("\n" + text + "\n", flush=True)
    write(table, text, args.out)
    say(f"{(time.perf_counter() - started) / 60:.1f} minutes in all")
    if not ok:
        sys.exit("findings.py: a study failed or had failed trials: see above")


if __name__ == "__main__":
    main()
