"""The tracking server goes away in the middle of a study. A short outage: training goes on,
the worker keeps its metrics and sends them when the server is back. A long one: the study
stops in one line with its trials' results kept on disk, and --resume delivers them once the
server is back. Either way every trial ends with one complete run and nothing logged is lost."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from store_steps import logged_step

from conftest import STUDIES, free_port, run_study_script, study_env, wait_for_http
from kdray.tracking.outage import BufferedRunLogger, StudyOutage, UnsentOps, is_unreachable
from kdray.tracking.server import server_command, server_env

STEPS = 300
OUTAGE_AT_STEP = 100


class Server:
    """`mlflow server` on a SQLite store, killed like a crashed machine (SIGKILL, group)."""

    def __init__(self, store: Path, port: int):
        self.store, self.port, self.process = store, port, None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = server_command(
            f"sqlite:///{self.store / 'mlflow.db'}", port=self.port,
            artifacts_dir=self.store / "artifacts",
        )  # fmt: skip
        self.process = subprocess.Popen(
            command, env=server_env(), start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_http(f"{self.uri}/health", seconds=120)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def _outages(server: Server, db: Path, events: list, stop: threading.Event) -> None:
    """First outage in whichever run trains first (a packed Train run orders its runs by
    expected work), back after 15 s; second in the other run, for good."""
    prefixes = ["sft", "kd T=2"]
    for back_after in (15, None):
        prefix = None
        while not stop.is_set() and prefix is None:
            prefix = next((p for p in prefixes if OUTAGE_AT_STEP <= _step(db, p) < STEPS), None)
            time.sleep(0.1)
        if stop.is_set():
            return
        prefixes.remove(prefix)
        server.kill()
        events.append(f"killed in {prefix}")
        if back_after is not None:
            time.sleep(back_after)
            server.start()
            events.append("restarted")


def _step(db: Path, prefix: str) -> int:
    try:
        return logged_step(db, prefix)
    except Exception:  # the store is being written
        return 0


@pytest.mark.slow  # 5 min: a study through two outages, then --resume
def test_a_study_survives_its_tracking_server_going_away(tmp_path, shared_cache):
    store = tmp_path / "store"
    store.mkdir()
    server = Server(store, free_port())
    server.start()
    flags = ["--smoke", "--cache-dir", str(shared_cache), "--students", "tiny-qwen2-xs"]
    flags += ["--methods", "kd", "--temperatures", "2", "--steps", str(STEPS)]
    flags += ["--max-concurrent", "1", "--tracking-uri", server.uri, "--tracking-wait", "45"]
    events, stop = [], threading.Event()
    watcher = threading.Thread(target=_outages, args=(server, store / "mlflow.db", events, stop))
    watcher.start()
    try:
        started = time.monotonic()
        first = subprocess.run(
            [sys.executable, str(STUDIES / "temperature.py"), *flags],
            cwd=tmp_path, env=study_env(), capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        took = time.monotonic() - started
    finally:
        stop.set()
        watcher.join()
    output = first.stdout + first.stderr
    assert len(events) == 3 and events[1] == "restarted", output[-4000:]
    assert {events[0], events[2]} == {"killed in sft", "killed in kd T=2"}
    # The short outage: the worker kept its metrics, sent them later; the trial finished.
    assert "unreachable: keeping this run's metrics" in output
    assert "answers again" in output
    # The long one: one line, exit 3, within the wait (not MLflow's minutes of retries).
    assert first.returncode == 3, output[-4000:]
    last = first.stderr.strip().splitlines()[-1]
    # Both runs train in one packed Train run. When it ends the server is away: the driver
    # keeps both runs' results on disk (the first may have been closed as it finished, which
    # the driver cannot ask), none lost.
    assert "unreachable" in last and "--resume" in last and "2 trials' results kept" in last
    assert took < 600

    server.start()
    client = MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("kdray-temperature-smoke")
    before = client.search_runs([experiment.experiment_id], "tags.`kdray.role` = 'trial'")
    last_outage = events[2].removeprefix("killed in ")
    (cut,) = [r for r in before if r.info.run_name.startswith(last_outage)]
    assert cut.info.status == "RUNNING"  # its end could not be written

    resumed = run_study_script(*flags, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "delivered the results of 2 trials kept while the server was away" in resumed.stdout
    assert "resuming at step" not in resumed.stdout + resumed.stderr  # nothing trained again

    runs = client.search_runs([experiment.experiment_id], "tags.`kdray.role` = 'trial'")
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:  # one complete curve each: nothing lost, nothing twice
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
        assert sorted(steps) == list(range(1, STEPS + 1)), run.info.run_name
        assert "score" in run.data.metrics and "agreement" in run.data.metrics
        assert "predictions.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {r.info.run_id for r in runs} == {r.info.run_id for r in before}
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`kdray.role` = 'study'")
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials"] == 2
    assert (tmp_path / "results" / "temperature-smoke" / "results.md").is_file()
    server.kill()


def _refusing(*args, **kwargs):
    raise MlflowException(
        "API request to http://127.0.0.1:1/api/2.0/mlflow/runs/log-batch failed with exception "
        "HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded"
    )


def test_the_buffered_logger_keeps_what_it_cannot_send(tmp_path, monkeypatch, capsys):
    """An outage simulated in the client: ops are kept in order (files copied, since their
    originals go), sent once the server answers, and saved for the driver if it never does."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("outage", str(tmp_path / "artifacts"))  # not ./mlruns
    run_id = client.create_run(experiment).info.run_id
    logger = BufferedRunLogger(uri, run_id, tmp_path / "spool")
    (tmp_path / "spool").mkdir()
    logger.log_curves({"train_loss": [(1, 3.0), (2, 2.5)]})
    assert logger.delivered == {"train_loss": 2}

    real = logger.client.log_batch
    monkeypatch.setattr(logger.client, "log_batch", _refusing)
    monkeypatch.setattr(logger.client, "log_artifact", _refusing)
    logger.log_curves({"train_loss": [(1, 3.0), (2, 2.5), (3, 2.0)]})
    file = tmp_path / "predictions.json"
    file.write_text("[1]")
    logger.log_file(file)
    file.unlink()  # gone, like the worker's temporary folder
    logger.log_metrics({"score": 50.0}, step=3)
    assert len(logger.pending) == 3 and logger.delivered == {"train_loss": 2}
    assert capsys.readouterr().out.count("unreachable: keeping this run's metrics") == 1

    saved = tmp_path / "checkpoint"
    saved.mkdir()
    assert logger.save_unsent(saved) == 3
    monkeypatch.setattr(logger.client, "log_batch", real)
    monkeypatch.undo()
    unsent = UnsentOps(saved)  # what the trial driver reads from the final checkpoint
    unsent.deliver(client, run_id)
    assert not unsent.ops
    steps = [m.step for m in client.get_metric_history(run_id, "train_loss")]
    assert sorted(steps) == [1, 2, 3]
    assert client.get_run(run_id).data.metrics["score"] == 50.0
    assert [a.path for a in client.list_artifacts(run_id)] == ["predictions.json"]


def test_kept_trials_are_delivered_on_resume(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("outage", str(tmp_path / "artifacts"))  # not ./mlruns
    run_id = client.create_run(experiment).info.run_id
    source = tmp_path / "final"
    (source / "unsent").mkdir(parents=True)
    (source / "unsent" / "ops.json").write_text(
        '[{"op": "batch", "metrics": [["score", 7.0, 0, 20]], "curve": "score", "last_step": 20}]'
    )
    outage = StudyOutage(tmp_path / "ray_results", "parent")
    outage.record("tracking server X unreachable for 45 s while sending the trial's results")
    outage.keep("kd|T=2", run_id, UnsentOps(source), {"score": 7.0})
    assert outage.happened() and len(outage.kept()) == 1
    assert outage.deliver_kept(client) == 1
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["score"] == 7.0
    assert not outage.happened() and outage.kept() == []


def test_unreachable_means_the_server_not_the_request():
    assert is_unreachable(requests.exceptions.ConnectionError("refused"))
    assert is_unreachable(MlflowException("API request to http://x failed with exception boom"))
    assert not is_unreachable(MlflowException("RESOURCE_DOES_NOT_EXIST: run 'abc' not found"))
    assert not is_unreachable(ValueError("bad"))
