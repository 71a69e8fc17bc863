"""What a packed Train run (several settings' runs in turn) tells Tune and the console."""

import json
import types

from kdray.config.run import TrainConfig
from kdray.config.run_spec import RunSpec
from kdray.study.runtime import ProgressCallback, stopped_early, trials_done
from kdray.train.loop import FAILURE_FILE, METRICS_FILE, announce
from kdray.trial.driver import group_result, train_run_lost


def run_with(**metrics):
    return types.SimpleNamespace(data=types.SimpleNamespace(metrics=metrics))


def member(name: str) -> dict:
    return {"run_name": name}


def test_a_packed_trial_reports_its_best_run_and_a_settings_seeds_their_mean():
    runs = [run_with(score=70.0, nll=0.4), run_with(score=90.0, nll=0.3), run_with(nll=0.5)]
    packed = {"packed": True, "members": [member("a"), member("b"), member("c")]}
    assert group_result(packed, runs) == {"runs": 3.0, "score": 90.0, "best_run": 1.0}
    seeds = {"members": [member("a"), member("b")]}
    assert group_result(seeds, runs[:2]) == {"score": 80.0, "nll": 0.35}
    assert group_result(packed, [run_with(nll=0.5)]) == {"runs": 1.0}  # none scored


def test_the_progress_line_of_a_packed_trial_names_its_best_run(capsys):
    plan = {"run_name": "Train run 1 of 2 (12 runs)", "members": [member("sft s"), member("kd s")]}
    trial = types.SimpleNamespace(
        config={"plan": plan}, last_result={"runs": 2.0, "score": 91.5, "best_run": 1.0},
        status="RUNNING",
    )  # fmt: skip
    other = types.SimpleNamespace(status="RUNNING")
    ProgressCallback(2).on_trial_complete(0, [trial, other], trial)
    line = capsys.readouterr().out.strip()
    assert line.startswith("[kdray] [1/2 done, 1 running, 0 queued, ")
    assert line.endswith("Train run 1 of 2 (12 runs) finished; best 91.5 (kd s)")


def spec_dict(name: str) -> dict:
    spec = RunSpec("student", "tiny-qwen2-s", "/m", "/t", "/d", TrainConfig(), run_name=name)
    return spec.to_dict()


def test_each_run_of_a_train_run_gets_a_line_on_stderr(tmp_path, capsys):
    done, failed, missing = tmp_path / "run-0", tmp_path / "run-1", tmp_path / "run-2"
    done.mkdir(), failed.mkdir()
    metrics = {"score": 89.74, "nll": 0.37851, "train_seconds": 38.2, "eval_seconds": 5.6}
    (done / METRICS_FILE).write_text(json.dumps(metrics))
    (failed / FAILURE_FILE).write_text(json.dumps({"reason": "loss became nan at step 3"}))
    announce(spec_dict("kd T=1 s seed=0"), done, 0, 3)
    announce(spec_dict("kd T=5 s seed=0"), failed, 1, 3)
    announce(spec_dict("sft s seed=0"), missing, 2, 3)  # rank > 0: no outputs, no line
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "[kdray] run 1/3 done, kd T=1 s seed=0: accuracy 89.7, nll 0.3785 "
        "(38 s training, 6 s evaluation)",
        "[kdray] run 2/3 FAILED, kd T=5 s seed=0: loss became nan at step 3",
    ]


def result(done: bool | None = None, error: Exception | None = None):
    metrics = {} if done is None else {"done": done}
    return types.SimpleNamespace(metrics=metrics, error=error)


def test_a_trial_that_ctrl_c_stopped_in_flight_has_not_finished():
    # Tune reports a trial stopped in flight TERMINATED like a finished one, without `done`.
    grid = [result(done=True), result(done=False), result(), result(error=RuntimeError("x"))]
    assert trials_done(grid) == (1, 1)
    calls = []
    client = types.SimpleNamespace(set_terminated=lambda *args: calls.append(args))
    assert stopped_early(client, "parent", trials_done(grid), 4)
    assert calls == [("parent", "KILLED")]
    assert not stopped_early(client, "parent", trials_done(grid[:1] + grid[3:]), 2)


def test_a_train_run_killed_under_its_driver_is_not_its_runs_failure():
    from ray.exceptions import ActorDiedError

    try:
        try:
            raise ActorDiedError()
        except ActorDiedError as died:
            raise RuntimeError("Train run ended") from died
    except RuntimeError as wrapped:
        assert train_run_lost(wrapped)
    assert train_run_lost(ActorDiedError())
    assert not train_run_lost(RuntimeError("kdray.train.loop.NonFiniteLossError: loss nan"))
