"""The optimal-settings study: for each student size, an Optuna TPE search over the KD
settings (a define-by-run space: beta and lambda exist only for gkd, T and sigma only for
methods that read teacher logits), with ASHA stopping trials that trail at equal steps.

Each student gets its own Optuna study, persisted in `optuna.db` beside the MLflow store, so
`--resume` continues it and parameter importances can be computed from it later. Trials run
through the same driver as grid trials (kdray.trial): one MLflow child run each.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from mlflow.entities import RunStatus
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from analysis.report import browse_hint
from kdray.config.run import TEACHER_LOGIT_METHODS, KDConfig
from kdray.config.run_spec import RunSpec
from kdray.console import say
from kdray.errors import KdrayError
from kdray.study.config import StudyConfig
from kdray.study.designs import ALL_KD_METHODS, DEFAULT_SEARCH_TRIALS
from kdray.study.picks import register_picks
from kdray.study.plan import steps_per_trial
from kdray.study.prepare import prepare_study
from kdray.study.resume import find_unfinished_study
from kdray.study.runtime import (
    ProgressCallback,
    StudyOutcome,
    connect_ray,
    deliver_kept_results,
    in_flight_text,
    restored_tuner,
    stopped_early,
    trials_done,
    trials_in_flight,
    tune_counts,
)
from kdray.study.trials import run_label
from kdray.teacher.signal import choose_teacher_signal
from kdray.tracking.outage import StudyOutage, bound_http_retries
from kdray.tracking.runs import RunLogger, mark_failed, resolve_tracking_uri
from kdray.tracking.stores import sqlite_path
from kdray.trial.driver import driver_resources, run_trial

SEARCH_METRIC = "val_score"
"""Validation accuracy (ROUGE-L for instruction following): the test split stays unseen."""
STOPPING_METRIC = "val_nll"
"""What ASHA stops trials on: teacher-free response NLL on the scored validation items, a
continuous metric (one seed's greedy accuracy on 100 items is mostly noise)."""


@dataclass(frozen=True)
class SearchConfig:
    """What the optimal-settings search explores and how hard."""

    num_samples: int = DEFAULT_SEARCH_TRIALS
    """Optuna trials per student size."""
    methods: tuple[str, ...] = ("sft", *ALL_KD_METHODS)
    """Methods the search may pick; `sft` (no teacher) is one, since for some students the
    best setting is not to distil."""
    temperature_range: tuple[float, float] = (0.5, 5.0)
    """T, sampled log-uniformly."""
    noise_sigmas: tuple[float, ...] = (0.0, 1.0, 2.0, 5.0)
    lr_factor_range: tuple[float, float] = (1 / 3, 3.0)
    """Learning rate = the preset's x a factor sampled log-uniformly from this range."""
    startup_trials: int = 3
    """Trials before TPE models the results (Optuna's default of 10 exceeds a small budget):
    the preset's own settings first (kd T=1 sigma 0, then sft), then random ones."""
    reports: int = 3
    """Progress reports per trial, each with the validation score and NLL: ASHA's rungs."""
    score_items: int = 100
    """Validation items scored greedily at each progress report."""
    seed: int = 0
    search_seeds: int = 1
    """k: each Optuna trial trains its setting with seeds 0..k-1 (one after another in one
    Ray Train run) and its value is their mean validation score, so the search compares
    settings, not seeds. With k > 1 no trial is stopped early (ASHA would act on one seed's
    partial curve); with k = 1 ASHA stops the weak ones at its rungs on validation NLL."""
    confirm_seeds: int = 1
    """N > k: each student's pick is trained again with seeds k..N-1 (test mean and 95% CI over
    N seeds in the table): single runs of a tiny student swing by tens of points with the seed."""

    def __post_init__(self) -> None:
        from kdray.config.run import _check

        _check(self.num_samples >= 1, f"--num-samples must be >= 1, got {self.num_samples}")
        _check(self.confirm_seeds >= 1, f"--confirm-seeds must be >= 1, got {self.confirm_seeds}")
        _check(self.search_seeds >= 1, f"--search-seeds must be >= 1, got {self.search_seeds}")
        _check(self.reports >= 1, f"reports must be >= 1, got {self.reports}")


def suggest_settings(
    trial: optuna.Trial, search: SearchConfig, base_lr: float
) -> dict[str, Any] | None:
    """The define-by-run space: each parameter exists only where its method uses it."""
    method = trial.suggest_categorical("method", list(search.methods))
    if method in TEACHER_LOGIT_METHODS:
        trial.suggest_float("temperature", *search.temperature_range, log=True)
        trial.suggest_categorical("noise_sigma", list(search.noise_sigmas))
    if method != "sft":
        trial.suggest_float("ce_weight", 0.0, 1.0)
    if method == "gkd":
        trial.suggest_float("beta", 0.0, 1.0)
        trial.suggest_float("on_policy_fraction", 0.0, 1.0)
    low, high = search.lr_factor_range
    trial.suggest_float("learning_rate", base_lr * low, base_lr * high, log=True)
    return None


SHORT_NAMES = {"temperature": "T", "noise_sigma": "σ", "ce_weight": "ce", "beta": "β",
               "on_policy_fraction": "λ", "learning_rate": "lr"}  # fmt: skip


def sample_name(sample: dict[str, Any]) -> str:
    """A sampled setting in one line, for progress output: `kd T=1.37 σ=1 ce=0.53 lr=0.012`."""
    shown = [
        f"{SHORT_NAMES.get(k, k)}={v:.2g}"
        if k == "learning_rate"
        else f"{SHORT_NAMES.get(k, k)}={v:.3g}"
        for k, v in sample.items()
        if k not in ("method", "confirms") and v is not None
    ]
    return " ".join([sample["method"], *shown])


def kd_from_sample(sample: dict[str, Any], template: KDConfig) -> KDConfig:
    names = ("temperature", "noise_sigma", "ce_weight", "beta", "on_policy_fraction")
    chosen = {name: sample[name] for name in names if sample.get(name) is not None}
    return dataclasses.replace(template, method=sample["method"], **chosen)


def run_search_trial(config: dict[str, Any], study: dict[str, Any], templates: dict) -> None:
    """Tune trainable: the sampled settings applied to the student's template trial."""
    template = templates[config["method"]]
    spec = RunSpec.from_dict(template["spec"])
    kd = kd_from_sample(config, spec.kd)
    vocab = template["params"].get("vocab_compared") or 0
    cache = spec.teacher_cache
    if kd.needs_teacher_logits and choose_teacher_signal(kd, vocab).kind == "online":
        cache = None  # e.g. noise on a top-k cache: the teacher runs in the trial
    spec = dataclasses.replace(spec, kd=kd, teacher_cache=cache)
    trial_id = tune.get_context().get_trial_id()
    label = run_label(kd, template["params"]["student"], template["teacher"], "", False)
    label += f" lr={config['learning_rate']:.2g}"
    key = f"search|{template['params']['student']}|{trial_id}"
    if "seed" in config:  # a confirmation run: one seed
        plan = _seed_plan(
            template, spec, config, config["seed"], key, f"{label} seed={config['seed']}"
        )
        plan["params"]["confirms"] = config["confirms"]
    else:  # a search trial: its setting with each search seed, in turn in one Train run
        seeds = range(study.get("search_seeds", 1))
        members = [_seed_plan(template, spec, config, seed, f"{key}|seed={seed}",
                              f"{label} seed={seed}") for seed in seeds]  # fmt: skip
        plan = members[0] if len(members) == 1 else {"key": key, "run_name": label,
                                                      "members": members}  # fmt: skip
        if len(members) == 1:  # one seed: the run as a search trial always was
            plan.update(key=key, run_name=label)
    run_trial({"plan": plan, "study": study})


def _seed_plan(
    template: dict, spec: RunSpec, config: dict[str, Any], seed: int, key: str, name: str
) -> dict[str, Any]:
    """The sampled setting's run with `seed`, from that seed's own pretrained base."""
    train = dataclasses.replace(spec.train, learning_rate=config["learning_rate"], seed=seed)
    init_dir = template.get("init_dirs", {}).get(str(seed), spec.init_dir)
    seeded = dataclasses.replace(spec, train=train, init_dir=init_dir)
    kd = seeded.kd
    params = dict(template["params"])
    params.update(
        method=kd.method,
        temperature=kd.temperature if kd.needs_teacher_logits else "",
        noise_sigma=kd.noise_sigma if kd.needs_teacher_logits else "",
        ce_weight=kd.ce_weight if kd.method != "sft" else "",
        learning_rate=train.learning_rate,
        seed=seed,
        search_trial=tune.get_context().get_trial_id(),
    )
    return {**template, "key": key, "run_name": name, "params": params, "spec": seeded.to_dict()}


def search_plans(config: StudyConfig, search: SearchConfig) -> StudyConfig:
    """The study whose plans serve as templates: each searched method at T=1 per student,
    with its teacher signal (caches, seqkd responses) prepared once."""
    steps = steps_per_trial(config) or config.student_train.steps
    train = dataclasses.replace(
        config.student_train,
        # `reports` reports at most (the last is the final one), so ASHA's max_t never cuts
        # a trial before its evaluation.
        report_every=max(1, math.ceil(steps / search.reports)),
        report_val_score=search.score_items,
    )
    return dataclasses.replace(
        config,
        methods=tuple(m for m in search.methods if m != "sft"),  # sft plans come with any study
        temperatures=(1.0,),
        noise_sigmas=(0.0,),
        # Seeds 0..k-1 search; k..N-1 confirm the picks, each from its own pretrained base.
        seeds=tuple(range(max(search.confirm_seeds, search.search_seeds))),
        student_train=train,
    )


def optuna_storage(tracking_uri: str, cache_root: Path) -> str:
    """`optuna.db` beside a SQLite MLflow store, else in the kdray cache."""
    store = sqlite_path(tracking_uri)
    folder = store.parent if store else cache_root
    return f"sqlite:///{folder / 'optuna.db'}"


def run_search(config: StudyConfig, search: SearchConfig) -> StudyOutcome:
    """One Optuna search per student; then the table of best settings and importances."""
    bound_http_retries()
    if config.resume:
        return _resume_search(config, search)
    study = prepare_study(search_plans(config, search))
    templates: dict[str, dict[str, dict]] = {}
    for plan in study.plans:
        if plan["teacher"] or "sft" in search.methods:
            methods = templates.setdefault(plan["params"]["student"], {})
            template = methods.setdefault(plan["spec"]["kd"]["method"], {**plan, "init_dirs": {}})
            template["init_dirs"][str(plan["params"]["seed"])] = plan["spec"]["init_dir"]
    storage = optuna_storage(study.tracking_uri, config.cache_root())
    study.client.set_tag(study.parent_id, "kdray.optuna_storage", storage)
    # What --resume needs to rebuild the trainable without preparing the study again.
    state = {
        "context": {
            **study.context(),
            "search_seeds": search.search_seeds,
        },
        "templates": templates,
        "names": {s: f"{config.name}-{study.parent_id[:8]}-{s}" for s in templates},
        "optuna_storage": storage,
        "num_samples": search.num_samples,
    }
    search_state_file(config, study.parent_id).write_text(json.dumps(state))
    try:
        return _search_students(config, search, state, study.tracking_uri, study.parent_id)
    except BaseException:
        mark_failed(study.client, study.parent_id)
        raise


STOPPED_TAG = "kdray.stopped_early"


class TrialRunCloser(tune.Callback):
    """Close each search trial's MLflow run from the Tune driver: a trial ASHA stops is ended
    with its driver, before the driver can close its run, so mark it KILLED with the step it
    reached; a trial that completed its evaluation is marked FINISHED if still open."""

    def __init__(self, context: dict):
        self.context = context

    def on_trial_complete(self, iteration, trials, trial, **info):
        from mlflow.tracking import MlflowClient

        result = trial.last_result or {}
        client = MlflowClient(self.context["tracking_uri"])
        runs = client.search_runs(
            [self.context["experiment_id"]],
            f"tags.`mlflow.parentRunId` = '{self.context['parent_run_id']}' "
            f"and tags.`ray.trial_id` = '{trial.trial_id}'",
        )
        for run in runs:
            if "score" in result:
                if run.info.status == "RUNNING":
                    client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FINISHED))
                continue
            client.set_tag(run.info.run_id, STOPPED_TAG, f"ASHA at step {result.get('step')}")
            client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))


def search_state_file(config: StudyConfig, parent_id: str) -> Path:
    """What --resume (and benchmarks/search_vs_grid.py) need to run more of a search's trials
    without preparing the study again: context, templates, names, Optuna storage."""
    return config.cache_root() / "ray_results" / f"{config.name}-{parent_id[:8]}-search.json"


def _search_tuner(
    config: StudyConfig, search: SearchConfig, state: dict, student: str
) -> tune.Tuner:
    """The student's Tune experiment: restored when an earlier run of it was interrupted."""
    name = state["names"][student]
    path = Path(state["context"]["storage_path"]) / name
    trainable = _trainable(state["context"], state["templates"][student])
    if restored := restored_tuner(path, trainable):
        return restored
    base_lr = config.student_train.learning_rate
    concurrent = trials_in_flight(config)
    seeds = search.search_seeds
    each = f", each the mean of seeds 0-{seeds - 1}" if seeds > 1 else " (ASHA stops weak ones)"
    say(f"searching {student}: {search.num_samples} trials{each}, {in_flight_text(concurrent)}")
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(
                space=functools.partial(suggest_settings, search=search, base_lr=base_lr),
                metric=SEARCH_METRIC,
                mode="max",
                points_to_evaluate=_preset_points(config, search, base_lr),
                sampler=optuna.samplers.TPESampler(
                    seed=search.seed, n_startup_trials=search.startup_trials
                ),
                study_name=name,
                storage=optuna.storages.RDBStorage(state["optuna_storage"]),
            ),
            scheduler=ASHAScheduler(
                metric=STOPPING_METRIC,
                mode="min",
                max_t=search.reports + 1,  # never at the final report: trials end themselves
                grace_period=1,
                reduction_factor=2,
            )
            if search.search_seeds == 1
            else None,  # k seeds: each trial runs to its end and is judged on their mean
            num_samples=search.num_samples,
            max_concurrent_trials=concurrent,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=state["context"]["storage_path"],
            verbose=0,
            callbacks=[
                ProgressCallback(search.num_samples, sample_name, SEARCH_METRIC),
                TrialRunCloser(state["context"]),
            ],
        ),
    )


def validation_pick(grid) -> tuple[dict[str, Any], str] | None:
    """The search's pick: the completed trial (one with a test score) that scored best on
    validation, as (its sampled settings, its Tune trial id); None if none completed."""
    complete = {r.metrics["trial_id"]: r for r in grid if r.metrics and "score" in r.metrics}
    if not complete:
        return None
    best = rank_trials({t: r.metrics[SEARCH_METRIC] for t, r in complete.items()})[0]
    return dict(complete[best].config), best


def rank_trials(val_scores: dict[str, float]) -> list[str]:
    """Trial ids, best validation score first; ties (frequent on 100 greedy items) go to the
    lower trial id, so the pick confirmed and the pick reported are the same trial."""
    return sorted(val_scores, key=lambda trial: (-round(val_scores[trial], 6), trial))


def confirm_tuner(
    config: StudyConfig, search: SearchConfig, state: dict, student: str, pick: dict, of: str
) -> tune.Tuner:
    """Train `pick` again with seeds k..confirm_seeds-1 (child runs with param `confirms` =
    `of`, the trial they repeat); restored when an earlier run of it was interrupted."""
    name = f"{state['names'][student]}-confirm-{of}"
    path = Path(state["context"]["storage_path"]) / name
    trainable = _trainable(state["context"], state["templates"][student])
    if restored := restored_tuner(path, trainable):
        return restored
    seeds = list(range(search.search_seeds, search.confirm_seeds))
    say(f"confirming {student}'s pick {sample_name(pick)} with seeds {seeds}")
    return tune.Tuner(
        trainable,
        param_space={**pick, "seed": tune.grid_search(seeds), "confirms": of},
        tune_config=tune.TuneConfig(max_concurrent_trials=trials_in_flight(config)),
        run_config=tune.RunConfig(
            name=name,
            storage_path=state["context"]["storage_path"],
            verbose=0,
            callbacks=[ProgressCallback(len(seeds), sample_name), TrialRunCloser(state["context"])],
        ),
    )


def _interrupted(config, client, tracking_uri: str, parent_id: str) -> StudyOutcome:
    parent = client.get_run(parent_id)
    return StudyOutcome(
        tracking_uri, parent.info.experiment_id, parent_id, 0, 0, Path(config.results_dir),
        interrupted=True,
    )  # fmt: skip


def _trainable(context: dict, templates: dict):
    return tune.with_resources(
        tune.with_parameters(run_search_trial, study=context, templates=templates),
        driver_resources(),
    )


def _preset_points(
    config: StudyConfig, search: SearchConfig, base_lr: float
) -> list[dict[str, Any]]:
    """The preset's own settings (kd T=1 sigma 0, and sft), tried first so the search starts
    from the known defaults; those whose method the search leaves out are skipped."""
    kd = {"method": "kd", "temperature": 1.0, "noise_sigma": 0.0,
          "ce_weight": config.kd.ce_weight, "learning_rate": base_lr}  # fmt: skip
    sft = {"method": "sft", "learning_rate": base_lr}
    return [point for point in (kd, sft) if point["method"] in search.methods]


def best_settings(client, parent_id: str, storage: str, names: dict[str, str]) -> pd.DataFrame:
    """Per student: the search trial with the best validation score (its seeds' mean), its
    settings and test score; the test mean ± 95% CI over all its seeds (search and
    confirmation); the runner-up trial and whether the two are distinguishable on validation
    (Welch's t over their seeds, p < 0.05); how many trials ran and how many ASHA stopped."""
    parent = client.get_run(parent_id)
    runs = client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )
    rows = []
    for student in sorted({r.data.params.get("student") for r in runs}):
        repeats = [r for r in runs if r.data.params.get("student") == student
                   and "confirms" in r.data.params]  # fmt: skip
        mine = [r for r in runs if r.data.params.get("student") == student
                and "confirms" not in r.data.params]  # fmt: skip
        trials: dict[str, list] = {}
        for run in mine:
            trials.setdefault(run.data.params.get("search_trial", run.info.run_id), []).append(run)
        complete = {t: rs for t, rs in trials.items() if all("score" in r.data.metrics for r in rs)}
        row: dict[str, Any] = {
            "student": student,
            "student_params_b": float(mine[0].data.params.get("student_params_b", "nan")),
            "trials": len(trials),
            "stopped_early": sum(
                any(STOPPED_TAG in r.data.tags for r in rs) for rs in trials.values()
            ),  # fmt: skip
        }
        means = {trial: _mean_val(trial_runs) for trial, trial_runs in complete.items()}
        ranked = [(trial, complete[trial]) for trial in rank_trials(means)]
        if ranked:
            trial, best_runs = ranked[0]
            params = best_runs[0].data.params
            for name in ("method", "temperature", "noise_sigma", "ce_weight", "learning_rate"):
                row[name] = params.get(name, "")
            for name in ("beta", "on_policy_fraction"):
                row[name] = params.get(f"config.kd.{name}", "") if params["method"] == "gkd" else ""
            row["val_score"] = _mean_val(best_runs)
            row["test_score"] = statistics.mean(r.data.metrics["score"] for r in best_runs)
            scores = [r.data.metrics["score"] for r in best_runs] + [
                r.data.metrics["score"] for r in repeats
                if r.data.params["confirms"] == trial and "score" in r.data.metrics
            ]  # fmt: skip
            if len(scores) > 1:
                mean, half = _mean_ci(scores)
                row.update(seeds=len(scores), test_mean=mean, test_ci=half,
                           test_sd=statistics.stdev(scores))  # fmt: skip
            if len(ranked) > 1:
                row.update(_runner_up(best_runs, ranked[1][1]))
            # The pick's run: its seed 0 (or first seed), the one registered as its model.
            first = min(best_runs, key=lambda r: int(r.data.params.get("seed", 0)))
            row["run_id"] = first.info.run_id
        importances = _importances(storage, names.get(student))
        row["importances"] = ", ".join(f"{k} {v:.2f}" for k, v in importances.items())
        rows.append(row)
    return pd.DataFrame(rows).sort_values("student_params_b")


def _mean_val(runs) -> float:
    return statistics.mean(r.data.metrics[SEARCH_METRIC] for r in runs)


def _mean_ci(values: list[float]) -> tuple[float, float]:
    from scipy import stats

    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return statistics.mean(values), half


def _runner_up(best_runs, second_runs) -> dict[str, Any]:
    """The second-best trial's setting and validation mean, and whether it is told apart
    from the pick: Welch's t-test on the two trials' per-seed validation scores."""
    from scipy import stats

    params = second_runs[0].data.params
    sample = {k: params.get(k) for k in ("method", "temperature", "noise_sigma", "ce_weight")}
    sample = {k: float(v) if k != "method" else v for k, v in sample.items() if v not in ("", None)}
    sample["learning_rate"] = float(params["learning_rate"])
    best = [r.data.metrics[SEARCH_METRIC] for r in best_runs]
    second = [r.data.metrics[SEARCH_METRIC] for r in second_runs]
    p = float("nan")
    if len(best) > 1 and len(second) > 1 and statistics.stdev(best + second) > 0:
        p = float(stats.ttest_ind(best, second, equal_var=False).pvalue)
    return {
        "runner_up": sample_name(sample),
        "runner_up_val": statistics.mean(second),
        "vs_runner_up_p": p,
        "distinguishable": "yes" if p < 0.05 else ("no" if p == p else "one seed each"),
    }


def _importances(storage: str, study_name: str | None) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA) over the student's completed trials."""
    if not study_name:
        return {}
    try:
        found = optuna.load_study(study_name=study_name, storage=storage)
        return optuna.importance.get_param_importances(found)
    except (ValueError, RuntimeError, KeyError):  # too few trials, or one parameter only
        return {}


def _summarise(config, client, tracking_uri, parent_id, state, failed) -> StudyOutcome:
    parent = client.get_run(parent_id)
    table = best_settings(client, parent_id, state["optuna_storage"], state["names"])
    results_dir = Path(config.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(results_dir / "best_settings.csv", index=False)
    shown = table.drop(columns=["run_id"], errors="ignore")
    markdown = shown.to_markdown(index=False, floatfmt=".3g")
    (results_dir / "best_settings.md").write_text(markdown + "\n")
    logger = RunLogger(tracking_uri, parent_id)
    logger.log_file(results_dir / "best_settings.md")
    logger.log_file(results_dir / "best_settings.csv")
    trials = int(table["trials"].sum())
    logger.log_metrics({"trials": trials, "failed_trials": failed})
    status = RunStatus.FINISHED if failed == 0 else RunStatus.FAILED
    client.set_terminated(parent_id, RunStatus.to_string(status))
    say("best settings per student size (validation picks, test reported):\n" + markdown)
    say(f"written to {results_dir.resolve()}/best_settings.md (and .csv)")
    register_picks(config, tracking_uri, parent_id, table, sample_name)
    print(browse_hint(tracking_uri, parent_id), flush=True)
    return StudyOutcome(
        tracking_uri, parent.info.experiment_id, parent_id, trials, failed, results_dir
    )


def _resume_search(config: StudyConfig, search: SearchConfig) -> StudyOutcome:
    """Continue each student's Tune experiment (Optuna's study continues in optuna.db); a
    student whose search had not started yet starts now."""
    from mlflow.tracking import MlflowClient

    tracking_uri = resolve_tracking_uri(config.tracking_uri)
    parent_id = find_unfinished_study(config, tracking_uri).info.run_id
    client = MlflowClient(tracking_uri)
    file = search_state_file(config, parent_id)
    if not file.is_file():
        raise KdrayError(
            f"search run {parent_id} was interrupted before its trials started: run the study "
            "again without --resume (its world, teachers and caches are reused)"
        )
    state = json.loads(file.read_text())
    say(f"resuming search run {parent_id}")
    deliver_kept_results(StudyOutage(state["context"]["storage_path"], parent_id), client)
    connect_ray()
    client.update_run(parent_id, status=RunStatus.to_string(RunStatus.RUNNING))
    return _search_students(config, search, state, tracking_uri, parent_id)


def _search_students(
    config: StudyConfig, search: SearchConfig, state: dict, tracking_uri: str, parent_id: str
) -> StudyOutcome:
    """Each student's search in turn (restored where an earlier run was interrupted), then
    the best-settings table; a Ctrl-C leaves the parent run open for --resume."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    failed = 0
    outage = StudyOutage(state["context"]["storage_path"], parent_id)
    for student in state["templates"]:
        grid = _search_tuner(config, search, state, student).fit()
        if outage.happened():
            raise outage.stopped()
        failed += grid.num_errors
        if stopped_early(client, parent_id, tune_counts(grid), state["num_samples"]):
            return _interrupted(config, client, tracking_uri, parent_id)
        pick = validation_pick(grid)
        if search.confirm_seeds > search.search_seeds and pick:
            confirmed = confirm_tuner(config, search, state, student, *pick).fit()
            if outage.happened():
                raise outage.stopped()
            failed += confirmed.num_errors
            confirms = search.confirm_seeds - search.search_seeds
            if stopped_early(client, parent_id, trials_done(confirmed), confirms):
                return _interrupted(config, client, tracking_uri, parent_id)
    return _summarise(config, client, tracking_uri, parent_id, state, failed)
