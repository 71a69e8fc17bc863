"""MLflow tracking: where the store is, the study's parent run, one child run per trial,
and a small logger that Train workers use to write curves, metrics and artifacts."""

from __future__ import annotations

import json
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from kdray.errors import KdrayError
from kdray.tracking.stores import resolve_tracking_uri, sqlite_path  # noqa: F401 (kdray's API)

PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
ROLE_TAG = "kdray.role"
"""What a run is: `study` (a study's parent run), `trial`, `teacher`, `pretrain`."""


def role_is(role: str) -> str:
    """An MLflow search filter: the runs of one role."""
    return f"tags.`{ROLE_TAG}` = '{role}'"


PINNED_PACKAGES = (
    "torch",
    "ray",
    "transformers",
    "tokenizers",
    "deepspeed",
    "mlflow",
    "optuna",
    "sacrebleu",
    "scipy",
    "statsmodels",
    "pandas",
)
_MAX_PARAM_LENGTH = 6000


def mark_failed(client, run_id: str) -> None:
    """Close a run FAILED (the one way kdray ends a run that did not finish)."""
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))


def artifact_root_for(uri: str) -> str | None:
    """For a SQLite store, artifacts live in `mlartifacts/` beside the database file so that
    every process (driver, Train workers) finds them whatever its working directory."""
    if path := sqlite_path(uri):
        return (path.parent / "mlartifacts").resolve().as_uri()
    return None


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_EXPERIMENT = "custom_model_development"
"""MLflow 3's UI opens an experiment without this tag on its GenAI (traces) view; with it, on
the training runs."""


def ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The experiment's id, created if needed, tagged as a model-training experiment."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(
            name,
            artifact_location=_experiment_artifacts(uri, name),
            tags={EXPERIMENT_KIND_TAG: TRAINING_EXPERIMENT},
        )
    if experiment.lifecycle_stage == "deleted":
        raise KdrayError(
            f"MLflow experiment {name!r} is deleted: restore it in the UI or pass "
            "--experiment with another name"
        )
    if EXPERIMENT_KIND_TAG not in experiment.tags:  # made by an earlier kdray or by hand
        client.set_experiment_tag(
            experiment.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_EXPERIMENT
        )
    return experiment.experiment_id


def _experiment_artifacts(uri: str, name: str) -> str | None:
    root = artifact_root_for(uri)
    return None if root is None else f"{root}/{name}"


def package_versions() -> dict[str, str]:
    """Versions of the pinned stack, logged with every run."""
    versions = {"python": platform.python_version()}
    for package in PINNED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def git_commit() -> str:
    """The commit of the kdray checkout that runs (with `+dirty` for uncommitted changes), or
    `unknown` outside a git checkout (e.g. a Ray job's uploaded working directory)."""
    repo = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
            timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def run_tags(preset: str, domain: str, study: str) -> dict[str, str]:
    """Tags on every run of a study: what produced it (commit, library versions) and what it
    is (preset, domain, study), so runs filter and compare in the MLflow UI."""
    return {
        "kdray.study": study,
        "kdray.preset": preset,
        "kdray.domain": domain,
        "kdray.git_commit": git_commit(),
        **{f"version.{k}": v for k, v in package_versions().items()},
    }


def as_params(values: dict[str, Any]) -> list[Param]:
    return [Param(k, str(v)[:_MAX_PARAM_LENGTH]) for k, v in sorted(values.items())]


class RunLogger:
    """Writes to one existing MLflow run (used by the trial driver and by rank 0). Every write
    is one op (a dict, see `execute`), so a subclass can keep ops it cannot send yet."""

    def __init__(self, tracking_uri: str, run_id: str):
        self.client = MlflowClient(tracking_uri)
        self.run_id = run_id
        self._logged_through: dict[str, int] = {}  # curve name -> last step logged

    def _send(self, op: dict[str, Any]) -> None:
        execute(self.client, self.run_id, op)

    def continue_curves(
        self, names: list[str], known: dict[str, int] | None = None, fresh: bool = False
    ) -> None:
        """Log each curve in `names` only after the last step the run already has (a run
        restarted from a checkpoint repeats steps it may have logged): the later of `known`'s
        step and the run's own. `fresh`: the run has none yet, nothing to look up."""
        for name in names:
            last = (known or {}).get(name, 0)
            self._logged_through[name] = last if fresh else max(last, self._last_step(name))

    def _last_step(self, name: str) -> int:
        history = self.client.get_metric_history(self.run_id, name)
        return max((m.step for m in history), default=0)

    def log_params(self, params: dict[str, Any]) -> None:
        items = [[p.key, p.value] for p in as_params(params)]
        for start in range(0, len(items), 100):
            self._send({"op": "batch", "params": items[start : start + 100]})

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        stamp = _now_ms()
        self._send(
            {"op": "batch", "metrics": [[k, float(v), stamp, step] for k, v in metrics.items()]}
        )

    def log_curve(self, name: str, points: list[tuple[int, float]]) -> None:
        stamp = _now_ms()
        metrics = [[name, float(value), stamp, step] for step, value in points]
        for start in range(0, len(metrics), 1000):
            chunk = metrics[start : start + 1000]
            self._send({"op": "batch", "metrics": chunk, "curve": name, "last_step": chunk[-1][3]})

    def log_curves(self, curves: dict[str, list[tuple[int, float]]]) -> None:
        """Log each curve's points after the last step logged so far: pass whole curves."""
        for name, points in curves.items():
            new = [(step, v) for step, v in points if step > self._logged_through.get(name, 0)]
            if new:
                self.log_curve(name, new)
                self._logged_through[name] = new[-1][0]

    def log_json(self, payload: Any, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / artifact_file
            path.write_text(json.dumps(payload, indent=1))
            self.log_file(path)

    def log_file(self, path: Path, artifact_path: str | None = None) -> None:
        self._send({"op": "artifact", "path": str(path), "artifact_path": artifact_path})

    def log_dir(self, path: Path, artifact_path: str | None = None) -> None:
        self._send({"op": "artifacts", "path": str(path), "artifact_path": artifact_path})

    def set_tags(self, tags: dict[str, str]) -> None:
        self._send({"op": "batch", "tags": [[k, str(v)] for k, v in tags.items()]})


def execute(client: MlflowClient, run_id: str, op: dict[str, Any]) -> None:
    """Carry out one logging op on `run_id`: `batch` (metrics [key, value, time, step],
    params [key, value], tags [key, value]), `artifact` (a file) or `artifacts` (a folder)."""
    if op["op"] == "batch":
        client.log_batch(
            run_id,
            metrics=[Metric(*m) for m in op.get("metrics", [])],
            params=[Param(*p) for p in op.get("params", [])],
            tags=[RunTag(*t) for t in op.get("tags", [])],
        )
    elif op["op"] == "artifact":
        client.log_artifact(run_id, op["path"], op["artifact_path"])
    elif op["op"] == "artifacts":
        client.log_artifacts(run_id, op["path"], op["artifact_path"])
    else:
        raise ValueError(f"unknown logging op {op['op']!r}")


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
