"""Pure loss functions for distillation. Inputs are logits of shape (batch, seq, vocab)
already aligned with their targets; every loss is computed in fp32 and averaged over the
tokens where `mask` is true, so padding never changes it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdray.config import KDConfig
from kdray.data import IGNORE_INDEX


def next_token_alignment(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits at position t predict token t+1: returns (logits, targets, mask) aligned."""
    targets = labels[:, 1:]
    return logits[:, :-1], targets, targets != IGNORE_INDEX


def masked_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp_min(1.0)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean token cross-entropy (targets outside the mask are ignored)."""
    safe_targets = targets.masked_fill(~mask, 0)
    per_token = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), safe_targets.reshape(-1), reduction="none"
    ).view_as(targets)
    return masked_mean(per_token, mask)


def _tempered_kl(
    from_logits: torch.Tensor,
    to_logits: torch.Tensor,
    mask: torch.Tensor,
    temperature: float,
    scale_by_t2: bool,
) -> torch.Tensor:
    """Masked mean over tokens of KL(softmax(from/T) || softmax(to/T)), times T^2 if asked."""
    log_a = F.log_softmax(from_logits.float() / temperature, dim=-1)
    log_b = F.log_softmax(to_logits.float() / temperature, dim=-1)
    per_token = (log_a.exp() * (log_a - log_b)).sum(-1)
    return masked_mean(per_token, mask) * (temperature**2 if scale_by_t2 else 1.0)


def forward_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
    scale_by_t2: bool = True,
) -> torch.Tensor:
    """KL(p_teacher || q_student) per token at temperature T, times T^2 if scale_by_t2."""
    return _tempered_kl(teacher_logits, student_logits, mask, temperature, scale_by_t2)


def reverse_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
    scale_by_t2: bool = True,
) -> torch.Tensor:
    """KL(q_student || p_teacher) per token at temperature T, times T^2 if scale_by_t2."""
    return _tempered_kl(student_logits, teacher_logits, mask, temperature, scale_by_t2)


def add_teacher_noise(
    teacher_logits: torch.Tensor, sigma: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Gaussian noise N(0, sigma^2) on the raw teacher logits, drawn from `generator`."""
    if sigma == 0:
        return teacher_logits
    noise = torch.randn(
        teacher_logits.shape,
        generator=generator,
        dtype=torch.float32,
        device=teacher_logits.device,
    )
    return teacher_logits.float() + sigma * noise


def restrict_to_vocab(logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Drop lm_head rows beyond the tokenizer's vocabulary (padded heads differ in width)."""
    return logits[..., :vocab_size]


def training_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    kd: KDConfig,
    teacher_logits: torch.Tensor | None = None,
    noise_generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one batch for kd.method, with its parts for logging.

    `sft` is cross-entropy; `kd`/`revkd` are (1 - w) * KL + w * CE with w = kd.ce_weight."""
    logits, targets, mask = next_token_alignment(student_logits, labels)
    ce = cross_entropy(logits, targets, mask)
    if not kd.uses_teacher:
        return ce, {"ce": ce.item()}
    if teacher_logits is None:
        raise ValueError(f"method {kd.method!r} needs teacher logits")
    teacher = add_teacher_noise(teacher_logits[:, :-1], kd.noise_sigma, noise_generator)
    divergence = forward_kl if kd.method == "kd" else reverse_kl
    kl = divergence(logits, teacher, mask, kd.temperature, kd.scale_by_t2)
    loss = (1 - kd.ce_weight) * kl + kd.ce_weight * ce
    return loss, {"ce": ce.item(), "kl": kl.item()}
