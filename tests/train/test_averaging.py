"""The moving average of a run's weights (kdray.train.averaging): each rank's average of its own
part, gathered at the export, is the average of the whole weights at every ZeRO stage; the
decay warms up; a bad decay is refused; a checkpoint keeps the average."""

import random

import pytest
import torch
from ray.train import Checkpoint
from test_checkpoint import _engine, _steps

from kdray.config.run import TrainConfig
from kdray.errors import ConfigError
from kdray.train.averaging import decay_at, load_average, local_weights, update_average
from kdray.train.checkpoint import LoopState, restore_checkpoint, save_checkpoint
from kdray.train.engine import full_state_dict, trainable_state


def test_the_decay_warms_up_to_its_cap():
    assert decay_at(0.99, 1) == pytest.approx(2 / 11)  # the start fades within a few steps
    assert decay_at(0.99, 10) == pytest.approx(11 / 20)
    assert decay_at(0.99, 2000) == 0.99
    assert all(decay_at(0.99, t) <= decay_at(0.99, t + 1) for t in range(1, 1500))


def test_update_average_is_an_exponential_moving_average():
    weights = [{"w": torch.tensor([float(v)])} for v in (1, 3, 7)]
    average = None
    for values in weights:
        average = update_average(average, values, decay=0.5)
    assert average["w"].item() == pytest.approx(0.5 * (0.5 * 1 + 0.5 * 3) + 0.5 * 7)
    assert weights[0]["w"].item() == 1.0  # the first call copied, not aliased


@pytest.mark.parametrize("zero_stage", [0, 3])
def test_the_exported_average_is_the_average_of_the_whole_weights(
    one_rank_process_group, zero_stage
):
    engine, noise = _engine(zero_stage), torch.Generator().manual_seed(1)
    average, reference = None, None
    for step in range(1, 7):
        _steps(engine, step, step, noise)
        decay = decay_at(0.9, step)
        average = update_average(average, local_weights(engine, zero_stage), decay)
        reference = update_average(reference, trainable_state(engine, zero_stage), decay)
    last = full_state_dict(engine, zero_stage)
    load_average(engine, zero_stage, average)
    exported = full_state_dict(engine, zero_stage)
    for name, expected in reference.items():
        torch.testing.assert_close(exported[name], expected)
    assert any(not torch.equal(exported[n], last[n]) for n in reference)  # not the last weights


def test_a_checkpoint_keeps_the_average(tmp_path, one_rank_process_group):
    engine = _engine(0)
    state = LoopState("run-a", step=3, average_weights={"w": torch.arange(3.0)})
    save_checkpoint(tmp_path, engine, state, random.Random(), {}, rank=0)
    restored = restore_checkpoint(
        Checkpoint.from_directory(str(tmp_path)), _engine(0), "run-a", 0, bool
    )
    assert restored is not None
    assert torch.equal(restored[0].average_weights["w"], torch.arange(3.0))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"average_decay": 1.0}, "average_decay must be in"),
        ({"average_decay": -0.1}, "average_decay must be in"),
        ({"average_decay": 0.99, "eval_every": 50}, "set one of them"),
    ],
)
def test_a_bad_average_decay_is_refused(fields, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**fields)
