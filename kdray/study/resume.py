"""--resume's checks, made before anything runs: an unfinished run of the study exists in its
store, and the command asks for the grid that run stored (its `config.*` params); otherwise
one line saying what differs. MLflow is imported only once the store is known to exist."""

from __future__ import annotations

from collections.abc import Callable

from kdray.config.run import flatten, to_dict
from kdray.errors import KdrayError
from kdray.study.config import StudyConfig
from kdray.tracking.runs import role_is
from kdray.tracking.stores import missing_sqlite_store, resolve_tracking_uri

NOT_THE_GRID = (
    "resume", "experiment", "tracking_uri", "tracking_wait", "cache_dir", "results_dir",
    "max_concurrent", "system_metrics_seconds",
)  # fmt: skip
"""Fields that say where and how fast a study runs, not what it runs: --resume may change them."""
PARAM_PREFIX = "config."
"""The parent run's params of the study's config (kdray.study.prepare.parent_params)."""
SHOWN_DIFFERENCES = 3


def find_unfinished_study(config: StudyConfig, uri: str):
    """The latest parent run of this study in its experiment that did not finish."""
    # Opening a SQLite store creates it: a store that does not exist has nothing to resume.
    runs = [] if missing_sqlite_store(uri) else _study_runs(config, uri)
    # A study whose trials all ended logged `trials`; one that stopped early did not.
    unfinished = [r for r in runs if "trials" not in r.data.metrics]
    if not unfinished:
        raise KdrayError(
            f"no unfinished run of study {config.name!r} in experiment "
            f"{config.experiment_name!r} at {uri}: nothing to "
            "resume; run the study without --resume (or pass its --experiment/--tracking-uri)"
        )
    return unfinished[0]


def _study_runs(config: StudyConfig, uri: str) -> list:
    """The study's parent runs in its experiment, newest first."""
    from mlflow.tracking import MlflowClient

    from kdray.tracking.outage import bound_http_retries

    bound_http_retries()  # an unreachable tracking server is noticed in seconds
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(config.experiment_name)
    if experiment is None:
        return []
    return client.search_runs(
        [experiment.experiment_id],
        filter_string=f"{role_is('study')} and tags.`kdray.study` = '{config.name}'",
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )


def check_resumable(config: StudyConfig, planned: Callable[[], StudyConfig] | None = None) -> None:
    """--resume: KdrayError unless an unfinished run of the study exists and asks for the grid
    of `planned()`, the config the study's preparation logs (`config` itself for a grid;
    called once the run is found)."""
    uri = resolve_tracking_uri(config.tracking_uri)
    parent = find_unfinished_study(config, uri)
    if difference := grid_difference(parent.data.params, planned() if planned else config):
        raise KdrayError(
            f"--resume: study run {parent.info.run_id} ran another grid ({difference}); "
            "rerun with its flags to continue it, or without --resume to start this grid"
        )


def grid_difference(stored: dict[str, str], planned: StudyConfig) -> str | None:
    """What differs between a parent run's `config.*` params and `planned`, in a few words
    (`temperatures (1.0, 2.0, 5.0) then, (1.0, 2.0) now`); None when the grid is the same.
    Params the run does not have (written by an older kdray) are not compared."""
    from kdray.tracking.runs import as_params  # how the params were written

    now = {p.key: p.value for p in as_params(flatten(to_dict(planned), PARAM_PREFIX))}
    differ = [
        f"{key.removeprefix(PARAM_PREFIX)} {stored[key]} then, {value} now"
        for key, value in now.items()
        if key in stored and stored[key] != value and not _not_the_grid(key)
    ]
    if not differ:
        return None
    more = len(differ) - SHOWN_DIFFERENCES
    return "; ".join(differ[:SHOWN_DIFFERENCES]) + (f"; {more} more" if more > 0 else "")


def _not_the_grid(key: str) -> bool:
    return key.removeprefix(PARAM_PREFIX) in NOT_THE_GRID
