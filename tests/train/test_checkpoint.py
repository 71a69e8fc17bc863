"""Resumable checkpoints of a Train worker (kdray.train.checkpoint): a DeepSpeed engine restored
from one continues exactly as the uninterrupted engine does, at every ZeRO stage; a damaged
checkpoint or another run's is not used; nothing is unpickled beyond plain weights."""

import json
import random

import pytest
import torch
from ray.train import Checkpoint
from transformers import Qwen2Config, Qwen2ForCausalLM

from kdray.config.run import TrainConfig
from kdray.errors import ConfigError
from kdray.train.checkpoint import LoopState, restore_checkpoint, save_checkpoint
from kdray.train.engine import create_engine


def _engine(zero_stage: int):
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2,
        )
    )  # fmt: skip
    train = TrainConfig(steps=8, warmup_steps=2, batch_size=2, zero_stage=zero_stage)
    return create_engine(model, train)


def _steps(engine, first: int, last: int, noise: torch.Generator) -> list[float]:
    """Optimizer steps on batches that depend on the step number and on the noise generator."""
    losses = []
    for step in range(first, last + 1):
        ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(step))
        ids = (ids + torch.randint(0, 2, ids.shape, generator=noise)) % 64
        loss = engine(input_ids=ids, labels=ids).loss
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("zero_stage", [0, 2, 3])
def test_a_restored_engine_continues_like_the_uninterrupted_one(
    tmp_path, one_rank_process_group, zero_stage
):
    engine, noise, python_rng = (
        _engine(zero_stage),
        torch.Generator().manual_seed(1),
        random.Random(2),
    )
    _steps(engine, 1, 3, noise)
    state = LoopState("run-a", step=3, curves={"train_loss": [(1, 2.0), (3, 1.5)]})
    state.best_loss, state.best_step = 1.5, 3
    state.best_weights = {"w": torch.arange(4.0)}
    save_checkpoint(tmp_path, engine, state, python_rng, {"noise": noise.get_state()}, rank=0)
    expected = _steps(engine, 4, 6, noise)
    expected_lr = engine.get_lr()[0]
    expected_draw = python_rng.random()

    fresh = _engine(zero_stage)
    restored = restore_checkpoint(Checkpoint.from_directory(str(tmp_path)), fresh, "run-a", 0, bool)
    assert restored is not None
    loop, python_state, rngs = restored
    assert (loop.step, loop.resumed_from, loop.restarts) == (3, 3, 1)
    assert loop.curves["train_loss"] == [(1, 2.0), (3, 1.5)] and loop.best_step == 3
    assert torch.equal(loop.best_weights["w"], torch.arange(4.0))
    noise = torch.Generator()
    noise.set_state(rngs["noise"])
    assert _steps(fresh, 4, 6, noise) == expected  # bit for bit: weights, optimizer, RNG
    assert fresh.get_lr()[0] == expected_lr  # the LR schedule went on from step 3
    resumed_rng = random.Random()
    resumed_rng.setstate(python_state)
    assert resumed_rng.random() == expected_draw


def test_a_damaged_or_foreign_checkpoint_is_not_used(tmp_path, one_rank_process_group, capsys):
    engine = _engine(0)
    save_checkpoint(tmp_path, engine, LoopState("run-a", step=3), random.Random(), {}, rank=0)
    checkpoint = Checkpoint.from_directory(str(tmp_path))
    assert restore_checkpoint(checkpoint, _engine(0), "run-b", 0, bool) is None  # another run
    assert restore_checkpoint(None, engine, "run-a", 0, bool) is None

    weights = next(tmp_path.glob("deepspeed/*model_states.pt"))
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated
    fresh = _engine(0)
    before = [p.detach().clone() for p in fresh.module.parameters()]
    assert restore_checkpoint(checkpoint, fresh, "run-a", 0, bool) is None
    assert "does not match its checksum" in capsys.readouterr().err
    assert all(torch.equal(a, b) for a, b in zip(before, fresh.module.parameters(), strict=True))


def test_a_model_folder_is_not_a_resumable_checkpoint(tmp_path, one_rank_process_group):
    (tmp_path / "metrics.json").write_text(json.dumps({"score": 1.0}))  # a final checkpoint
    checkpoint = Checkpoint.from_directory(str(tmp_path))
    assert restore_checkpoint(checkpoint, _engine(0), "run-a", 0, bool) is None


class Planted:
    """Any class but DeepSpeed's four: unpickling it could run code."""


def test_the_checkpoint_loader_unpickles_no_arbitrary_object(tmp_path, one_rank_process_group):
    engine = _engine(0)
    torch.save({"module": Planted()}, tmp_path / "planted.pt")
    with pytest.raises(Exception, match="Weights only load failed"):
        engine.checkpoint_engine.load(str(tmp_path / "planted.pt"))


def test_checkpoint_every_is_a_multiple_of_report_every():
    assert TrainConfig(report_every=10, checkpoint_every=30).checkpoints_at(60)
    assert not TrainConfig(report_every=10, checkpoint_every=30).checkpoints_at(40)
    assert TrainConfig(report_every=10).checkpoints_at(40)
    with pytest.raises(ConfigError, match="checkpoint_every must be a multiple of report_every"):
        TrainConfig(report_every=10, checkpoint_every=25)
    with pytest.raises(ConfigError, match="max_failures must be >= -1"):
        TrainConfig(max_failures=-2)
    # how a run recovers is not part of what it trains (teacher cache keys stay put)
    assert TrainConfig(max_failures=5).what_it_trains() == TrainConfig().what_it_trains()


def test_a_restored_train_run_takes_finished_outputs_only_from_the_same_run(tmp_path):
    """A resumed study reopens its unfinished MLflow runs under new ids and trains only those:
    run-i of the restored checkpoint may then hold another run's outputs."""
    from kdray.train.checkpoint import run_fingerprint
    from kdray.train.loop import METRICS_FILE, record_run, restore_finished, still_to_train

    runs = [{"run_id": name, "model_name": "s"} for name in ("a", "b", "c")]
    saved = tmp_path / "checkpoint"
    for index, run in enumerate(runs[:2]):  # a and b finished before the interruption
        record_run(saved / f"run-{index}", run_fingerprint(run), run.get("run_id"))
        (saved / f"run-{index}" / METRICS_FILE).write_text(json.dumps({"score": index}))
    (saved / "run-2").mkdir()  # an older kdray's output: no record of its run
    done = tmp_path / "done"
    done.mkdir()
    finished = restore_finished(Checkpoint.from_directory(saved), done)
    assert finished == {0: run_fingerprint(runs[0]), 1: run_fingerprint(runs[1]), 2: None}
    assert json.loads((done / "run-1" / METRICS_FILE).read_text()) == {"score": 1}
    assert still_to_train(runs, finished) == [2]  # the same runs: only the unrecorded one
    reopened = [{"run_id": name, "model_name": "s"} for name in ("c2", "d2")]  # new ids
    assert still_to_train(reopened, finished) == [0, 1]
    assert still_to_train(runs, restore_finished(None, done)) == [0, 1, 2]
