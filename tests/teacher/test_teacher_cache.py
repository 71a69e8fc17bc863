"""The teacher log-prob cache: which trials use it, exactness against the online teacher,
hits and misses, corruption detected and rebuilt, and concurrent builders."""

import dataclasses
import multiprocessing
from pathlib import Path

import pytest
import torch

from kdray.cache import CacheCorruptError, build_once, verify_checksums
from kdray.config.run import KDConfig
from kdray.data.batches import collate, encode_example
from kdray.errors import ConfigError
from kdray.losses.divergences import SparseTeacher, restrict_to_vocab, training_loss
from kdray.models import load_model
from kdray.teacher.cache import (
    CacheRequest,
    TeacherCache,
    build_teacher_cache,
    local_shard_runner,
    opened_cache,
    scored_span,
)
from kdray.teacher.signal import CACHE_FULL, CACHE_TOP_K, NONE, ONLINE, choose_teacher_signal
from kdray.world.build import build_world
from kdray.world.synthetic_math import MathWorldConfig

SMALL = MathWorldConfig(train_size=40, validation_size=12, test_size=4)
TEACHER = "tiny-qwen2-m"


@pytest.mark.parametrize(
    "kd, vocab, kind",
    [
        (KDConfig(method="sft"), 300, NONE),
        (KDConfig(method="seqkd"), 300, NONE),
        (KDConfig(method="seqkd", seqkd_kd_weight=0.5), 300, CACHE_FULL),
        (KDConfig(method="kd", temperature=5, noise_sigma=2), 300, CACHE_FULL),
        (KDConfig(method="kd", teacher_signal="online"), 300, ONLINE),
        (KDConfig(method="gkd", on_policy_fraction=0.5), 300, ONLINE),
        (KDConfig(method="gkd", on_policy_fraction=0.0), 300, CACHE_FULL),
        (KDConfig(method="revkd"), 151_665, CACHE_TOP_K),
        (KDConfig(method="kd", noise_sigma=1), 151_665, ONLINE),
        (KDConfig(method="kd", temperature=2), 151_665, CACHE_TOP_K),
        (KDConfig(method="kd", temperature=5), 151_665, ONLINE),
        (
            KDConfig(
                method="gkd", temperature=5, gkd_temperature_in_loss=False, on_policy_fraction=0
            ),
            151_665,
            CACHE_TOP_K,
        ),
        (KDConfig(method="kd", cache_full_vocab_limit=0), 300, CACHE_TOP_K),
    ],
)
def test_signal_rules(kd, vocab, kind):
    signal = choose_teacher_signal(kd, vocab)
    assert signal.kind == kind, signal.reason
    assert signal.reason
    assert (signal.top_k is not None) == (kind == CACHE_TOP_K)


@pytest.mark.parametrize(
    "kd",
    [
        KDConfig(method="kd", noise_sigma=1, teacher_signal="cache"),
        KDConfig(method="gkd", on_policy_fraction=0.5, teacher_signal="cache"),
        KDConfig(method="kd", temperature=5, teacher_signal="cache"),
    ],
)
def test_a_required_cache_that_cannot_be_exact_is_refused(kd):
    with pytest.raises(ConfigError, match="teacher_signal=cache is not possible"):
        choose_teacher_signal(kd, 151_665)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(SMALL, tmp_path_factory.mktemp("cache"))[0]


@pytest.fixture(scope="module")
def tokenizer(world):
    return world.tokenizer()


@pytest.fixture(scope="module")
def examples(world, tokenizer):
    return {
        split: [encode_example(r, tokenizer, 64) for r in world.split(split)]
        for split in ("train", "validation")
    }


def request_for(world, tokenizer, examples, top_k=None, loss_tokens="response"):
    return CacheRequest(
        teacher_dir=str(world.model_dir(TEACHER)),
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        loss_tokens=loss_tokens,
        top_k=top_k,
        splits=examples,
    )


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def online_and_cached(world, tokenizer, examples, cache_folder, loss_tokens, split="train"):
    chosen_indices = [3, 0, 7, 11]
    chosen = [examples[split][i] for i in chosen_indices]
    batch = collate(chosen, tokenizer.pad_token_id, loss_tokens)
    teacher = load_model(str(world.model_dir(TEACHER)), torch.device("cpu")).eval()
    with torch.no_grad():
        online = restrict_to_vocab(
            teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
            len(tokenizer),
        )
    cache = TeacherCache(cache_folder, loss_tokens)
    cached = cache.signal(split, chosen_indices, chosen, batch["input_ids"].shape[1])
    return batch, online, cached


@pytest.mark.parametrize("loss_tokens", ["response", "all"])
def test_full_cache_gives_the_online_losses(world, tokenizer, examples, tmp_path, loss_tokens):
    request = request_for(world, tokenizer, examples, loss_tokens=loss_tokens)
    folder, built = build_teacher_cache(request, tmp_path, local_shard_runner)
    assert built
    for split in ("train", "validation"):
        batch, online, cached = online_and_cached(
            world, tokenizer, examples, folder, loss_tokens, split
        )
        torch.manual_seed(0)
        student = torch.randn_like(online)
        for kd in [
            KDConfig(method="kd", temperature=2, noise_sigma=1, loss_tokens=loss_tokens),
            KDConfig(method="revkd", temperature=5, loss_tokens=loss_tokens),
            KDConfig(method="gkd", beta=0.3, noise_sigma=5, loss_tokens=loss_tokens),
            KDConfig(method="skew_fkl", temperature=1, ce_weight=0.5, loss_tokens=loss_tokens),
        ]:
            losses = [
                training_loss(student, batch["labels"], kd, teacher, seeded(1))[0]
                for teacher in (online, cached)
            ]
            assert torch.allclose(losses[0], losses[1], rtol=1e-5, atol=1e-6), (kd, losses)


def test_top_k_cache_is_exact_on_its_support(world, tokenizer, examples, tmp_path):
    vocab = len(tokenizer)
    # k = vocab - 1: the tail bucket is one token, so the buckets are the whole distribution.
    exact, _ = build_teacher_cache(
        request_for(world, tokenizer, examples, top_k=vocab - 1), tmp_path, local_shard_runner
    )
    batch, online, cached = online_and_cached(world, tokenizer, examples, exact, "response")
    assert isinstance(cached, SparseTeacher) and cached.log_probs.shape[-1] == vocab - 1
    student = torch.randn_like(online)
    for kd in [KDConfig(method="kd", temperature=2), KDConfig(method="revkd", temperature=5)]:
        full = training_loss(student, batch["labels"], kd, online)[0]
        sparse = training_loss(student, batch["labels"], kd, cached)[0]
        assert torch.allclose(full, sparse, rtol=1e-4), (kd, full, sparse)
    # A small k coarsens the distributions: forward KL over buckets is a lower bound.
    small, _ = build_teacher_cache(
        request_for(world, tokenizer, examples, top_k=8), tmp_path, local_shard_runner
    )
    assert small != exact
    batch, online, cached = online_and_cached(world, tokenizer, examples, small, "response")
    kd = KDConfig(method="kd", temperature=1)
    full = training_loss(student, batch["labels"], kd, online)[0]
    sparse = training_loss(student, batch["labels"], kd, cached)[0]
    assert 0 < sparse <= full + 1e-6
    with pytest.raises(ValueError, match="cannot carry noise"):
        training_loss(student, batch["labels"], dataclasses.replace(kd, noise_sigma=1), cached)


def test_cache_hit_and_miss(world, tokenizer, examples, tmp_path):
    request = request_for(world, tokenizer, examples)
    first, built_first = build_teacher_cache(request, tmp_path, local_shard_runner)
    second, built_second = build_teacher_cache(request, tmp_path, local_shard_runner)
    assert built_first and not built_second and first == second
    fewer = dataclasses.replace(request, splits={"train": examples["train"][:20]})
    third, built_third = build_teacher_cache(fewer, tmp_path, local_shard_runner)
    assert built_third and third != first
    assert TeacherCache(third, "response").manifest["splits"]["train"]["examples"] == 20


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_shard_is_detected_and_rebuilt(world, tokenizer, examples, tmp_path, damage):
    request = request_for(world, tokenizer, examples, top_k=16)
    folder, _ = build_teacher_cache(request, tmp_path, local_shard_runner)
    shard = folder / "train-00000.safetensors"
    payload = shard.read_bytes()
    if damage == "truncate":
        shard.write_bytes(payload[: len(payload) // 2])
    elif damage == "flip":
        shard.write_bytes(payload[:-10] + bytes(b ^ 1 for b in payload[-10:]))
    else:
        shard.unlink()
    with pytest.raises(CacheCorruptError, match="train-00000"):
        TeacherCache(folder, "response")
    said = []
    again, built = build_teacher_cache(
        request, tmp_path, local_shard_runner, on_rebuild=said.append
    )
    assert built and again == folder and "rebuilding" in said[0]
    assert shard.read_bytes() == payload
    TeacherCache(folder, "response")  # verifies


def test_cache_of_another_loss_setting_is_refused(world, tokenizer, examples, tmp_path):
    folder, _ = build_teacher_cache(
        request_for(world, tokenizer, examples), tmp_path, local_shard_runner
    )
    with pytest.raises(CacheCorruptError, match="another setting"):
        TeacherCache(folder, "all")


def test_rows_follow_the_scored_positions(examples):
    example = examples["train"][0]
    start, rows = scored_span(example, "response")
    assert start == example.prompt_length - 1
    assert start + rows == len(example.input_ids) - 1
    assert scored_span(example, "all") == (0, len(example.input_ids) - 1)


def _build_in_process(args):
    request, cache_root = args
    folder, built = build_teacher_cache(request, Path(cache_root), local_shard_runner)
    return str(folder), built


def test_two_builders_at_once_build_one_intact_cache(world, tokenizer, examples, tmp_path):
    request = request_for(world, tokenizer, examples, top_k=32)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        outcomes = pool.map(_build_in_process, [(request, str(tmp_path))] * 2)
    assert outcomes[0][0] == outcomes[1][0]
    assert sorted(built for _, built in outcomes) == [False, True]
    TeacherCache(outcomes[0][0], "response")  # verifies every shard
    leftovers = [p.name for p in (tmp_path / "teacher_cache").iterdir() if "partial" in p.name]
    assert leftovers == []


def test_any_cache_folder_is_checksummed_and_rebuilt_when_damaged(tmp_path):
    builds = []

    def build(staging: Path) -> None:
        builds.append(staging)
        (staging / "weights").mkdir(parents=True)
        (staging / "weights" / "model.safetensors").write_bytes(b"x" * 1000)

    folder, built = build_once(tmp_path / "teacher", build)
    verify_checksums(folder)
    (folder / "weights" / "model.safetensors").write_bytes(b"x" * 999)
    with pytest.raises(CacheCorruptError, match="model.safetensors"):
        verify_checksums(folder)
    assert build_once(tmp_path / "teacher", build) == (folder, False)  # not verified: reused
    said = []
    assert build_once(tmp_path / "teacher", build, verify=True, on_rebuild=said.append)[1]
    assert len(builds) == 2 and "rebuilding" in said[0]
    verify_checksums(folder)


def test_a_process_opens_a_cache_once_and_keeps_only_the_last(world, tokenizer, examples, tmp_path):
    request = request_for(world, tokenizer, examples)
    folder, _ = build_teacher_cache(request, tmp_path, local_shard_runner)
    fewer = dataclasses.replace(request, splits={"train": examples["train"][:20]})
    other, _ = build_teacher_cache(fewer, tmp_path, local_shard_runner)
    first = opened_cache(folder, "response")
    assert opened_cache(folder, "response") is first  # a Train run's next KD run
    assert opened_cache(other, "response") is not first
    assert opened_cache(folder, "response") is not first  # one kept at a time: read again
    with pytest.raises(CacheCorruptError, match="another setting"):
        opened_cache(folder, "all")  # still checked against the run's setting
