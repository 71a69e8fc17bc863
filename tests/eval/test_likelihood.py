"""Teacher-forced held-out metrics, checked against hand computations on a tiny model."""

import math

import pytest
import torch
import torch.nn.functional as F

from kdray.data.prompts import format_prompt
from kdray.eval.likelihood import _answer_span, held_out_metrics
from kdray.world.build import build_world
from kdray.world.synthetic_math import MathWorldConfig

SMALL = MathWorldConfig(train_size=200, validation_size=20, test_size=20)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(SMALL, tmp_path_factory.mktemp("cache"))[0]


def test_answer_span_is_the_first_whole_occurrence():
    record = {"output": "So 2 + 12 = 14. 14 - 3 = 11. The answer is 11.", "answer": "11"}
    start, end = _answer_span(record, "P:")
    assert ("P:" + record["output"])[start:end] == "11"
    assert start == len("P:") + record["output"].index("= 11") + 2
    assert _answer_span({"output": "no number", "answer": "7"}, "") is None


def test_nll_matches_a_hand_computation_and_kl_to_itself_is_zero(world):
    from transformers import AutoModelForCausalLM

    tokenizer = world.tokenizer()
    model = AutoModelForCausalLM.from_pretrained(str(world.model_dir("tiny-qwen2-xs"))).eval()
    records = world.split("test")[:5]
    metrics = held_out_metrics(model, tokenizer, records, teacher=model, batch_size=2)
    total, count = 0.0, 0
    for record in records:
        prompt = format_prompt(record)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = tokenizer(prompt + record["output"], add_special_tokens=False)["input_ids"]
        ids = torch.tensor([[*ids, tokenizer.eos_token_id]])
        with torch.no_grad():
            log_q = F.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        targets = ids[0, 1:]
        nll = -log_q[torch.arange(len(targets)), targets]
        total += nll[len(prompt_ids) - 1 :].sum().item()
        count += len(targets) - (len(prompt_ids) - 1)
    assert metrics["nll"] == pytest.approx(total / count, rel=1e-4)
    assert metrics["nll"] > math.log(2)  # an untrained model is far from the references
    assert metrics["kl_teacher_student"] == pytest.approx(0.0, abs=1e-5)
    assert 0 <= metrics["answer_token_accuracy"] <= 100
    assert "kl_teacher_student" not in held_out_metrics(model, tokenizer, records)


def test_teacher_rows_kept_by_one_evaluation_give_the_next_the_same_kl(world):
    """A worker evaluating a setting's seeds reuses the teacher's held-out log-probs: the
    metrics must be those of the teacher run afresh, to the bit."""
    from transformers import AutoModelForCausalLM

    tokenizer = world.tokenizer()
    student = AutoModelForCausalLM.from_pretrained(str(world.model_dir("tiny-qwen2-xs"))).eval()
    teacher = AutoModelForCausalLM.from_pretrained(str(world.model_dir("tiny-qwen2-s"))).eval()
    records = world.split("test")[:5]
    rows: list[torch.Tensor] = []
    first = held_out_metrics(student, tokenizer, records, teacher, batch_size=2, teacher_rows=rows)
    assert len(rows) == 3  # one tensor per batch of 2
    again = held_out_metrics(student, tokenizer, records, None, batch_size=2, teacher_rows=rows)
    online = held_out_metrics(student, tokenizer, records, teacher, batch_size=2)
    assert first == again == online
    assert first["kl_teacher_student"] > 0.01  # two different models


def test_nll_splits_into_the_tokens_where_the_teacher_is_unsure_and_the_rest(world):
    from transformers import AutoModelForCausalLM

    from kdray.eval.likelihood import UNSURE_NATS

    tokenizer = world.tokenizer()
    student = AutoModelForCausalLM.from_pretrained(str(world.model_dir("tiny-qwen2-xs"))).eval()
    teacher = AutoModelForCausalLM.from_pretrained(str(world.model_dir("tiny-qwen2-s"))).eval()
    records = world.split("test")[:5]
    metrics = held_out_metrics(student, tokenizer, records, teacher, batch_size=2)
    # An untrained teacher is unsure everywhere: every token is "unsure", none "sure".
    assert metrics["nll_teacher_unsure"] == pytest.approx(metrics["nll"], rel=1e-9)
    assert math.isnan(metrics["nll_teacher_sure"])
    # A teacher that is the reference itself (a one-hot at every position) is sure everywhere.
    sure = held_out_metrics(student, tokenizer, records, teacher_rows=[], batch_size=2)
    assert "nll_teacher_unsure" not in sure  # no teacher, no split
    rows = []
    held_out_metrics(student, tokenizer, records, student, batch_size=2, teacher_rows=rows)
    one_hot = [torch.full_like(r, -1e4).scatter(-1, r.argmax(-1, keepdim=True), 0.0) for r in rows]
    split = held_out_metrics(student, tokenizer, records, None, batch_size=2, teacher_rows=one_hot)
    assert math.isnan(split["nll_teacher_unsure"]) and UNSURE_NATS > 0
    assert split["nll_teacher_sure"] == pytest.approx(split["nll"], rel=1e-9)


def test_the_teacher_rows_memo_keeps_one_test_set_and_refuses_a_large_one(monkeypatch):
    from types import SimpleNamespace

    from kdray.eval import evaluate

    def spec(teacher: str):
        eval_config = SimpleNamespace(batch_size=250)
        return SimpleNamespace(eval_teacher_dir=teacher, data_dir="d", eval=eval_config)

    tokenizer, test = [0] * 300, [{"output": "So 2 + 3 = 5. The answer is 5."}] * 10
    rows = evaluate.teacher_rows_memo(spec("a"), tokenizer, test)
    assert rows == [] and evaluate.teacher_rows_memo(spec("a"), tokenizer, test) is rows
    rows.append(torch.zeros(1))
    assert evaluate.teacher_rows_memo(spec("b"), tokenizer, test) == []  # another teacher
    assert evaluate.teacher_rows_memo(spec("a"), tokenizer, test) == []  # "a" was dropped
    monkeypatch.setattr(evaluate, "HELD_OUT_ROWS_LIMIT", 1000)
    assert evaluate.teacher_rows_memo(spec("a"), tokenizer, test) is None
