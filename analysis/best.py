"""`python -m analysis best`: an experiment's registered picks (optimal.py registers each
student's in the MLflow model registry), per student: the model name and version, the setting,
its scores, and how to load it (the pyfunc, and the Hugging Face folder inside it)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from analysis.loader import find_experiment
from kdray.errors import KdrayError
from kdray.tracking.models import (
    HF_FOLDER,
    STUDENT_MODEL,
    model_id_of,
    registered_students,
)

SCORE_NAMES = {"val_score": "val", "test_score": "test"}


def best_lines(tracking_uri: str, experiment: str, student: str | None = None) -> list[str]:
    """The lines `python -m analysis best` prints; one line naming the fix when there is
    nothing to print."""
    client, _ = find_experiment(tracking_uri, experiment)
    versions = registered_students(client, experiment)
    if not versions:
        raise KdrayError(
            f"experiment {experiment!r} has no registered picks: run studies/optimal.py with "
            "--experiment NAME (and --log-models picks or all, the defaults) to register them"
        )
    students = [v.tags.get("student", "") for v in versions]
    if student is not None:
        versions = [v for v in versions if v.tags.get("student") == student]
        if not versions:
            raise KdrayError(
                f"experiment {experiment!r} has no registered pick of student {student!r}: "
                f"its picks are of {', '.join(students)}"
            )
    lines = [f"[kdray] registered picks of experiment {experiment!r} at {tracking_uri}:"]
    for version in versions:
        lines += _pick_lines(client, tracking_uri, version)
    return lines


def _pick_lines(client, tracking_uri: str, version) -> list[str]:
    tags, name, number = version.tags, version.name, version.version
    scores = ", ".join(f"{short} {tags[k]}" for k, short in SCORE_NAMES.items() if k in tags)
    if "test_mean" in tags:
        scores += (
            f"; test mean {tags['test_mean']} ± {tags.get('test_ci', '?')} (95% CI) over "
            f"{tags.get('seeds', '?')} seeds"
        )
    folder = f"runs:/{version.run_id}/{STUDENT_MODEL}/{HF_FOLDER}"
    lines = [
        f"{tags.get('student', '?')}: {name} version {number}",
        f"  setting: {tags.get('setting', '?')} (teacher {tags.get('teacher') or '-'}, "
        f"seed {tags.get('seed', '?')})",
        f"  scores: {scores or 'none recorded'}",
        f"  run: {version.run_id} (study run {tags.get('kdray.parent_run', '?')})",
        f'  load: mlflow.set_tracking_uri("{tracking_uri}"); '
        f'model = mlflow.pyfunc.load_model("models:/{name}/{number}")',
        f'  Hugging Face folder: mlflow.artifacts.download_artifacts("{folder}")',
    ]
    if on_disk := _local_folder(client, version):
        lines.append(f"  on disk: {on_disk}")
    return lines


def _local_folder(client, version) -> str | None:
    """The Hugging Face folder's path when the store keeps artifacts in local files."""
    location = urlparse(client.get_logged_model(model_id_of(version)).artifact_location)
    if location.scheme not in ("", "file"):
        return None
    folder = Path(unquote(location.path)) / HF_FOLDER
    return str(folder) if folder.is_dir() else None
