"""Does the optimal-settings search beat the temperature grid with no more trials? Both run
side by side in one invocation, on the same world, teacher and MLflow store:

    python benchmarks/search_vs_grid.py    # tiny world, students tiny-qwen2-xs and -s (~25 min)

1. the temperature study's grid (sft + kd and revkd at T = 1, 2, 5: 7 trials per student);
2. optimal.py's search with as many trials per student as the grid ran;
3. each side's pick per student (best validation score; the test split stays unseen) trained
   again with more seeds (`--confirm-seeds`, default 3), since a single run of a tiny student
   swings by tens of points with the seed.

Prints, per student: the grid's best test score (an oracle: picked on test), each side's
validation pick with its seed-0 test score and its mean +- sd over the seeds, and the search's
mean minus the grid's. Also written to WORK/search_vs_grid.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from kdray.cli.args import config_from_flags
from kdray.study.grid import run_study
from kdray.study.search import (
    SearchConfig,
    confirm_tuner,
    run_search,
    sample_name,
    search_state_file,
)
from kdray.tracking.runs import PARENT_TAG


def child_runs(outcome):
    client = MlflowClient(outcome.tracking_uri)
    return client.search_runs(
        [outcome.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{outcome.parent_run_id}'"
    )


def grid_pick(runs, student: str, config) -> tuple[dict, float, float]:
    """The grid's setting with the best validation score as a search sample, its test score,
    and the grid's best test score (picked on test: what no real user could pick)."""
    mine = [r for r in runs if r.data.params["student"] == student and "score" in r.data.metrics]
    best = max(mine, key=lambda r: r.data.metrics["val_score"])
    params = best.data.params
    pick: dict = {"method": params["method"]}
    if params["temperature"]:
        pick.update(
            temperature=float(params["temperature"]),
            noise_sigma=float(params["noise_sigma"]),
            ce_weight=config.kd.ce_weight,
        )
    pick["learning_rate"] = config.student_train.learning_rate
    oracle = max(r.data.metrics["score"] for r in mine)
    return pick, best.data.metrics["score"], oracle


def repeat_scores(runs, student: str, confirms: str) -> list[float]:
    return [
        r.data.metrics["score"]
        for r in runs
        if r.data.params.get("student") == student
        and r.data.params.get("confirms") == confirms
        and "score" in r.data.metrics
    ]


def spread(scores: list[float]) -> str:
    return f"{statistics.mean(scores):.1f} ± {statistics.stdev(scores):.1f} (n={len(scores)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", default="tiny-qwen2-xs,tiny-qwen2-s")
    parser.add_argument("--confirm-seeds", type=int, default=3)
    parser.add_argument("--cache-dir", help="kdray cache (default: kdray's)")
    parser.add_argument("--work", help="MLflow store and results (default: a temporary folder)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="search-vs-grid-"))
    common = ["--students", args.students, "--tracking-uri", f"sqlite:///{work}/mlflow.db"]
    common += ["--cache-dir", args.cache_dir] if args.cache_dir else []
    students = args.students.split(",")

    grid_config = config_from_flags(
        "temperature", [*common, "--results-dir", str(work / "temperature")]
    )
    grid = run_study(grid_config)
    per_student = grid.trials // len(students)

    search_config = config_from_flags("optimal", [*common, "--results-dir", str(work / "optimal")])
    search = SearchConfig(num_samples=per_student, confirm_seeds=args.confirm_seeds)
    searched = run_search(search_config, search)
    best = pd.read_csv(work / "optimal" / "best_settings.csv").set_index("student")

    # The grid's picks get the same confirmation, through the search's trial driver.
    state = json.loads(search_state_file(search_config, searched.parent_run_id).read_text())
    grid_runs = child_runs(grid)
    picks = {s: grid_pick(grid_runs, s, grid_config) for s in students}
    for student, (pick, _, _) in picks.items():
        if pick != sample_of(best.loc[student]):  # the same setting is not trained twice
            confirm_tuner(search_config, search, state, student, pick, "grid").fit()

    search_runs = child_runs(searched)
    rows = []
    for student in students:
        pick, grid_test, oracle = picks[student]
        chosen = best.loc[student]
        trial = next(
            r.data.params["search_trial"] for r in search_runs if r.info.run_id == chosen["run_id"]
        )
        search_scores = [chosen["test_score"], *repeat_scores(search_runs, student, trial)]
        same = pick == sample_of(chosen)
        grid_scores = [grid_test, *repeat_scores(search_runs, student, trial if same else "grid")]
        gain = statistics.mean(search_scores) - statistics.mean(grid_scores)
        rows.append(
            {
                "student": student,
                "trials (grid / search)": f"{per_student} / {int(chosen['trials'])}",
                "grid best test (oracle)": f"{oracle:.1f}",
                "grid pick (val)": sample_name(pick),
                "grid pick test": f"{grid_test:.1f}",
                "grid pick over seeds": spread(grid_scores),
                "search pick (val)": sample_name(sample_of(chosen)),
                "search pick test": f"{chosen['test_score']:.1f}",
                "search pick over seeds": spread(search_scores),
                "search - grid (mean)": f"{gain:+.1f}",
            }
        )
    table = pd.DataFrame(rows).T.to_markdown(headers=["", *students])
    (work / "search_vs_grid.md").write_text(table + "\n")
    print(table)
    print(f"written to {work / 'search_vs_grid.md'}; MLflow store {work / 'mlflow.db'}")


def sample_of(row: pd.Series) -> dict:
    """A best_settings row back as a search sample (its empty cells dropped)."""
    names = ("method", "temperature", "noise_sigma", "ce_weight", "beta", "on_policy_fraction",
             "learning_rate")  # fmt: skip
    return {
        name: (row[name] if name == "method" else float(row[name]))
        for name in names
        if not pd.isna(row[name]) and row[name] != ""
    }


if __name__ == "__main__":
    main()
