"""Conformance suite for every KD loss: closed forms, gradients against autograd of naive
references, beta and alpha edge cases, T^2, masks, gradient accumulation, bf16, noise."""

import math

import pytest
import torch

from kdray.config.run import KDConfig
from kdray.data.batches import IGNORE_INDEX
from kdray.errors import ConfigError, LossShapeError
from kdray.losses.divergences import (
    SparseTeacher,
    add_teacher_noise,
    cross_entropy,
    forward_kl_per_token,
    generalized_jsd_per_token,
    reverse_kl_per_token,
    skew_forward_kl_per_token,
    skew_reverse_kl_per_token,
    sparse_divergence,
    tempered_divergence,
    training_loss,
)

P = (0.5, 0.5)  # teacher
Q = (0.75, 0.25)  # student


def kl(a, b):
    return sum(x * math.log(x / y) for x, y in zip(a, b, strict=True))


def mix(a, b, weight_a):
    return tuple(weight_a * x + (1 - weight_a) * y for x, y in zip(a, b, strict=True))


def logs(dist):
    return torch.log(torch.tensor([dist], dtype=torch.float32))


CLOSED_FORMS = [
    ("forward_kl", lambda q, p: forward_kl_per_token(q, p), kl(P, Q)),
    ("reverse_kl", lambda q, p: reverse_kl_per_token(q, p), kl(Q, P)),
    ("skew_fkl_0.1", lambda q, p: skew_forward_kl_per_token(q, p, 0.1), kl(P, mix(P, Q, 0.1))),
    ("skew_rkl_0.1", lambda q, p: skew_reverse_kl_per_token(q, p, 0.1), kl(Q, mix(Q, P, 0.1))),
    (
        "gjsd_0.5",
        lambda q, p: generalized_jsd_per_token(q, p, 0.5),
        0.5 * kl(P, mix(P, Q, 0.5)) + 0.5 * kl(Q, mix(P, Q, 0.5)),
    ),
    (
        "gjsd_0.3",
        lambda q, p: generalized_jsd_per_token(q, p, 0.3),
        0.3 * kl(P, mix(P, Q, 0.3)) + 0.7 * kl(Q, mix(P, Q, 0.3)),
    ),
]


@pytest.mark.parametrize(("name", "divergence", "expected"), CLOSED_FORMS)
def test_closed_forms(name, divergence, expected):
    assert divergence(logs(Q), logs(P)).item() == pytest.approx(expected, rel=1e-5)


def test_beta_edges_are_forward_and_reverse_kl_and_their_limits():
    q, p = logs(Q), logs(P)
    assert generalized_jsd_per_token(q, p, 0.0).item() == pytest.approx(kl(P, Q), rel=1e-6)
    assert generalized_jsd_per_token(q, p, 1.0).item() == pytest.approx(kl(Q, P), rel=1e-6)
    small = 1e-3
    q64, p64 = q.double(), p.double()
    near_zero = generalized_jsd_per_token(q64, p64, small).item() / small
    near_one = generalized_jsd_per_token(q64, p64, 1 - small).item() / small
    assert near_zero == pytest.approx(kl(P, Q), rel=1e-2)
    assert near_one == pytest.approx(kl(Q, P), rel=1e-2)


def test_skew_alpha_zero_is_plain_kl():
    torch.manual_seed(0)
    q, p = torch.log_softmax(torch.randn(4, 9), -1), torch.log_softmax(torch.randn(4, 9), -1)
    assert torch.allclose(skew_forward_kl_per_token(q, p, 0.0), forward_kl_per_token(q, p))
    assert torch.allclose(skew_reverse_kl_per_token(q, p, 0.0), reverse_kl_per_token(q, p))


# --- naive references: whole tensors, plain softmax/log, autograd does the rest


def naive(method, student, teacher, mask, kd):
    temperature = kd.temperature
    if method == "gkd" and not kd.gkd_temperature_in_loss:
        temperature = 1.0
    q = torch.softmax(student.double() / temperature, -1)
    p = torch.softmax(teacher.double() / temperature, -1)
    if method == "kd":
        per_token = (p * (p.log() - q.log())).sum(-1)
    elif method == "revkd":
        per_token = (q * (q.log() - p.log())).sum(-1)
    elif method == "skew_fkl":
        m = kd.skew_alpha * p + (1 - kd.skew_alpha) * q
        per_token = (p * (p.log() - m.log())).sum(-1)
    elif method == "skew_rkl":
        m = (1 - kd.skew_alpha) * p + kd.skew_alpha * q
        per_token = (q * (q.log() - m.log())).sum(-1)
    else:
        m = kd.beta * p + (1 - kd.beta) * q
        per_token = kd.beta * (p * (p.log() - m.log())).sum(-1) + (1 - kd.beta) * (
            q * (q.log() - m.log())
        ).sum(-1)
    scale = temperature**2 if (kd.scale_by_t2 and temperature != 1.0) else 1.0
    return (per_token * mask).sum() / mask.sum() * scale


DIVERGENCE_METHODS = ["kd", "revkd", "skew_fkl", "skew_rkl", "gkd"]


def random_batch(seed=0, batch=3, seq=6, vocab=11):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, seq, vocab, generator=generator)
    teacher = 2 * torch.randn(batch, seq, vocab, generator=generator)
    labels = torch.randint(0, vocab, (batch, seq), generator=generator)
    labels[0, :2] = IGNORE_INDEX  # a prompt
    labels[-1, 4:] = IGNORE_INDEX  # padding
    return student, teacher, labels


@pytest.mark.parametrize("method", DIVERGENCE_METHODS)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_loss_and_gradient_match_autograd_of_naive_reference(method, temperature):
    student, teacher, labels = random_batch()
    kd = KDConfig(method, temperature=temperature, beta=0.3, skew_alpha=0.2, chunk_tokens=4)
    leaf = student.clone().requires_grad_()
    loss, _ = training_loss(leaf, labels, kd, teacher)
    loss.backward()
    reference_leaf = student.clone().double().requires_grad_()
    mask = (labels[:, 1:] != IGNORE_INDEX).double()
    reference = naive(method, reference_leaf[:, :-1], teacher[:, :-1], mask, kd)
    reference.backward()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    assert torch.allclose(leaf.grad.double(), reference_leaf.grad, atol=1e-6)


@pytest.mark.parametrize("method", ["sft", *DIVERGENCE_METHODS, "seqkd"])
def test_chunk_size_changes_nothing(method):
    student, teacher, labels = random_batch(seed=1)
    results = []
    for chunk in (1, 5, 1000):
        leaf = student.clone().requires_grad_()
        kd = KDConfig(method, temperature=2.0, chunk_tokens=chunk, seqkd_kd_weight=0.5)
        loss, _ = training_loss(leaf, labels, kd, teacher)
        loss.backward()
        results.append((loss.item(), leaf.grad))
    for loss, grad in results[1:]:
        assert loss == pytest.approx(results[0][0], rel=1e-6)
        assert torch.allclose(grad, results[0][1], atol=1e-7)


@pytest.mark.parametrize("method", ["sft", *DIVERGENCE_METHODS, "seqkd"])
def test_padding_never_changes_any_loss(method):
    student, teacher, labels = random_batch(seed=2, batch=1)
    kd = KDConfig(method, temperature=2.0, seqkd_kd_weight=0.5)
    padded_student = torch.cat([student, 50 * torch.randn(1, 3, 11)], dim=1)
    padded_teacher = torch.cat([teacher, -50 * torch.randn(1, 3, 11)], dim=1)
    padded_labels = torch.cat([labels, torch.full((1, 3), IGNORE_INDEX)], dim=1)
    plain, _ = training_loss(student, labels, kd, teacher)
    padded, _ = training_loss(padded_student, padded_labels, kd, padded_teacher)
    assert padded.item() == pytest.approx(plain.item(), rel=1e-6)


def test_gkd_temperature_flag_reproduces_the_studys_code():
    student, teacher, labels = random_batch(seed=3)
    at_t1, _ = training_loss(student, labels, KDConfig("gkd", temperature=1.0), teacher)
    ignored, _ = training_loss(
        student, labels, KDConfig("gkd", temperature=5.0, gkd_temperature_in_loss=False), teacher
    )
    applied, _ = training_loss(student, labels, KDConfig("gkd", temperature=5.0), teacher)
    assert ignored.item() == pytest.approx(at_t1.item(), rel=1e-6)
    assert applied.item() != pytest.approx(at_t1.item(), rel=1e-3)


@pytest.mark.parametrize("method", ["sft", "kd", "gkd", "seqkd"])
def test_accumulated_gradient_does_not_depend_on_micro_batch_size(method):
    """Micro-batches divide by the whole step's token count, so their summed gradient equals
    the full batch's, however the batch is split (and however its tokens are spread)."""
    torch.manual_seed(4)
    head = torch.nn.Linear(8, 11)
    hidden = torch.randn(6, 7, 8)
    teacher = torch.randn(6, 7, 11)
    labels = torch.randint(0, 11, (6, 7))
    labels[0, 3:] = IGNORE_INDEX
    labels[4, 1:] = IGNORE_INDEX
    kd = KDConfig(method, temperature=2.0, seqkd_kd_weight=0.5)
    total_tokens = (labels[:, 1:] != IGNORE_INDEX).sum()

    def accumulated_grad(split):
        head.zero_grad()
        for rows in torch.split(torch.arange(6), split):
            loss, _ = training_loss(
                head(hidden[rows]), labels[rows], kd, teacher[rows], normalizer=total_tokens
            )
            loss.backward()
        return head.weight.grad.clone()

    full = accumulated_grad(6)
    for split in (1, 2, 4):
        assert torch.allclose(accumulated_grad(split), full, atol=1e-6)


def test_bf16_inputs_are_computed_in_fp32_and_jsd_is_never_negative():
    torch.manual_seed(5)
    logits = torch.randn(4, 16, 257).bfloat16()
    labels = torch.randint(0, 257, (4, 16))
    for beta in (0.0, 0.1, 0.5, 0.9, 1.0):
        loss, _ = training_loss(logits, labels, KDConfig("gkd", beta=beta), logits.clone())
        assert loss.dtype == torch.float32
        assert loss.item() >= 0.0
    q = torch.log_softmax(logits.float(), -1)
    assert (generalized_jsd_per_token(q, q.clone(), 0.5) >= 0).all()


def test_noise_is_seeded_absent_at_zero_and_tempered_placement_scales_by_t():
    logits = torch.zeros(2, 30, 40)
    assert add_teacher_noise(logits, 0.0, None, 2.0, "tempered") is logits
    raw = add_teacher_noise(logits, 1.5, torch.Generator().manual_seed(3), 2.0, "raw")
    tempered = add_teacher_noise(logits, 1.5, torch.Generator().manual_seed(3), 2.0, "tempered")
    assert torch.allclose(tempered, 2.0 * raw)
    again = add_teacher_noise(logits, 1.5, torch.Generator().manual_seed(3), 2.0, "raw")
    assert torch.equal(raw, again)


def test_t2_scaling_applies_to_every_divergence():
    student, teacher, labels = random_batch(seed=6)
    mask = labels[:, 1:] != IGNORE_INDEX
    for divergence in (forward_kl_per_token, reverse_kl_per_token):
        scaled = tempered_divergence(divergence, student[:, :-1], teacher[:, :-1], mask, 3.0)
        plain = tempered_divergence(
            divergence, student[:, :-1], teacher[:, :-1], mask, 3.0, scale_by_t2=False
        )
        assert scaled.item() == pytest.approx(9 * plain.item(), rel=1e-6)


def test_gkd_with_lambda_zero_never_leaves_the_data_and_lambda_one_always_does():
    import random

    from kdray.losses.on_policy import draw_on_policy

    rng = random.Random(0)
    assert not any(draw_on_policy(rng, 0.0) for _ in range(1000))
    assert all(draw_on_policy(rng, 1.0) for _ in range(1000))
    drawn = sum(draw_on_policy(rng, 0.3) for _ in range(2000)) / 2000
    assert drawn == pytest.approx(0.3, abs=0.05)


def test_on_policy_batch_keeps_prompts_and_scores_only_the_samples():
    from transformers import AutoModelForCausalLM, Qwen2Config

    from kdray.data.batches import EncodedExample, collate
    from kdray.losses.on_policy import sample_batch

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=20, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    model = AutoModelForCausalLM.from_config(config)
    data = collate(
        [EncodedExample((5, 6, 7, 8, 9, 1), 3), EncodedExample((5, 6, 10, 11, 1), 2)],
        pad_token_id=0,
    )
    sampled = sample_batch(
        model, data, 0, 1, temperature=1.0, max_new_tokens=5, loss_tokens="response"
    )
    assert sampled["input_ids"][0, :3].tolist() == [5, 6, 7]
    assert sampled["input_ids"][1, :2].tolist() == [5, 6]
    assert sampled["prompt_lengths"].tolist() == [3, 2]
    assert (sampled["labels"][0, :3] == IGNORE_INDEX).all()
    assert (sampled["labels"][0, 3:] != IGNORE_INDEX).any()


# --- what the loss API refuses, and its edge of no scored token


def _batch(rows=3, positions=8, vocab=50, seed=0):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(rows, positions, vocab, generator=generator)
    teacher = torch.randn(rows, positions, vocab, generator=generator)
    labels = torch.randint(0, vocab, (rows, positions), generator=generator)
    labels[:, :2] = IGNORE_INDEX  # the prompt
    return student, teacher, labels


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda s, t, y: (s, t, y[:, :-1]), "labels (3, 7)"),  # labels one position shorter
        (lambda s, t, y: (s, t, y[:2]), "labels (2, 8)"),  # labels for fewer rows
        (lambda s, t, y: (s, torch.cat([t, t[:, :1]], 1), y), "teacher logits (3, 9, 50)"),
        (lambda s, t, y: (s, t[:2], y), "teacher logits (2, 8, 50)"),  # teacher for fewer rows
        (lambda s, t, y: (s, t[..., :40], y), "teacher logits (3, 8, 40)"),  # untrimmed vocab
        (lambda s, t, y: (s[0], t, y), "student logits must be (batch, positions, vocab)"),
    ],
)
def test_training_loss_refuses_mismatched_shapes_naming_both(change, named):
    student, teacher, labels = change(*_batch())
    with pytest.raises(LossShapeError, match=r"training_loss: .*") as error:
        training_loss(student, labels, KDConfig("kd", temperature=2.0), teacher)
    message = str(error.value)
    assert named in message and "\n" not in message
    if "must be" not in named:
        assert "(3, 8, 50)" in message or "(3, 8)" in message  # the student's side too


def test_matching_shapes_still_give_the_same_loss():
    student, teacher, labels = _batch()
    loss, _ = training_loss(student, labels, KDConfig("kd", temperature=2.0), teacher)
    targets_mask = labels[:, 1:] != IGNORE_INDEX
    reference = tempered_divergence(
        forward_kl_per_token, student[:, :-1], teacher[:, :-1], targets_mask, 2.0
    )
    assert torch.allclose(loss, reference)


def test_the_divergences_refuse_mismatched_masks_and_sparse_teachers():
    student, teacher, labels = _batch()
    mask = labels != IGNORE_INDEX
    with pytest.raises(LossShapeError, match=r"mask \(3, 7\) do not match .*\(3, 8, 50\)"):
        tempered_divergence(forward_kl_per_token, student, teacher, mask[:, :-1])
    sparse = SparseTeacher(
        torch.zeros(3, 7, 4), torch.zeros(3, 7, 4, dtype=torch.long), torch.zeros(3, 7), 50
    )
    with pytest.raises(LossShapeError, match=r"top-k teacher \(3, 7, 4\)"):
        sparse_divergence(forward_kl_per_token, student, sparse, mask)
    with pytest.raises(LossShapeError, match="top-k teacher"):
        training_loss(student, labels, KDConfig("kd"), sparse)


@pytest.mark.parametrize("method", ["sft", "kd", "revkd", "skew_fkl", "gkd"])
def test_a_batch_with_no_scored_token_gives_loss_zero_not_nan(method):
    student, teacher, labels = _batch()
    student.requires_grad_(True)
    labels[:] = IGNORE_INDEX
    loss, _ = training_loss(student, labels, KDConfig(method), teacher)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(student.grad == 0)
    assert cross_entropy(student[:, :-1], labels[:, 1:], labels[:, 1:] != IGNORE_INDEX) == 0


@pytest.mark.parametrize("method", ["skew_fkl", "skew_rkl"])
def test_skew_alpha_one_is_refused_and_just_below_it_still_trains(method):
    with pytest.raises(ConfigError, match="skew_alpha = 1 makes"):
        KDConfig(method, skew_alpha=1.0)
    KDConfig("kd", skew_alpha=1.0)  # harmless where no skew KL is computed
    student, teacher, labels = _batch()
    student.requires_grad_(True)
    loss, _ = training_loss(student, labels, KDConfig(method, skew_alpha=0.999), teacher)
    loss.backward()
    assert math.isfinite(loss.item()) and student.grad.abs().sum() > 0
