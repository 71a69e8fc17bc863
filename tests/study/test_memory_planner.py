"""The memory planner: GPUs per trial, ZeRO stage and teacher placement for the paper's pairs
(estimates from the architecture numbers; no GPU needed)."""

import subprocess
import sys

import pytest

from kdray.cli.args import config_from_flags
from kdray.errors import ConfigError
from kdray.hub.zoo import hub_model, pairs
from kdray.study.memory import estimate_trial_memory, plan_trial
from kdray.study.plan import layout_needed


def plan(teacher, student, gpu_memory=80.0, **options):
    return plan_trial(hub_model(student), hub_model(teacher), gpu_memory, **options)


def test_14b_to_7b_on_80gb_gpus():
    lora = plan("qwen2.5-14b", "qwen2.5-7b")  # the study's recipe: LoRA
    assert (lora.gpus, lora.zero_stage, lora.teacher_placement) == (1, 2, "replica")
    assert 40 < lora.estimate.total < 80  # 14.2 student + 27.5 teacher + activations, logits
    full = plan("qwen2.5-14b", "qwen2.5-7b", finetune="full")
    # Full fine-tuning: Adam states alone are ~85 GiB, so one GPU cannot hold it; two GPUs do
    # only when both the student (ZeRO-3) and the teacher (zero3) are sharded.
    assert (full.gpus, full.zero_stage, full.teacher_placement) == (2, 3, "zero3")
    assert full.estimate.total <= 80
    for stage, placement in ((2, "zero3"), (3, "replica")):
        other = estimate_trial_memory(
            hub_model("qwen2.5-7b"), hub_model("qwen2.5-14b"), finetune="full", gpus=2,
            zero_stage=stage, teacher_placement=placement,
        )  # fmt: skip
        assert other.total > 80  # the cheaper layouts at 2 GPUs really do not fit


def test_every_paper_pair_gets_a_plan_that_fits():
    for teacher, student in pairs(None):
        chosen = plan_trial(student, teacher, 80.0)
        assert chosen.estimate.total <= 80
        if chosen.teacher_server_gib is not None:
            assert chosen.teacher_server_gib <= 80
        assert chosen.zero_stage in (2, 3)


def test_preferences_fewest_gpus_then_zero2_then_replica():
    small = plan("qwen2.5-3b", "qwen2.5-0.5b")
    assert (small.gpus, small.zero_stage, small.teacher_placement) == (1, 2, "replica")
    # 70B teacher: a replica would need 130+ GiB per GPU, so the teacher is sharded
    big = plan("llama-3.1-70b", "llama-3.1-8b")
    assert big.teacher_placement == "zero3" and big.gpus == 4 and big.zero_stage == 2
    # Forcing a placement is honoured
    forced = plan("qwen2.5-14b", "qwen2.5-7b", placements=("actor",))
    assert forced.teacher_placement == "actor" and forced.teacher_server_gib > 20
    sft = plan_trial(hub_model("qwen2.5-7b"), None, 80.0)
    assert sft.teacher_placement is None and sft.gpus == 1


def test_too_big_is_one_line_with_the_need():
    with pytest.raises(ConfigError, match=r"does not fit on 8 x 24 GiB GPUs .*at least 4\d GiB"):
        plan("llama-3.1-70b", "llama-3.1-8b", gpu_memory=24.0, finetune="full")


def test_the_study_uses_the_planners_layout():
    config = config_from_flags("paper", ["--domain", "math"])
    layout = layout_needed(config, "qwen2.5-7b", "qwen2.5-14b")
    assert layout.gpus == 1 and layout.zero_stage == config.student_train.zero_stage
    full = config_from_flags("paper", ["--finetune", "full"])
    layout = layout_needed(full, "qwen2.5-7b", "qwen2.5-14b")
    assert (layout.gpus, layout.zero_stage) == (2, 3)  # paper.py places teachers with zero3


def test_plan_memory_command_prints_the_plan_and_each_placement():
    result = subprocess.run(
        [sys.executable, "-m", "kdray", "plan-memory", "--teacher", "qwen2.5-14b",
         "--student", "qwen2.5-7b", "--finetune", "full"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "plan: 2 GPU(s), ZeRO-3, teacher zero3: 77.5 GiB per GPU" in result.stdout
    for placement in ("replica", "zero3", "actor"):
        assert f"teacher {placement}:" in result.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "kdray", "plan-memory", "--teacher", "qwen2.5-14b",
         "--student", "llama-3.2-1b"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
