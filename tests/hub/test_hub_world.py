"""The study's own world, without a download: the data folder built from LLM-Adapters files
the test writes, and the paper preset's trial plans over the hub zoo (hub ids, GPUs per
trial, ZeRO-3 where a trial needs several GPUs)."""

import json

import pytest

from kdray.cli.args import config_from_flags
from kdray.errors import ConfigError
from kdray.hub.tasks import tasks_for_domain
from kdray.hub.world import HubData, build_hub_world, hold_out
from kdray.study.trials import trial_plans


def _write(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records))


def _record(question, answer):
    return {"instruction": question, "input": "", "output": f"... {answer}", "answer": answer}


@pytest.fixture
def math_data(tmp_path):
    root = tmp_path / "llm-adapters"
    for spec in tasks_for_domain("math"):
        gold = "B" if spec.answer_kind == "letter" else "7.0"
        _write(
            root / spec.folder / "test.json", [_record(f"{spec.name} {i}?", gold) for i in range(3)]
        )
    train = [_record(f"train {i}?", str(i)) for i in range(60)]
    train[5]["answer"] = ""  # no usable gold: never held out for validation
    _write(root / "math_10k.json", train)
    return root


def test_the_data_folder_has_train_validation_and_every_task(math_data, tmp_path):
    world, built = build_hub_world(HubData("math", str(math_data), 20), tmp_path / "cache")
    again, built_again = build_hub_world(HubData("math", str(math_data), 20), tmp_path / "cache")
    assert built and not built_again and again.root == world.root
    train = json.loads((world.data_dir / "train.json").read_text())
    validation = json.loads((world.data_dir / "validation.json").read_text())
    test = json.loads((world.data_dir / "test.json").read_text())
    assert len(train) == 40 and len(validation) == 20
    assert not {r["instruction"] for r in train} & {r["instruction"] for r in validation}
    assert all(r["answer"] for r in validation)
    assert world.tasks() == [s.name for s in tasks_for_domain("math")]
    assert len(test) == 6 * 3 and {r["task"] for r in test} == set(world.tasks())
    assert world.model_dir("qwen2.5-7b") == "Qwen/Qwen2.5-7B"
    assert world.built_model("qwen2.5-7b").vocab_size == 152_064


def test_hold_out_refuses_more_validation_items_than_usable_golds():
    records = [_record("q", "1"), _record("r", "")]
    with pytest.raises(ConfigError, match="1 items with a usable answer"):
        hold_out(records, "math", 2, seed=0)


def test_paper_trials_run_on_hub_ids_with_the_gpus_they_need(math_data, tmp_path):
    config = config_from_flags(
        "temperature",
        ["--preset", "paper", "--family", "qwen", "--methods", "kd,seqkd", "--temperatures", "1"]
        + ["--noise-sigmas", "0,1"],
    )
    world, _ = build_hub_world(HubData("math", str(math_data), 20), tmp_path / "cache")
    plans = trial_plans(config, world)
    assert len(plans) == 5 + 15 * 3  # sft per student + (kd at sigma 0 and 1, seqkd) per pair
    assert len({p["key"] for p in plans}) == len(plans)
    by_key = {p["key"]: p for p in plans}
    # Noise on a 152k vocabulary runs the 32B teacher online: it needs more than one GPU.
    big = by_key["qwen2.5-32b>qwen2.5-14b|kd|T=1|sigma=1|seed=6"]
    assert big["spec"].init_dir == "Qwen/Qwen2.5-14B" and big["teacher"] == "qwen2.5-32b"
    assert big["spec"].tokenizer_dir == "Qwen/Qwen2.5-14B"
    assert big["spec"].train.num_workers > 1 and big["spec"].train.zero_stage == 3
    cached = by_key["qwen2.5-32b>qwen2.5-14b|kd|T=1|sigma=0|seed=6"]  # reads the top-k cache
    assert cached["spec"].train.num_workers == 1
    assert big["params"]["vocab_compared"] == 151_665
    small = by_key["qwen2.5-1.5b>qwen2.5-0.5b|kd|T=1|sigma=0|seed=6"]
    assert small["spec"].train.num_workers == 1 and small["spec"].train.use_gpu
    sft = by_key["qwen2.5-0.5b|sft|T=1|sigma=0|seed=6"]
    assert sft["teacher"] is None and sft["params"]["teacher"] == ""
