"""Fill in the held-out metrics a study's finished runs lack (metrics kdray added after they
were trained: `nll_teacher_unsure`, `nll_teacher_sure`), from the students the runs kept.

    python benchmarks/rescore.py --store sqlite:////tmp/d5/mlflow.db      # every experiment
    python benchmarks/rescore.py --store sqlite:///mlflow.db --experiment kdray-temperature

Each run's student is loaded from its folder (tag `kdray.model_folder`) and scored by the
trials' own code (kdray.eval.evaluate.likelihood_metrics) with the run's resolved config
(its `config.json`). The metrics it already has are recomputed too and compared: the largest
difference is printed, so a rescoring that does not reproduce the run's own numbers shows.
Only the missing metrics are logged, at the run's last step, and the run is tagged
`kdray.rescored` with their names and this commit. Runs whose folder is gone are skipped and
counted. Scoring is a forward pass over the test references per student (and one per teacher):
52 tiny runs took 47 s. A store that does not exist or an unknown experiment is refused in one
line (exit 2), and nothing is created."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from transformers import AutoTokenizer

from kdray.config.run_spec import RunSpec
from kdray.console import say
from kdray.data.examples import read_split
from kdray.errors import KdrayError
from kdray.eval.evaluate import likelihood_metrics
from kdray.models import load_model
from kdray.tracking.models import MODEL_FOLDER_TAG
from kdray.tracking.runs import git_commit, role_is
from kdray.tracking.stores import check_readable_store
from kdray.train.loop import METRICS_FILE

RESCORED_TAG = "kdray.rescored"


def trial_runs(client: MlflowClient, experiment: str | None) -> list:
    """The finished trial runs of one experiment (by name), or of every experiment."""
    if experiment:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise KdrayError(
                f"no experiment {experiment!r} in the store: check its name in `mlflow ui`"
            )
        ids = [found.experiment_id]
    else:
        ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(
        ids, f"{role_is('trial')} and attributes.status = 'FINISHED'", max_results=50000
    )


def run_spec(client: MlflowClient, run_id: str) -> RunSpec:
    with tempfile.TemporaryDirectory() as folder:
        path = client.download_artifacts(run_id, "config.json", folder)
        return RunSpec.from_dict(json.loads(Path(path).read_text()))


def rescore(client: MlflowClient, run, spec: RunSpec, folder: Path) -> tuple[dict, float]:
    """(the metrics the run lacks, the largest |recomputed - logged| of those it has)."""
    tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer_dir)  # as the trial loaded it
    model = load_model(str(folder), torch.device("cpu")).eval()
    validation = read_split(spec.data_dir, "validation")[: spec.eval.max_items]
    test = read_split(spec.data_dir, "test")[: spec.eval.max_items]
    metrics = likelihood_metrics(spec, model, tokenizer, validation, test)
    logged = run.data.metrics
    drift = max((abs(v - logged[k]) for k, v in metrics.items() if k in logged), default=0.0)
    return {k: v for k, v in metrics.items() if k not in logged}, drift


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="MLflow tracking URI of the study")
    parser.add_argument("--experiment", help="one experiment by name (default: every one)")
    args = parser.parse_args()

    try:
        check_readable_store(args.store, "--store of the study's store")
        client = MlflowClient(args.store)
        runs = trial_runs(client, args.experiment)
    except KdrayError as error:
        parser.error(str(error))
    specs = {run.info.run_id: run_spec(client, run.info.run_id) for run in runs}
    # A teacher's held-out log-probs are kept between runs of the same teacher and test set.
    runs.sort(key=lambda r: (str(specs[r.info.run_id].eval_teacher_dir), r.info.run_name))
    commit, started = git_commit(), time.perf_counter()
    done = gone = 0
    worst = 0.0
    for position, run in enumerate(runs, 1):
        folder = Path(run.data.tags.get(MODEL_FOLDER_TAG, ""))
        if not (folder / "config.json").is_file():
            gone += 1
            continue
        missing, drift = rescore(client, run, specs[run.info.run_id], folder)
        worst = max(worst, drift)
        if missing:
            step = json.loads((folder / METRICS_FILE).read_text())["step"]
            stamp = int(time.time() * 1000)
            client.log_batch(
                run.info.run_id, metrics=[Metric(k, v, stamp, step) for k, v in missing.items()]
            )
            client.set_tag(run.info.run_id, RESCORED_TAG, f"{','.join(missing)} at {commit}")
            done += 1
        say(f"[{position}/{len(runs)}] {run.info.run_name}: {len(missing)} metric(s) added, "
            f"|recomputed - logged| <= {drift:.2g}")  # fmt: skip
    seconds = time.perf_counter() - started
    say(f"{done} of {len(runs)} runs rescored, {gone} without their student folder, "
        f"largest |recomputed - logged| {worst:.2g}, {seconds:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
