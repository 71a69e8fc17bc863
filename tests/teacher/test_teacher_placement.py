"""Online teacher placements give the replica's logits; memory estimates per placement."""

import dataclasses

import pytest
import ray
import torch
from mlflow.tracking import MlflowClient

from conftest import run_study_script
from kdray.config.run import EvalConfig, KDConfig, TrainConfig
from kdray.config.run_spec import RunSpec
from kdray.data.batches import collate, encode_example
from kdray.errors import ConfigError
from kdray.hub.zoo import HUB_MODELS
from kdray.study.memory import (
    estimate_teacher_server_memory,
    estimate_trial_memory,
    placement_estimates,
)
from kdray.teacher.placement import (
    ActorTeacher,
    ReplicaTeacher,
    needs_server,
    online_teacher,
    start_teacher_server,
)
from kdray.world.build import build_world
from kdray.world.synthetic_math import MathWorldConfig

SMALL = MathWorldConfig(train_size=16, validation_size=4, test_size=4)
TEACHER = "tiny-qwen2-m"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(SMALL, tmp_path_factory.mktemp("placement"))[0]


@pytest.fixture(scope="module")
def batch(world):
    tokenizer = world.tokenizer()
    examples = [encode_example(r, tokenizer, 64) for r in world.split("train")[:5]]
    return collate(examples, tokenizer.pad_token_id, "response")


def spec_for(world, placement: str, **kd) -> RunSpec:
    return RunSpec.in_world(
        world, "student", "tiny-qwen2-xs", TrainConfig(steps=1, batch_size=5),
        KDConfig(method="kd", teacher_placement=placement, **kd), EvalConfig(),
        teacher_dir=str(world.model_dir(TEACHER)),
    )  # fmt: skip


def replica_logits(world, batch) -> torch.Tensor:
    teacher = online_teacher(spec_for(world, "replica"), torch.device("cpu"))
    assert isinstance(teacher, ReplicaTeacher)
    return teacher.logits(batch["input_ids"], batch["attention_mask"])


def test_unknown_placement_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="unknown teacher_placement 'gpu0'.*replica, zero3"):
        KDConfig(method="kd", teacher_placement="gpu0")


def test_zero3_sharded_teacher_gives_the_replica_logits(world, batch, one_rank_process_group):
    """A one-rank gloo group: the teacher's weights are partitioned by a ZeRO-3 engine and
    gathered per layer in the forward, as on N ranks."""
    teacher = online_teacher(spec_for(world, "zero3"), torch.device("cpu"))
    parameter = next(teacher.engine.module.parameters())
    assert parameter.numel() == 0 and parameter.ds_numel > 0  # partitioned, not a copy
    sharded = teacher.logits(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(sharded, replica_logits(world, batch), rtol=1e-5, atol=1e-5)


def test_actor_teacher_serves_the_replica_logits(world, batch):
    spec = spec_for(world, "actor")
    assert needs_server(spec)
    assert not needs_server(spec_for(world, "replica"))
    assert not needs_server(dataclasses.replace(spec, teacher_cache="/some/cache"))
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        name, server = start_teacher_server(spec)
        try:
            served = dataclasses.replace(spec, teacher_server=name)
            teacher = online_teacher(served, torch.device("cpu"))
            assert isinstance(teacher, ActorTeacher)
            logits = teacher.logits(batch["input_ids"], batch["attention_mask"])
        finally:
            ray.kill(server)
    finally:
        if started_here:
            ray.shutdown()
    assert torch.equal(logits, replica_logits(world, batch))


def test_actor_placement_without_a_server_says_so(world):
    with pytest.raises(ValueError, match="needs a running server"):
        online_teacher(spec_for(world, "actor"), torch.device("cpu"))


def test_placements_move_the_teacher_off_or_across_the_training_gpus():
    student, teacher = HUB_MODELS["qwen2.5-1.5b"], HUB_MODELS["qwen2.5-14b"]
    replica = estimate_trial_memory(student, teacher, gpus=4, zero_stage=3)
    zero3 = estimate_trial_memory(student, teacher, gpus=4, zero_stage=3, teacher_placement="zero3")
    actor = estimate_trial_memory(student, teacher, gpus=4, zero_stage=3, teacher_placement="actor")
    full_teacher = teacher.parameters * 2 / 1024**3
    assert replica.teacher_weights == pytest.approx(full_teacher)
    assert zero3.teacher_weights == pytest.approx(full_teacher / 4)
    assert actor.teacher_weights == 0.0
    assert actor.logits == replica.logits  # the logits still reach every rank's loss
    assert actor.total < zero3.total < replica.total
    assert estimate_teacher_server_memory(teacher) > full_teacher


def test_placement_lines_give_gpus_and_memory_of_each_placement():
    lines = placement_estimates(HUB_MODELS["llama-3.1-8b"], HUB_MODELS["llama-3.1-70b"], 80.0)
    assert lines["replica"] == "does not fit on 8 x 80 GiB GPUs"
    assert lines["zero3"].startswith(("2 GPU(s)", "4 GPU(s)", "8 GPU(s)"))
    assert "teacher server's GPU" in lines["actor"] and "not supported" in lines["actor"]
    small = placement_estimates(HUB_MODELS["qwen2.5-0.5b"], HUB_MODELS["qwen2.5-7b"], 80.0)
    assert all(text.startswith("1 GPU(s)") for text in small.values())
    assert "not supported" not in small["actor"]


def test_study_trial_with_its_teacher_served_by_an_actor(tmp_path, shared_cache):
    result = run_study_script(
        "--smoke", "--students", "tiny-qwen2-xs", "--methods", "kd", "--teacher-signal",
        "online", "--teacher-placement", "actor", "--experiment", "kdray-actor",
        "--cache-dir", str(shared_cache),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("kdray-actor")
    runs = client.search_runs([experiment.experiment_id])
    kd = [r for r in runs if r.data.params.get("method") == "kd"]
    assert len(kd) == 1 and kd[0].info.status == "FINISHED"
    params = kd[0].data.params
    assert params["config.kd.teacher_placement"] == "actor"
    assert params["teacher_signal"] == "online"
    assert "1 trial(s) run the teacher online, placement actor" in result.stdout
    curve = client.get_metric_history(kd[0].info.run_id, "train_loss")
    assert len(curve) == 20 and all(0 < point.value < 1e3 for point in curve)
