"""A run's data as MLflow datasets (the UI's Dataset column and filter): each split a run read,
with its source file, the digest of its rows, its size and its role (`mlflow.data.context`)."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

from mlflow.entities import DatasetInput, InputTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

CONTEXTS = {"train": "training", "validation": "validation", "test": "evaluation"}
DATASET_ATTEMPTS = 4


def split_inputs(
    data_dir: str, name: str, train_items: int | None = None, eval_items: int | None = None
) -> list[DatasetInput]:
    """The train, validation and test splits of `data_dir` as dataset inputs, cut to the items
    a run uses (the first `train_items` of train, `eval_items` of the others)."""
    import mlflow.data
    import pandas as pd

    inputs = []
    for split, context in CONTEXTS.items():
        path = Path(data_dir) / f"{split}.json"
        if not path.is_file():
            continue
        count = train_items if split == "train" else eval_items
        rows = pd.DataFrame(json.loads(path.read_text())[:count]).astype(str)
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": a local file
            warnings.simplefilter("ignore")
            dataset = mlflow.data.from_pandas(rows, source=str(path), name=f"{name}-{split}")
        tags = [InputTag("mlflow.data.context", context)]
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=tags))
    return inputs


def log_splits(client: MlflowClient, run_id: str, *args, **kwargs) -> None:
    """`split_inputs(*args, **kwargs)` logged as the run's inputs. Trials that start together
    log the same datasets: MLflow's SQL store looks a dataset up, then inserts it, so one of two
    such trials can fail on the unique key; by then the dataset exists, and a retry links it."""
    inputs = split_inputs(*args, **kwargs)
    for attempt in range(1, DATASET_ATTEMPTS + 1):
        try:
            client.log_inputs(run_id, datasets=inputs)
            return
        except MlflowException as error:
            if not _lost_insert_race(error) or attempt == DATASET_ATTEMPTS:
                raise
            time.sleep(0.1 * attempt)


def _lost_insert_race(error: MlflowException) -> bool:
    """A unique-key violation, as SQLite ("UNIQUE constraint failed"), PostgreSQL ("duplicate
    key value violates unique constraint") or MySQL ("Duplicate entry") word it."""
    text = str(error).lower()
    return "unique constraint" in text or "duplicate entry" in text
