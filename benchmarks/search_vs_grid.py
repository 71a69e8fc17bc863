"""Does the optimal-settings search beat the temperature grid at an equal budget? Both on the
same world, teacher and pretrained bases (one kdray cache), each picking on validation only:

    python benchmarks/search_vs_grid.py          # the default temperature study, then the search
    python benchmarks/search_vs_grid.py --grid-store sqlite:////path/mlflow.db \\
        --cache-dir /path/cache                   # reuse a default temperature study already run
    python benchmarks/search_vs_grid.py --smoke --students tiny-qwen2-xs --confirm-seeds 1

1. The grid: the temperature study (default: sft + kd at T = 1, 2, 5, seeds 0-2), run here or
   read from `--grid-store` (its latest finished study run in `--grid-experiment`, or
   `--grid-run`); its kdray cache must be the one given with `--cache-dir` (default kdray's),
   and the preset's settings must match (checked before anything runs).
2. The search: optimal.py's Optuna search with k seeds per trial (`--search-seeds`, default
   optimal.py's: 2 on tiny). **Budget, counted in training runs** (one seed of one setting is
   one run, whichever side trains it): per student the grid ran S settings x G seeds; the search
   gets floor(S x G / k) trials of k seeds. With k = 1 ASHA may stop trials early, so the
   search then spends fewer runs than that.
3. The picks: the grid's setting with the best mean validation score over its G seeds; the
   search's trial with the best mean validation score over its k seeds.
4. Confirmation: both picks are trained again with the same fresh seeds C..C+m-1 (C = max(G,
   k), m = `--confirm-seeds`, default 3), which neither side saw when it picked, each from its
   own pretrained base; a setting both sides picked is trained once.

Prints per student, on the confirmation seeds: each pick's test mean +- 95% CI, the paired
difference search - grid (same seed, same base) +- 95% CI with a paired t-test, the smallest
difference those seeds could have detected (MDE), and whether the two are distinguishable; for
reference the picks' validation means, and the grid's oracle (its best test mean, picked on
test: what no user could pick). Also written to WORK/search_vs_grid.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tempfile
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from analysis.loader import study_parent_runs
from analysis.uncertainty import mean_ci, paired_test
from kdray.cli.args import config_from_flags
from kdray.cli.main import default_search_seeds
from kdray.config.run import flatten, to_dict
from kdray.errors import KdrayError
from kdray.study.config import StudyConfig
from kdray.study.search import (
    SearchConfig,
    confirm_tuner,
    run_search,
    sample_name,
    search_state_file,
)
from kdray.tracking.runs import PARENT_TAG

SAME_WORLD = ("preset", "domain", "family", "teacher", "zoo", "pretrain", "student_train",
              "teacher_train", "eval", "kd", "validation_items")  # fmt: skip
"""StudyConfig fields the grid and the search must share, or the comparison compares worlds."""
SETTING = ["method", "temperature", "noise_sigma"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", help="default: the temperature study's (or the grid's)")
    parser.add_argument("--search-seeds", type=int, help="k (default: optimal.py's)")
    parser.add_argument("--confirm-seeds", type=int, default=3, help="m fresh seeds (3)")
    parser.add_argument("--smoke", action="store_true", help="both sides at --smoke size")
    parser.add_argument("--cache-dir", help="kdray cache (default: kdray's); with --grid-store, "
                        "the one the grid ran with")  # fmt: skip
    parser.add_argument("--grid-store", help="MLflow store of a temperature study already run")
    parser.add_argument("--grid-experiment", default="kdray-temperature")
    parser.add_argument("--grid-run", help="its study run id (default: the latest finished)")
    parser.add_argument("--work", help="MLflow store and results (default: a temporary folder)")
    args = parser.parse_args()
    if args.confirm_seeds < 1:
        parser.error("--confirm-seeds must be >= 1")
    return args


def grid_study(args: argparse.Namespace, work: Path, flags: list[str]) -> tuple[str, str]:
    """(tracking URI, study run id) of the grid: the one in --grid-store, or one run now."""
    if args.grid_store:
        found = study_parent_runs(args.grid_store, args.grid_experiment, None, args.grid_run)
        client = MlflowClient(args.grid_store)  # after the check: it would create a new store
        for run_id in found:
            if client.get_run(run_id).info.status == "FINISHED":
                return args.grid_store, run_id
        raise KdrayError(f"no finished study run in {args.grid_experiment} at {args.grid_store}")
    from kdray.study.grid import run_study

    uri = f"sqlite:///{work}/mlflow.db"
    outcome = run_study(
        config_from_flags(
            "temperature", [*flags, "--tracking-uri", uri, "--results-dir", str(work / "grid")]
        )
    )
    return uri, outcome.parent_run_id


def child_runs(uri: str, parent_id: str) -> list:
    """The finished child runs of a study run."""
    client = MlflowClient(uri)
    experiment = client.get_run(parent_id).info.experiment_id
    runs = client.search_runs([experiment], f"tags.`{PARENT_TAG}` = '{parent_id}'",
                              max_results=10_000)  # fmt: skip
    return [run for run in runs if run.info.status == "FINISHED"]


def grid_table(runs: list) -> pd.DataFrame:
    """One row per grid run: student, setting, seed, validation and test score."""
    rows = [
        {**{k: run.data.params.get(k, "") for k in ["student", *SETTING]},
         "seed": int(run.data.params["seed"]), "val": run.data.metrics["val_score"],
         "test": run.data.metrics["score"]}
        for run in runs if "score" in run.data.metrics and "val_score" in run.data.metrics
    ]  # fmt: skip
    return pd.DataFrame(rows)


def grid_pick(table: pd.DataFrame, config: StudyConfig) -> tuple[dict, pd.Series]:
    """The student's grid setting with the best mean validation score over its seeds, as a
    search sample (the preset's learning rate and CE weight), and the per-setting means."""
    means = table.groupby(SETTING, sort=False)[["val", "test"]].mean()
    method, temperature, noise = means["val"].idxmax()
    pick: dict = {"method": method}
    if temperature:
        pick.update(temperature=float(temperature), noise_sigma=float(noise),
                    ce_weight=config.kd.ce_weight)  # fmt: skip
    pick["learning_rate"] = config.student_train.learning_rate
    return pick, means.loc[(method, temperature, noise)]


def check_same_world(grid_params: dict[str, str], config: StudyConfig) -> None:
    """Refuse a grid whose preset settings differ from the search's (another world, recipe or
    evaluation would make the comparison meaningless)."""
    ours = flatten(to_dict(config), "config.")
    keys = [k for k in ours if k.split(".")[1] in SAME_WORLD and k in grid_params]
    differ = [f"{k} {grid_params[k]} vs {ours[k]}" for k in keys if grid_params[k] != str(ours[k])]
    if differ or not keys:
        raise KdrayError("the grid ran with other settings than the search would: "
                         + ("; ".join(differ[:5]) or "no config params on its run"))  # fmt: skip


def confirmation_scores(runs: list, student: str, confirms: str, seeds: list[int]) -> pd.Series:
    """Test score per confirmation seed of the runs that repeat `confirms` (a trial or 'grid')."""
    scores = {
        int(run.data.params["seed"]): run.data.metrics["score"]
        for run in runs
        if run.data.params.get("student") == student
        and run.data.params.get("confirms") == confirms
        and int(run.data.params["seed"]) in seeds and "score" in run.data.metrics
    }  # fmt: skip
    return pd.Series(scores, dtype=float).sort_index()


def compare(search_scores: pd.Series, grid_scores: pd.Series, same: bool) -> dict[str, str]:
    """Each pick's test mean +- 95% CI over the confirmation seeds, and the paired difference
    search - grid over the seeds both have, with a paired t-test and a verdict."""
    both = pd.concat([search_scores, grid_scores], axis=1, join="inner").dropna()
    delta = both.iloc[:, 0] - both.iloc[:, 1]
    test = paired_test(delta)
    mean, half, p = test["estimate"], test["half"], test["p"]
    if same:
        verdict = "the same setting"
    elif math.isnan(half):
        verdict = "no CI (fewer than 2 confirmation seeds)"
    else:
        verdict = "indistinguishable (CI includes 0)" if abs(mean) <= half else (
            "search better" if mean > 0 else "grid better")  # fmt: skip
    return {
        "search pick test (confirmation)": _ci(*mean_ci(search_scores), n=len(search_scores)),
        "grid pick test (confirmation)": _ci(*mean_ci(grid_scores), n=len(grid_scores)),
        "search − grid (paired)": _ci(mean, half, signed=True, n=len(delta)),
        "p (paired t)": "" if math.isnan(p) else f"{p:.3g}",
        # the smallest |search - grid| this many seeds would have found (a null's resolution)
        "MDE (paired t, power 0.8)": "" if math.isnan(test["mde"]) else f"{test['mde']:.1f}",
        "verdict": verdict,
    }


def _ci(mean: float, half: float, signed: bool = False, n: int = 0) -> str:
    text = f"{mean:+.1f}" if signed else f"{mean:.1f}"
    return f"{text} ± {half:.1f} (n={n})" if not math.isnan(half) else f"{text} (n={n})"


def sized_search(
    args: argparse.Namespace, config: StudyConfig, grid: pd.DataFrame
) -> tuple[SearchConfig, list[int]]:
    """The search at the grid's budget in runs per student, and the fresh confirmation seeds
    (after every seed either side picks on)."""
    k = args.search_seeds or default_search_seeds(config, args.smoke)
    first = max(int(grid["seed"].max()) + 1, k)
    seeds = list(range(first, first + args.confirm_seeds))
    budget = int(grid[grid["student"].isin(config.students)].groupby("student").size().min())
    search = SearchConfig(
        num_samples=max(1, budget // k), search_seeds=k, confirm_seeds=seeds[-1] + 1,
        score_items=min(SearchConfig.score_items, config.eval.max_items),
    )  # fmt: skip
    print(f"[bench] budget per student: {budget} runs; search: {search.num_samples} trials x "
          f"{k} seeds; confirmation seeds {seeds}", flush=True)  # fmt: skip
    return search, seeds


def confirm_grid_picks(config, search, seeds, parent_id: str, best, grid) -> dict:
    """Each student's grid pick trained with the confirmation seeds through the search's trial
    driver (child runs with `confirms` = grid), unless the search picked the same setting."""
    state = json.loads(search_state_file(config, parent_id).read_text())
    fresh = dataclasses.replace(search, search_seeds=seeds[0])  # seeds[0].. only
    picks = {s: grid_pick(grid[grid["student"] == s], config) for s in config.students}
    for student, (pick, _) in picks.items():
        if pick != sample_of(best.loc[student]):
            confirm_tuner(config, fresh, state, student, pick, "grid").fit()
    return picks


def student_row(student, pick, means, chosen, search_runs, grid, seeds, k) -> dict[str, str]:
    """One column of the printed table: budgets, picks, the oracle and the comparison."""
    trial = next(r.data.params["search_trial"] for r in search_runs
                 if r.info.run_id == chosen["run_id"])  # fmt: skip
    same = pick == sample_of(chosen)
    search_scores = confirmation_scores(search_runs, student, trial, seeds)
    grid_scores = search_scores if same else confirmation_scores(
        search_runs, student, "grid", seeds)  # fmt: skip
    mine = grid[grid["student"] == student]
    return {
        "budget (runs)": f"grid {len(mine)} ({mine.groupby(SETTING).ngroups} settings x "
                         f"{mine['seed'].nunique()} seeds) / search {int(chosen['trials'])} "
                         f"trials x {k} seeds",
        "grid pick (val)": f"{sample_name(pick)}: {means['val']:.1f}",
        "search pick (val)": f"{sample_name(sample_of(chosen))}: {chosen['val_score']:.1f}",
        "same pick": "yes" if same else "no",
        "grid oracle (best test mean, picked on test)":
            f"{mine.groupby(SETTING)['test'].mean().max():.1f}",
        **compare(search_scores, grid_scores, same),
    }  # fmt: skip


def main() -> None:
    args = parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="search-vs-grid-"))
    work.mkdir(parents=True, exist_ok=True)
    flags = (["--smoke"] if args.smoke else []) + (
        ["--cache-dir", args.cache_dir] if args.cache_dir else [])  # fmt: skip
    students = ["--students", args.students] if args.students else []
    grid_uri, grid_id = grid_study(args, work, flags + students)
    grid = grid_table(child_runs(grid_uri, grid_id))
    if grid.empty:
        raise KdrayError(f"study run {grid_id} at {grid_uri} has no finished run with a score")
    chosen = args.students.split(",") if args.students else sorted(grid["student"].unique())
    if missing := sorted(set(chosen) - set(grid["student"])):
        raise KdrayError(f"the grid has no runs of {', '.join(missing)}")

    uri = f"sqlite:///{work}/mlflow.db"
    config = config_from_flags("optimal", [*flags, "--students", ",".join(chosen),
                                           "--tracking-uri", uri, "--results-dir",
                                           str(work / "optimal")])  # fmt: skip
    check_same_world(MlflowClient(grid_uri).get_run(grid_id).data.params, config)
    search, seeds = sized_search(args, config, grid)
    searched = run_search(config, search)
    best = pd.read_csv(work / "optimal" / "best_settings.csv").set_index("student")
    picks = confirm_grid_picks(config, search, seeds, searched.parent_run_id, best, grid)

    search_runs = child_runs(uri, searched.parent_run_id)
    rows = {s: student_row(s, *picks[s], best.loc[s], search_runs, grid, seeds,
                           search.search_seeds) for s in chosen}  # fmt: skip
    header = (f"Confirmation seeds {seeds}; test mean ± 95% CI (t) over them. Grid: study run "
              f"{grid_id} at {grid_uri}.")  # fmt: skip
    text = header + "\n\n" + pd.DataFrame(rows).to_markdown() + "\n"
    (work / "search_vs_grid.md").write_text(text)
    print(text + f"written to {work / 'search_vs_grid.md'}; MLflow store {work / 'mlflow.db'}")


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
    try:
        main()
    except KdrayError as error:  # a grid that cannot be compared, a bad flag: one line
        raise SystemExit(f"search_vs_grid.py: error: {error}") from None
