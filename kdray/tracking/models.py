"""Trained students in MLflow. A trial's exported student (the Hugging Face folder it was
evaluated with) is logged as the MLflow model `student` of its run: a pyfunc
(student_pyfunc.py) whose artifact `hf_model` is that folder as it is, safetensors and
tokenizer. A study's picks are registered in the model registry as versions of a readable
name (`kdray-optimal-tiny-qwen2-s`), their setting and scores as tags.

MLflow's transformers flavor is not used: in MLflow 3.17 with transformers 5 it fails on a
local folder, and from a pipeline it re-saves the weights, looks the model's name up on the
Hugging Face hub (model card, license) and loads non-native architectures with remote code."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow.entities import LoggedModelStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from kdray.config.run import EvalConfig
from kdray.data.prompts import PROMPT_TEMPLATE, PROMPT_TEMPLATE_WITH_INPUT
from kdray.tracking.runs import package_versions

STUDENT_MODEL = "student"
"""The logged model's name in its run."""
HF_MODEL = "hf_model"
"""The student's Hugging Face folder inside the logged model (student_pyfunc.HF_MODEL)."""
HF_FOLDER = f"artifacts/{HF_MODEL}"
"""Its path in the model's artifacts: `runs:/<run>/student/artifacts/hf_model`."""
GENERATION = "generation"
MODEL_FOLDER_TAG = "kdray.model_folder"
"""On a trial run: where its exported student folder is (Ray results, beside its checkpoint)."""
MODEL_ERROR_TAG = "kdray.model_error"
"""On a trial run whose student could not be logged: why."""
EXPERIMENT_TAG = "kdray.experiment"
"""On registered models and their versions: the MLflow experiment of the study."""
PYFUNC_FILE = Path(__file__).with_name("student_pyfunc.py")
REQUIREMENTS = ("mlflow", "torch", "transformers", "tokenizers")


def student_model_id(client: MlflowClient, run_id: str) -> str | None:
    """The id of the run's logged student (one whose upload completed: READY), or None."""
    run = client.get_run(run_id)
    found = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{STUDENT_MODEL}'",
    )
    ready = [model for model in found if model.status == LoggedModelStatus.READY]
    return ready[0].model_id if ready else None


def log_student(
    tracking_uri: str, run_id: str, folder: Path, skip: Iterable[str] = (), step: int = 0
) -> str:
    """The student folder (less the files named in `skip`) logged as the run's MLflow model
    `student`, with the run's tidy params (not config.*, version.*); its id. Logged once: a
    run that has its student already keeps it."""
    import mlflow.pyfunc
    from mlflow.models import Model
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    client = MlflowClient(tracking_uri)
    if existing := student_model_id(client, run_id):
        return existing
    run = client.get_run(run_id)
    params = {k: v for k, v in run.data.params.items() if not k.startswith(("config.", "version."))}
    with _staging(Path(folder)) as staging:
        hf_model = staging / HF_MODEL
        skipped = set(skip)
        shutil.copytree(
            folder, hf_model, ignore=lambda _, names: skipped & set(names),
            copy_function=link_or_copy,
        )  # fmt: skip
        generation = staging / f"{GENERATION}.json"
        generation.write_text(json.dumps(_generation(run.data.params)))
        model = client.create_logged_model(
            run.info.experiment_id, name=STUDENT_MODEL, source_run_id=run_id, params=params
        )
        versions = package_versions()
        # Model.log takes its store from the process's tracking URI: this run's, meanwhile.
        with (
            _failed_unless_done(client, model.model_id),
            _use_tracking_uri(tracking_uri),
            _no_progress_bars(),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")  # type hints, an input example: not for this model
            Model.log(
                artifact_path=None, flavor=mlflow.pyfunc, name=STUDENT_MODEL, run_id=run_id,
                model_id=model.model_id, step=step, python_model=str(PYFUNC_FILE),
                artifacts={HF_MODEL: str(hf_model), GENERATION: str(generation)},
                pip_requirements=[f"{p}=={versions[p]}" for p in REQUIREMENTS],
                signature=_signature(),
            )  # fmt: skip
    return model.model_id


@contextmanager
def _failed_unless_done(client: MlflowClient, model_id: str) -> Iterator[None]:
    """A logged model whose upload did not finish is marked FAILED (a retry logs a new one)."""
    try:
        yield
    except BaseException:
        try:
            client.finalize_logged_model(model_id, LoggedModelStatus.FAILED)
        except Exception:  # the store is away: the model stays PENDING, which is not READY
            pass
        raise


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """No artifact progress bars: MLflow draws two per logged model, in every trial's log."""
    before = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        yield
    finally:
        if before is None:
            del os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"]
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = before


@contextmanager
def _staging(folder: Path) -> Iterator[Path]:
    """A temporary folder beside `folder` (so its files can be hard links: MLflow copies from
    there, and refuses symbolic links), or in the system's temporary folder."""
    try:
        staging = tempfile.TemporaryDirectory(prefix=".kdray-student-", dir=folder.parent)
    except OSError:  # e.g. a read-only folder
        staging = tempfile.TemporaryDirectory(prefix="kdray-student-")
    with staging as path:
        yield Path(path)


def link_or_copy(source: str, target: str) -> None:
    """A hard link (no space, and it outlives the source's deletion), or a copy across
    filesystems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _generation(params: dict[str, str]) -> dict:
    """What the pyfunc needs to answer as the study evaluated: its prompts, its length."""
    tokens = params.get("config.eval.max_new_tokens", EvalConfig().max_new_tokens)
    return {
        "prompt": PROMPT_TEMPLATE,
        "prompt_with_input": PROMPT_TEMPLATE_WITH_INPUT,
        "max_new_tokens": int(tokens),
    }


def _signature():
    """Responses out; the params `max_new_tokens` and `raw` (the text is the prompt). No input
    schema: MLflow would cut a table of instructions and inputs to its first column, and the
    pyfunc takes a string, a list of them or such a table."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=None,
        outputs=Schema([ColSpec("string")]),
        params=ParamSchema(
            [ParamSpec("max_new_tokens", "long", 0), ParamSpec("raw", "boolean", False)]
        ),
    )


def registered_name(experiment: str, student: str) -> str:
    """`<experiment>-<student>`, prefixed `kdray-` where the name lacks it
    (`kdray-optimal-tiny-qwen2-s` for the experiment `kdray-optimal`), in the characters a
    `models:/` URI takes."""
    base = experiment if experiment.startswith("kdray") else f"kdray-{experiment}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{base}-{student}")


def register_student(
    tracking_uri: str,
    name: str,
    model_id: str,
    run_id: str,
    tags: dict[str, str],
    description: str = "",
) -> ModelVersion:
    """A new version of registered model `name` (created if new) for the logged student."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    client = MlflowClient(tracking_uri)
    try:
        client.create_registered_model(
            name, tags={k: v for k, v in tags.items() if k.startswith("kdray.")},
            description=description,
        )  # fmt: skip
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    # The registry looks the logged model up in the process's tracking store: this one.
    with _use_tracking_uri(tracking_uri):
        return client.create_model_version(
            name, source=f"models:/{model_id}", run_id=run_id, tags=tags, description=description
        )


def registered_students(client: MlflowClient, experiment: str) -> list[ModelVersion]:
    """The latest registered version of each model whose versions carry the experiment's
    tag, by name."""
    latest: dict[str, ModelVersion] = {}
    for version in client.search_model_versions(f"tags.`{EXPERIMENT_TAG}` = '{experiment}'"):
        known = latest.get(version.name)
        if known is None or int(version.version) > int(known.version):
            latest[version.name] = version
    return [latest[name] for name in sorted(latest)]


def model_id_of(version: ModelVersion) -> str:
    """The logged model a registered version points at (its source `models:/<id>`)."""
    return version.source.removeprefix("models:/")
