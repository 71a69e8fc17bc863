"""The study's world on the tiny scale: two families, three domains, LoRA, the pair rules,
domain-aware scoring and the plan of the paper preset."""

import dataclasses

import pytest
import torch

from kdray.cli.args import config_from_flags
from kdray.config.run import TrainConfig
from kdray.errors import ConfigError
from kdray.eval.responses import agreement, answer_kind, score_responses, task_scores
from kdray.study.plan import format_plan, plan_pairs
from kdray.study.presets import TINY_WORLDS
from kdray.train.lora import merged_lora_model, trainable_parameters, with_lora
from kdray.world.build import build_world
from kdray.world.zoo import TINY_MODELS, family_models

SMALL = {
    domain: dataclasses.replace(config, train_size=300, validation_size=20, test_size=30)
    for domain, config in TINY_WORLDS.items()
}


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return {
        (domain, family): build_world(SMALL[domain], cache, family)[0]
        for domain, family in [("math", "qwen"), ("math", "llama"), ("commonsense", "qwen"),
                               ("instruction", "llama")]
    }  # fmt: skip


def test_two_families_of_four_sizes_with_their_architectures(worlds):
    assert len(family_models("qwen")) == 4 and len(family_models("llama")) == 4
    qwen, llama = worlds["math", "qwen"], worlds["math", "llama"]
    assert set(qwen.parameter_counts()) == set(family_models("qwen"))
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(llama.model_dir("tiny-llama-s")).model_type == "llama"
    assert AutoConfig.from_pretrained(qwen.model_dir("tiny-qwen2-s")).model_type == "qwen2"
    sizes = qwen.parameter_counts()
    assert sizes["tiny-qwen2-xs"] < sizes["tiny-qwen2-s"] < sizes["tiny-qwen2-m"]
    # Like Qwen2.5-7B+, the largest tiny Qwen's lm_head is wider than its tokenizer.
    vocab = qwen.manifest()["tokenizer_vocab"]
    assert qwen.lm_head_widths()["tiny-qwen2-l"] == vocab + 64
    assert qwen.lm_head_widths()["tiny-qwen2-s"] == vocab


def test_the_families_have_different_tokenizers(worlds):
    qwen, llama = worlds["math", "qwen"].tokenizer(), worlds["math", "llama"].tokenizer()
    assert qwen.eos_token != llama.eos_token
    text = "Tom has 3 apples."
    assert qwen.decode(qwen(text)["input_ids"]) == text == llama.decode(llama(text)["input_ids"])
    assert {spec.tokenizer for spec in TINY_MODELS.values()} == {"tiny-qwen", "tiny-llama"}


def test_every_domain_world_has_sub_tasks(worlds):
    for world in worlds.values():
        assert len(world.tasks()) >= 3, world.domain
        assert {r["task"] for r in world.split("test")} == set(world.tasks())


def test_lora_trains_only_adapters_and_merges_back(worlds):
    from transformers import AutoModelForCausalLM

    folder = worlds["math", "llama"].model_dir("tiny-llama-s")
    train = TrainConfig(finetune="lora")
    model = with_lora(AutoModelForCausalLM.from_pretrained(folder), train)
    total = sum(p.numel() for p in model.parameters())
    assert 0 < trainable_parameters(model) < total / 5
    for name, parameter in model.named_parameters():
        assert parameter.requires_grad == ("lora_" in name), name
    with torch.no_grad():  # adapters that do something: B starts at zero, so set it
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.1)
    ids = torch.tensor([[3, 4, 5, 6]])
    expected = model.eval()(input_ids=ids).logits  # eval: no LoRA dropout
    state = {k: v.clone() for k, v in model.state_dict().items()}
    merged = merged_lora_model(AutoModelForCausalLM.from_pretrained(folder), state, train)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(merged(input_ids=ids).logits, expected, atol=1e-4, rtol=1e-4)


def test_lora_refuses_targets_the_model_lacks(worlds):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(worlds["math", "qwen"].model_dir("tiny-qwen2-s"))
    with pytest.raises(ValueError, match="c_attn"):
        with_lora(model, TrainConfig(finetune="lora", lora_targets=("c_attn",)))


def test_answer_kind_follows_the_gold_form():
    assert answer_kind("math", "12") == "number"
    assert answer_kind("math", "C") == "letter"
    assert answer_kind("commonsense", "answer3") == "answer"
    assert answer_kind("commonsense", "option2") == "option"
    assert answer_kind("commonsense", "false") == "boolean"
    assert answer_kind("instruction", "cat dog") == "rouge_l"


def test_scoring_per_task_for_each_domain():
    examples = [
        {"answer": "answer2", "task": "arc-like"},
        {"answer": "true", "task": "boolq-like"},
        {"answer": "true", "task": "boolq-like"},
    ]
    responses = ["the correct answer is answer2", "false", "true, it is"]
    predictions = score_responses(examples, responses, "commonsense")
    assert task_scores(predictions) == {"arc-like": 100.0, "boolq-like": 50.0}
    teacher = score_responses(examples, ["answer2", "false", "false"], "commonsense")
    assert agreement(predictions, teacher, "commonsense") == pytest.approx(200 / 3)
    rouge = score_responses([{"answer": "cat dog", "task": "copy"}], ["cat dog"], "instruction")
    assert rouge[0].score == pytest.approx(100.0) and rouge[0].predicted is None


def test_epochs_set_the_step_count():
    train = TrainConfig(batch_size=4, grad_accum_steps=4, epochs=4)
    assert train.resolved_steps(9500, 1) == 2375
    assert train.resolved_steps(9500, 2) == 1188
    assert TrainConfig(steps=7).resolved_steps(9500, 1) == 7


def _config(*flags):
    return config_from_flags("temperature", flags)


def test_paper_preset_plans_the_21_pairs():
    config = _config("--preset", "paper", "--methods", "kd,revkd,seqkd,gkd", "--temperatures", "1")
    assert len(config.teacher_student_pairs()) == 21 and len(config.distinct_students()) == 8
    train = config.student_train
    assert (train.finetune, train.lora_rank, train.lora_alpha, train.lora_dropout) == (
        "lora", 8, 16, 0.05,
    )  # fmt: skip
    assert train.batch_size * train.grad_accum_steps == 16 and train.epochs == 4
    assert config.kd.ce_weight == 0 and config.kd.loss_tokens == "all"
    assert config.eval.decoding == "sampling" and config.eval.max_new_tokens == 256
    rows = plan_pairs(config)
    assert sum(r.trials for r in rows) == 8 + 21 * 4
    small = next(r for r in rows if (r.teacher, r.student) == ("qwen2.5-1.5b", "qwen2.5-0.5b"))
    assert small.gpus_per_trial == 1
    text = format_plan(config)
    assert "21 pairs, 8 students, 8 teachers" in text and "92 trials" in text
    assert _config("--preset", "paper", "--domain", "commonsense").student_train.epochs == 3


def test_plan_sizes_cached_trials_without_the_teacher_and_prints_placements():
    """A 70B teacher on every GPU does not fit; its cache (noise-free trials) or a sharded or
    served placement (noisy trials, online on a 128k vocabulary) does."""
    flags = ("--preset", "paper", "--teacher", "llama-3.1-70b", "--students", "llama-3.2-1b")
    flags += ("--temperatures", "1,2", "--methods", "kd,revkd")  # T = 5 runs online
    cached = plan_pairs(_config(*flags))[-1]
    assert cached.gpus_per_trial == 1 and "4 of 4 settings read the teacher cache" in cached.notes
    text = format_plan(_config(*flags))
    assert "llama-3.1-70b (2 GPUs per task)" in text and "per placement" not in text
    noisy = _config(*flags, "--noise-sigmas", "0,1")
    assert plan_pairs(noisy)[-1].gpus_per_trial is None  # replica: 131 GiB on every rank
    text = format_plan(noisy)
    assert "replica (chosen): does not fit on 8 x 80 GiB GPUs" in text
    assert "  zero3: 2 GPU(s)" in text and "  actor: 1 GPU(s)" in text
    sharded = _config(*flags, "--noise-sigmas", "0,1", "--teacher-placement", "zero3")
    assert plan_pairs(sharded)[-1].gpus_per_trial == 2


def test_paper_preset_narrows_to_a_family_or_teacher():
    assert len(_config("--preset", "paper", "--family", "llama").teacher_student_pairs()) == 6
    config = _config("--preset", "paper", "--teacher", "qwen2.5-7b")
    assert [s for _, s in config.teacher_student_pairs()] == [
        "qwen2.5-3b", "qwen2.5-1.5b", "qwen2.5-0.5b",
    ]  # fmt: skip


def test_tiny_preset_follows_domain_and_family():
    config = _config("--domain", "commonsense", "--family", "llama", "--finetune", "lora")
    assert config.teacher == "tiny-llama-m" and config.students == ("tiny-llama-xs", "tiny-llama-s")
    assert config.world == TINY_WORLDS["commonsense"] and config.student_train.finetune == "lora"
    assert config.teacher_train.finetune == "full"
    assert "| tiny-llama-m | tiny-llama-s |" in format_plan(config)


def test_pair_rules_on_the_hub_zoo():
    from kdray.hub.zoo import check_pair, hub_model

    with pytest.raises(ConfigError, match="do not share a tokenizer"):
        check_pair(hub_model("llama-3.1-8b"), hub_model("qwen2.5-0.5b"))
    notes = check_pair(hub_model("qwen2.5-7b"), hub_model("qwen2.5-0.5b"))
    assert any("151,665" in n for n in notes)
    assert any(
        "not larger" in n for n in check_pair(hub_model("qwen2.5-0.5b"), hub_model("qwen2.5-7b"))
    )


def test_best_weights_are_saved_and_restored(worlds):
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM

    from kdray.train.engine import load_trainable_state, trainable_state

    folder = worlds["math", "qwen"].model_dir("tiny-qwen2-xs")
    engine = SimpleNamespace(module=AutoModelForCausalLM.from_pretrained(folder))
    saved = trainable_state(engine, zero_stage=0)
    with torch.no_grad():
        for parameter in engine.module.parameters():
            parameter.add_(1.0)
    load_trainable_state(engine, 0, saved)
    for name, parameter in engine.module.named_parameters():
        torch.testing.assert_close(parameter, saved[name])
    # tied embeddings: lm_head shares the restored matrix
    assert (
        engine.module.lm_head.weight.data_ptr()
        == engine.module.model.embed_tokens.weight.data_ptr()
    )
