"""The KD losses against closed forms on hand-made logits."""

import math

import pytest
import torch
import torch.nn.functional as F

from kdray.config.run import KDConfig
from kdray.data.batches import IGNORE_INDEX
from kdray.losses.divergences import (
    add_teacher_noise,
    cross_entropy,
    forward_kl,
    restrict_to_vocab,
    reverse_kl,
    training_loss,
)


def one_token(values):
    return torch.tensor([[values]], dtype=torch.float32)  # (batch 1, seq 1, vocab)


MASK = torch.tensor([[True]])
TEACHER = one_token([0.0, 0.0])  # p = (1/2, 1/2)
STUDENT = one_token([math.log(3.0), 0.0])  # q = (3/4, 1/4)


def test_forward_kl_closed_form():
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert forward_kl(STUDENT, TEACHER, MASK).item() == pytest.approx(expected, rel=1e-6)


def test_reverse_kl_closed_form():
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert reverse_kl(STUDENT, TEACHER, MASK).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("divergence", [forward_kl, reverse_kl])
def test_temperature_divides_logits_and_scales_by_t_squared(divergence):
    # Student logits (ln 9, 0) at T=2 are (ln 3, 0) at T=1: same distributions, KL x 4.
    student_t2 = one_token([math.log(9.0), 0.0])
    at_t1 = divergence(STUDENT, TEACHER, MASK, temperature=1.0).item()
    assert divergence(student_t2, TEACHER, MASK, temperature=2.0).item() == pytest.approx(4 * at_t1)
    unscaled = divergence(student_t2, TEACHER, MASK, temperature=2.0, scale_by_t2=False).item()
    assert unscaled == pytest.approx(at_t1)


def test_kl_is_zero_for_identical_and_matches_torch_reference():
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 5, 11), torch.randn(3, 5, 11)
    mask = torch.ones(3, 5, dtype=torch.bool)
    assert forward_kl(teacher, teacher, mask).item() == pytest.approx(0.0, abs=1e-6)
    log_q, log_p = F.log_softmax(student / 2, -1), F.log_softmax(teacher / 2, -1)
    reference = F.kl_div(log_q, log_p, log_target=True, reduction="sum").item() / 15 * 4
    assert forward_kl(student, teacher, mask, 2.0).item() == pytest.approx(reference, rel=1e-5)
    reference = F.kl_div(log_p, log_q, log_target=True, reduction="sum").item() / 15 * 4
    assert reverse_kl(student, teacher, mask, 2.0).item() == pytest.approx(reference, rel=1e-5)


def test_cross_entropy_closed_form_and_mask():
    logits = one_token([0.0, 0.0]).repeat(1, 2, 1)
    targets = torch.tensor([[0, 1]])
    assert cross_entropy(logits, targets, torch.tensor([[True, True]])).item() == pytest.approx(
        math.log(2)
    )
    skewed = torch.tensor([[[0.0, 0.0], [5.0, -5.0]]])
    only_first = cross_entropy(skewed, targets, torch.tensor([[True, False]])).item()
    assert only_first == pytest.approx(math.log(2))


@pytest.mark.parametrize("method", ["sft", "kd", "revkd"])
def test_padding_never_changes_the_loss(method):
    torch.manual_seed(1)
    student, teacher = torch.randn(1, 4, 7), torch.randn(1, 4, 7)
    labels = torch.tensor([[IGNORE_INDEX, 3, 5, 2]])
    padded_student = torch.cat([student, 100 * torch.randn(1, 3, 7)], dim=1)
    padded_teacher = torch.cat([teacher, -100 * torch.randn(1, 3, 7)], dim=1)
    padded_labels = torch.cat([labels, torch.full((1, 3), IGNORE_INDEX)], dim=1)
    kd = KDConfig(method=method, temperature=2.0)
    plain, _ = training_loss(student, labels, kd, teacher)
    padded, _ = training_loss(padded_student, padded_labels, kd, padded_teacher)
    assert padded.item() == pytest.approx(plain.item(), rel=1e-6)


def test_ce_weight_mixes_kd_and_cross_entropy():
    torch.manual_seed(2)
    student, teacher = torch.randn(2, 5, 9), torch.randn(2, 5, 9)
    labels = torch.randint(0, 9, (2, 5))
    _, parts = training_loss(student, labels, KDConfig("kd", 2.0), teacher)
    mixed, _ = training_loss(student, labels, KDConfig("kd", 2.0, ce_weight=0.25), teacher)
    assert mixed.item() == pytest.approx(0.75 * parts["kd"] + 0.25 * parts["ce"], rel=1e-6)


def test_sft_ignores_the_teacher_and_kd_requires_it():
    student, labels = torch.randn(1, 3, 5), torch.tensor([[1, 2, 3]])
    loss, parts = training_loss(student, labels, KDConfig("sft"))
    assert set(parts) == {"ce"}
    with pytest.raises(ValueError, match="needs teacher logits"):
        training_loss(student, labels, KDConfig("kd"))


def test_teacher_noise_is_seeded_and_has_the_requested_scale():
    logits = torch.zeros(4, 50, 64)
    assert add_teacher_noise(logits, 0.0, None) is logits
    first = add_teacher_noise(logits, 2.0, torch.Generator().manual_seed(7))
    again = add_teacher_noise(logits, 2.0, torch.Generator().manual_seed(7))
    assert torch.equal(first, again)
    assert first.std().item() == pytest.approx(2.0, rel=0.05)


def test_restrict_to_vocab_drops_padded_lm_head_rows():
    assert restrict_to_vocab(torch.zeros(1, 2, 10), 7).shape == (1, 2, 7)
