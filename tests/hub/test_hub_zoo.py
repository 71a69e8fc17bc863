"""The hub model zoo, its pairs, and the per-trial memory estimate (pure arithmetic, no
downloads)."""

from dataclasses import dataclass

import pytest

from kdray.errors import ConfigError
from kdray.hub.zoo import FAMILIES, HUB_MODELS, check_pair, hub_model, pairs
from kdray.study.memory import estimate_trial_memory, plan_trial, training_layout

# Sizes the model cards publish (billions of parameters).
PUBLISHED = {
    "qwen2.5-0.5b": 0.49,
    "qwen2.5-1.5b": 1.54,
    "qwen2.5-3b": 3.09,
    "qwen2.5-7b": 7.62,
    "qwen2.5-14b": 14.7,
    "qwen2.5-32b": 32.5,
    "llama-3.2-1b": 1.24,
    "llama-3.2-3b": 3.21,
    "llama-3.1-8b": 8.03,
    "llama-3.1-70b": 70.6,
}


def test_zoo_has_the_ten_models_of_the_study():
    assert set(HUB_MODELS) == set(PUBLISHED)
    assert hub_model("llama-3.1-8b").hub_id == "meta-llama/Llama-3.1-8B"
    assert hub_model("qwen2.5-0.5b").hub_id == "Qwen/Qwen2.5-0.5B"


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_matches_the_published_size(name):
    computed = HUB_MODELS[name].parameters / 1e9
    assert computed == pytest.approx(PUBLISHED[name], rel=0.02)


def test_21_pairs_within_families_teacher_always_larger():
    found = pairs()
    assert len(found) == 21
    assert len(pairs("qwen")) == 15 and len(pairs("llama")) == 6
    assert len({(t.name, s.name) for t, s in found}) == 21
    for teacher, student in found:
        assert teacher.family == student.family
        assert teacher.tokenizer == student.tokenizer
        assert teacher.parameters > student.parameters
    # Family, then teacher size descending, then student size descending.
    keys = [(FAMILIES.index(t.family), -t.parameters, -s.parameters) for t, s in found]
    assert keys == sorted(keys)
    assert (found[0][0].name, found[0][1].name) == ("qwen2.5-32b", "qwen2.5-14b")


def test_unknown_family_or_model_is_a_one_line_config_error():
    with pytest.raises(ConfigError):
        pairs("gpt")
    with pytest.raises(ConfigError, match="known: qwen2.5-0.5b"):
        hub_model("qwen2.5-72b")


def test_lm_head_width_difference_is_noted_only_where_it_exists():
    notes = check_pair(HUB_MODELS["qwen2.5-7b"], HUB_MODELS["qwen2.5-0.5b"])
    assert len(notes) == 1
    assert "152,064 vs 151,936" in notes[0] and "151,665 tokens" in notes[0]
    assert check_pair(HUB_MODELS["qwen2.5-1.5b"], HUB_MODELS["qwen2.5-0.5b"]) == []


def test_cross_tokenizer_pair_raises_one_line():
    with pytest.raises(ConfigError) as raised:
        check_pair(HUB_MODELS["llama-3.1-8b"], HUB_MODELS["qwen2.5-0.5b"])
    message = str(raised.value)
    assert "\n" not in message
    assert "do not share a tokenizer" in message and "kdray pairs" in message


def test_smaller_teacher_warns():
    notes = check_pair(HUB_MODELS["llama-3.2-1b"], HUB_MODELS["llama-3.1-8b"])
    assert any("not larger" in note for note in notes)


def test_check_pair_takes_any_model_with_the_protocol_attributes():
    @dataclass(frozen=True)
    class Tiny:
        name: str
        parameters: int
        tokenizer: str = "tiny-math"
        vocab_size: int = 64
        tokenizer_vocab: int = 64

    assert check_pair(Tiny("m", 2_000), Tiny("s", 1_000)) == []
    with pytest.raises(ConfigError):
        check_pair(Tiny("m", 2_000, tokenizer="other"), Tiny("s", 1_000))


def test_memory_grows_with_model_size():
    qwen = sorted(
        (m for m in HUB_MODELS.values() if m.family == "qwen"), key=lambda m: m.parameters
    )
    totals = [estimate_trial_memory(m, None).total for m in qwen]
    assert totals == sorted(totals) and len(set(totals)) == len(totals)
    student = HUB_MODELS["qwen2.5-0.5b"]
    with_teachers = [estimate_trial_memory(student, t).total for t in qwen[1:]]
    assert with_teachers == sorted(with_teachers)


def test_zero3_on_two_gpus_needs_less_per_gpu_than_one():
    teacher, student = HUB_MODELS["qwen2.5-14b"], HUB_MODELS["qwen2.5-3b"]
    for finetune in ("lora", "full"):
        one = estimate_trial_memory(student, teacher, finetune=finetune)
        two = estimate_trial_memory(student, teacher, finetune=finetune, zero_stage=3, gpus=2)
        assert two.total < one.total
        assert two.student_weights == pytest.approx(one.student_weights / 2)


def test_full_finetuning_adds_optimizer_states():
    student = HUB_MODELS["qwen2.5-1.5b"]
    lora = estimate_trial_memory(student, None)
    full = estimate_trial_memory(student, None, finetune="full")
    # 12 bytes of AdamW state + 2 of gradient per parameter.
    assert full.trainable_optimizer == pytest.approx(student.parameters * 14 / 1024**3)
    assert lora.trainable_optimizer < 0.01 * full.trainable_optimizer


def test_gpus_per_trial_on_80_gib_gpus():
    assert plan_trial(HUB_MODELS["qwen2.5-0.5b"], HUB_MODELS["qwen2.5-1.5b"]).gpus == 1
    pair = HUB_MODELS["llama-3.1-8b"], HUB_MODELS["llama-3.1-70b"]
    assert plan_trial(*pair, placements=("zero3",)).gpus > 1
    assert training_layout(*pair) is None  # a whole 70B teacher on every GPU
    with pytest.raises(ConfigError, match="does not fit on 8 x 80 GiB.*teacher placement replica"):
        plan_trial(*pair, placements=("replica",))
    with pytest.raises(ConfigError, match="even on 8 GPUs"):
        plan_trial(*pair, 8.0, placements=("zero3",))
