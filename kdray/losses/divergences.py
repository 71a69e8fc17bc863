"""Pure loss functions for distillation.

Logits are (batch, seq, vocab), aligned with their targets by `next_token_alignment`. Every
loss is computed in fp32 whatever the input dtype, summed over the tokens where `mask` is true
and divided by `normalizer` (default: the number of those tokens), so padding never changes a
loss and gradient accumulation can divide by the whole step's token count instead.

Per-token divergences take tempered log-probabilities (log q for the student, log p for the
teacher). `chunked_token_loss` evaluates any of them a chunk of tokens at a time and keeps
only the gradient, so peak extra memory is bounded by the chunk, not by batch x seq x vocab."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kdray.config.run import KDConfig
from kdray.data.batches import IGNORE_INDEX
from kdray.errors import LossShapeError

CHUNK_ELEMENTS = 1 << 20
"""Default chunk: 1M logits, 4 MiB per fp32 temporary (larger chunks measured slower and
heavier on CPU: freed temporaries of 16 MiB stay in the allocator's arenas)."""
PerToken = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor | None], torch.Tensor]


def check_shapes(
    where: str,
    student_logits: torch.Tensor,
    *,
    labels: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    teacher: torch.Tensor | SparseTeacher | None = None,
) -> None:
    """LossShapeError unless labels and mask are (batch, positions) of the student's logits
    (batch, positions, vocab) and the teacher's logits are the same shape (vocab after the
    lm_head trim, `restrict_to_vocab`) or a SparseTeacher of the same (batch, positions)."""
    if student_logits.dim() != 3:
        raise LossShapeError(
            f"{where}: student logits must be (batch, positions, vocab), got "
            f"{tuple(student_logits.shape)}"
        )
    rows = tuple(student_logits.shape[:2])
    for name, tensor in (("labels", labels), ("mask", mask)):
        if tensor is not None and tuple(tensor.shape) != rows:
            raise LossShapeError(
                f"{where}: {name} {tuple(tensor.shape)} do not match the student logits "
                f"{tuple(student_logits.shape)}: expected {rows}"
            )
    if isinstance(teacher, SparseTeacher):
        if tuple(teacher.log_probs.shape[:2]) != rows:
            raise LossShapeError(
                f"{where}: top-k teacher {tuple(teacher.log_probs.shape)} does not match the "
                f"student logits {tuple(student_logits.shape)}: expected {rows} positions"
            )
    elif teacher is not None and teacher.shape != student_logits.shape:
        raise LossShapeError(
            f"{where}: teacher logits {tuple(teacher.shape)} do not match the student logits "
            f"{tuple(student_logits.shape)} (trim both to the tokenizer's vocab with "
            "restrict_to_vocab)"
        )


def next_token_alignment(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits at position t predict token t+1: returns (logits, targets, mask) aligned."""
    targets = labels[:, 1:]
    return logits[:, :-1], targets, targets != IGNORE_INDEX


# --- per-token divergences on tempered log-probabilities (fp32, shape (..., vocab) -> (...))


def forward_kl_per_token(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_v p (log p - log q)."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def reverse_kl_per_token(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """KL(q || p) = sum_v q (log q - log p)."""
    return (log_q.exp() * (log_q - log_p)).sum(-1)


def _log_mixture(log_a: torch.Tensor, log_b: torch.Tensor, weight_a: float) -> torch.Tensor:
    """log(w a + (1 - w) b), stable in log space."""
    return torch.logaddexp(log_a + math.log(weight_a), log_b + math.log1p(-weight_a))


def skew_forward_kl_per_token(
    log_q: torch.Tensor, log_p: torch.Tensor, alpha: float
) -> torch.Tensor:
    """DistiLLM skew forward KL: KL(p || alpha p + (1 - alpha) q); alpha = 0 is forward KL."""
    if alpha == 0:
        return forward_kl_per_token(log_q, log_p)
    if alpha == 1:
        return torch.zeros(log_q.shape[:-1], dtype=log_q.dtype, device=log_q.device)
    log_m = _log_mixture(log_p, log_q, alpha)
    return (log_p.exp() * (log_p - log_m)).sum(-1)


def skew_reverse_kl_per_token(
    log_q: torch.Tensor, log_p: torch.Tensor, alpha: float
) -> torch.Tensor:
    """DistiLLM skew reverse KL: KL(q || (1 - alpha) p + alpha q); alpha = 0 is reverse KL."""
    if alpha == 0:
        return reverse_kl_per_token(log_q, log_p)
    if alpha == 1:
        return torch.zeros(log_q.shape[:-1], dtype=log_q.dtype, device=log_q.device)
    log_m = _log_mixture(log_q, log_p, alpha)
    return (log_q.exp() * (log_q - log_m)).sum(-1)


def generalized_jsd_per_token(
    log_q: torch.Tensor, log_p: torch.Tensor, beta: float
) -> torch.Tensor:
    """GKD's generalized JSD: beta KL(p || m) + (1 - beta) KL(q || m), m = beta p + (1 - beta) q.

    Same convention as TRL's `generalized_jsd_loss`: beta = 0 returns forward KL(p || q) and
    beta = 1 reverse KL(q || p), the limits of JSD(beta) / beta and JSD(beta) / (1 - beta).
    Clamped at 0 per token: rounding may not make a divergence negative."""
    if beta == 0:
        return forward_kl_per_token(log_q, log_p)
    if beta == 1:
        return reverse_kl_per_token(log_q, log_p)
    log_m = _log_mixture(log_p, log_q, beta)
    to_teacher = (log_p.exp() * (log_p - log_m)).sum(-1)
    to_student = (log_q.exp() * (log_q - log_m)).sum(-1)
    return (beta * to_teacher + (1 - beta) * to_student).clamp_min(0.0)


# --- chunked evaluation: loss and gradient a chunk of tokens at a time


class _ChunkedTokenLoss(torch.autograd.Function):
    """sum_t weight_t * per_token_t / normalizer, evaluated chunk by chunk. The forward pass
    computes each chunk's gradient at once and keeps only it (one tensor the size of the
    student logits), instead of the several full-size intermediates autograd would save."""

    @staticmethod
    def forward(ctx, student, teacher, targets, weights, per_token, chunk, needs_grad):
        grad = torch.zeros_like(student) if needs_grad else None
        total = torch.zeros((), dtype=torch.float32, device=student.device)
        # Only scored rows are evaluated: prompts and padding (often most of a batch) cost
        # nothing, and their gradient rows stay zero.
        scored = torch.nonzero(weights, as_tuple=True)[0]
        for start in range(0, scored.numel(), chunk):
            index = scored[start : start + chunk]
            with torch.enable_grad():
                piece = student[index].detach().float().requires_grad_(needs_grad)
                values = per_token(
                    piece,
                    None if teacher is None else teacher[index],
                    None if targets is None else targets[index],
                )
                loss = (values * weights[index]).sum()
                if needs_grad:
                    (piece_grad,) = torch.autograd.grad(loss, piece)
                    grad.index_copy_(0, index, piece_grad.to(grad.dtype))
            total += loss.detach()
        # Kept as a plain attribute, not save_for_backward: backward hands the tensor over and
        # drops the reference, so autograd can adopt it as .grad instead of copying it.
        ctx.chunk_grad = grad
        return total

    @staticmethod
    def backward(ctx, grad_output):
        # Scaled in place: a second logits-sized tensor would double the peak. The graph is
        # therefore single-use (backward with retain_graph=True is not supported).
        grad = ctx.chunk_grad
        del ctx.chunk_grad
        return grad.mul_(grad_output.to(grad.dtype)), None, None, None, None, None, None


def chunked_token_loss(
    per_token: PerToken,
    student_logits: torch.Tensor,
    mask: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
    normalizer: float | torch.Tensor | None = None,
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """sum over masked tokens of per_token(student fp32 logits, teacher, targets) / normalizer."""
    vocab = student_logits.shape[-1]
    chunk_tokens = chunk_tokens or max(1, CHUNK_ELEMENTS // vocab)
    student = student_logits.reshape(-1, vocab)
    # The teacher's last dimension may differ from the student's (packed top-k rows).
    teacher = None if teacher_logits is None else teacher_logits.flatten(0, -2)
    flat_targets = None if targets is None else targets.reshape(-1)
    denominator = mask.sum().clamp_min(1) if normalizer is None else normalizer
    weights = mask.reshape(-1).float() / torch.as_tensor(denominator, dtype=torch.float32)
    return _ChunkedTokenLoss.apply(
        student, teacher, flat_targets, weights, per_token, chunk_tokens, student.requires_grad
    )


# --- the losses of the methods


def cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    normalizer: float | torch.Tensor | None = None,
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """Token cross-entropy (targets outside the mask are ignored)."""

    def per_token(student, _teacher, target):
        return F.cross_entropy(student, target.masked_fill(target < 0, 0), reduction="none")

    return chunked_token_loss(per_token, logits, mask, None, targets, normalizer, chunk_tokens)


def tempered_divergence(
    divergence: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
    scale_by_t2: bool = True,
    normalizer: float | torch.Tensor | None = None,
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """divergence(log softmax(student / T), log softmax(teacher / T)) per token, times T^2."""
    check_shapes("tempered_divergence", student_logits, mask=mask, teacher=teacher_logits)

    def per_token(student, teacher, _target):
        log_q = F.log_softmax(student / temperature, dim=-1)
        log_p = F.log_softmax(teacher.float() / temperature, dim=-1)
        return divergence(log_q, log_p)

    loss = chunked_token_loss(
        per_token, student_logits, mask, teacher_logits, None, normalizer, chunk_tokens
    )
    return loss * (temperature**2 if scale_by_t2 else 1.0)


def forward_kl(student_logits, teacher_logits, mask, temperature=1.0, scale_by_t2=True, **kw):
    """KL(p_teacher || q_student) per token at temperature T, times T^2 if scale_by_t2."""
    return tempered_divergence(
        forward_kl_per_token, student_logits, teacher_logits, mask, temperature, scale_by_t2, **kw
    )


def reverse_kl(student_logits, teacher_logits, mask, temperature=1.0, scale_by_t2=True, **kw):
    """KL(q_student || p_teacher) per token at temperature T, times T^2 if scale_by_t2."""
    return tempered_divergence(
        reverse_kl_per_token, student_logits, teacher_logits, mask, temperature, scale_by_t2, **kw
    )


def add_teacher_noise(
    teacher_logits: torch.Tensor,
    sigma: float,
    generator: torch.Generator | None,
    temperature: float = 1.0,
    placement: str = "raw",
) -> torch.Tensor:
    """Gaussian noise on the teacher's logits, drawn from `generator`: N(0, sigma^2) on the raw
    logits, or (placement `tempered`) N(0, sigma^2) on logits / T, i.e. sigma * T on the raw."""
    if sigma == 0:
        return teacher_logits
    scale = sigma * (temperature if placement == "tempered" else 1.0)
    noise = torch.randn(
        teacher_logits.shape, generator=generator, dtype=torch.float32, device=teacher_logits.device
    )
    return teacher_logits.float() + scale * noise


@dataclass(frozen=True)
class SparseTeacher:
    """A cached teacher signal: per position, the teacher's k most likely tokens with their
    raw (T = 1) log-probs, and the log of the probability mass left outside them."""

    log_probs: torch.Tensor
    """(batch, seq, k) raw log-probs of the top-k tokens."""
    indices: torch.Tensor
    """(batch, seq, k) their token ids."""
    tail_log_mass: torch.Tensor
    """(batch, seq) log(1 - sum of the top-k probabilities)."""
    vocab_size: int
    """Tokens the distribution is over (the tail's share is spread over vocab_size - k)."""

    def shifted(self) -> SparseTeacher:
        """Positions 0 .. seq - 2, aligned like next_token_alignment's logits."""
        return SparseTeacher(
            self.log_probs[:, :-1], self.indices[:, :-1], self.tail_log_mass[:, :-1],
            self.vocab_size,
        )  # fmt: skip

    def to(self, device: torch.device) -> SparseTeacher:
        return dataclasses.replace(
            self, log_probs=self.log_probs.to(device), indices=self.indices.to(device),
            tail_log_mass=self.tail_log_mass.to(device),
        )  # fmt: skip

    def packed(self) -> torch.Tensor:
        """(batch, seq, 2k + 1) fp32: log-probs, tail, indices (exact as fp32 below 2^24)."""
        return torch.cat(
            [self.log_probs.float(), self.tail_log_mass.float()[..., None], self.indices.float()],
            dim=-1,
        )


TAIL_LOG_FLOOR = -80.0
"""Bucket log-probs are kept above this, so an empty tail never makes 0 * -inf."""


def bucket_log_probs(
    student_logits: torch.Tensor,
    packed_teacher: torch.Tensor,
    temperature: float,
    vocab_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and teacher as (k + 1)-bucket distributions at temperature T: the teacher's
    top-k tokens plus one bucket for the rest. Over the top-k the tempered teacher is exact
    (p_i^(1/T), renormalised); the tail's tempered mass assumes its probability spread evenly
    over the vocab_size - k other tokens. Any divergence of these is a lower bound of the
    full-vocabulary one (data processing), and equal to it where the tail is empty."""
    k = (packed_teacher.shape[-1] - 1) // 2
    top, tail = packed_teacher[..., :k], packed_teacher[..., k]
    indices = packed_teacher[..., k + 1 :].long()
    others = math.log(vocab_size - k)
    tail_tempered = others + (tail.clamp_min(TAIL_LOG_FLOOR) - others) / temperature
    log_p = F.log_softmax(torch.cat([top / temperature, tail_tempered[..., None]], -1), -1)
    log_q_all = F.log_softmax(student_logits / temperature, dim=-1)
    log_q_top = log_q_all.gather(-1, indices)
    log_q_tail = torch.logsumexp(log_q_all.scatter(-1, indices, float("-inf")), dim=-1)
    log_q = torch.cat([log_q_top, log_q_tail.clamp_min(TAIL_LOG_FLOOR)[..., None]], -1)
    return log_q, log_p.clamp_min(TAIL_LOG_FLOOR)


def sparse_divergence(
    divergence: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    student_logits: torch.Tensor,
    teacher: SparseTeacher,
    mask: torch.Tensor,
    temperature: float = 1.0,
    scale_by_t2: bool = True,
    normalizer: float | torch.Tensor | None = None,
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """`tempered_divergence` against a cached top-k teacher, over its k + 1 buckets."""
    check_shapes("sparse_divergence", student_logits, mask=mask, teacher=teacher)

    def per_token(student, packed, _target):
        return divergence(*bucket_log_probs(student, packed, temperature, teacher.vocab_size))

    loss = chunked_token_loss(
        per_token, student_logits, mask, teacher.packed(), None, normalizer, chunk_tokens
    )
    return loss * (temperature**2 if scale_by_t2 else 1.0)


def restrict_to_vocab(logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Drop lm_head rows beyond the tokenizer's vocabulary (padded heads differ in width)."""
    return logits[..., :vocab_size]


def method_divergence(kd: KDConfig) -> tuple[Callable, float, bool]:
    """(per-token divergence, temperature in the loss, T^2 scaling) of a teacher-logit method."""
    if kd.method in ("kd", "seqkd"):
        return forward_kl_per_token, kd.temperature, kd.scale_by_t2
    if kd.method == "revkd":
        return reverse_kl_per_token, kd.temperature, kd.scale_by_t2
    if kd.method == "skew_fkl":
        return (
            lambda q, p: skew_forward_kl_per_token(q, p, kd.skew_alpha),
            kd.temperature,
            kd.scale_by_t2,
        )
    if kd.method == "skew_rkl":
        return (
            lambda q, p: skew_reverse_kl_per_token(q, p, kd.skew_alpha),
            kd.temperature,
            kd.scale_by_t2,
        )
    if kd.method == "gkd":
        if not kd.gkd_temperature_in_loss:  # the study's code: T only in sampling
            return lambda q, p: generalized_jsd_per_token(q, p, kd.beta), 1.0, False
        return lambda q, p: generalized_jsd_per_token(q, p, kd.beta), kd.temperature, kd.scale_by_t2
    raise ValueError(f"method {kd.method!r} has no teacher-logit divergence")


def training_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    kd: KDConfig,
    teacher_logits: torch.Tensor | SparseTeacher | None = None,
    noise_generator: torch.Generator | None = None,
    normalizer: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one (micro-)batch for kd.method, with its parts for logging.

    `sft`: CE. `kd`, `revkd`, `gkd`, `skew_fkl`, `skew_rkl`: (1 - w) * D + w * CE with
    w = kd.ce_weight. `seqkd` (labels are the teacher's responses): (1 - k) * CE + k * KL with
    k = kd.seqkd_kd_weight. `teacher_logits` may be full logits (online, or a full-vocabulary
    cache of log-probs: exact, noise included) or a SparseTeacher (top-k cache: no noise)."""
    check_shapes("training_loss", student_logits, labels=labels, teacher=teacher_logits)
    logits, targets, mask = next_token_alignment(student_logits, labels)
    if not kd.needs_teacher_logits:
        ce = cross_entropy(logits, targets, mask, normalizer, kd.chunk_tokens)
        return ce, {"ce": ce.item()}
    weight = kd.seqkd_kd_weight if kd.method == "seqkd" else 1 - kd.ce_weight
    # With no CE in the loss (pure KD, the default) CE is only reported: skip its gradient.
    ce_input = logits if weight < 1 else logits.detach()
    ce = cross_entropy(ce_input, targets, mask, normalizer, kd.chunk_tokens)
    if teacher_logits is None:
        raise ValueError(f"method {kd.method!r} needs teacher logits")
    divergence, temperature, scale = method_divergence(kd)
    if isinstance(teacher_logits, SparseTeacher):
        if kd.noise_sigma > 0:
            raise ValueError("a top-k teacher cache cannot carry noise over the whole vocabulary")
        distance = sparse_divergence(
            divergence, logits, teacher_logits.shifted(), mask, temperature, scale, normalizer,
            kd.chunk_tokens,
        )  # fmt: skip
    else:
        teacher = add_teacher_noise(
            teacher_logits[:, :-1], kd.noise_sigma, noise_generator, kd.temperature, kd.noise_on
        )
        distance = tempered_divergence(
            divergence, logits, teacher, mask, temperature, scale, normalizer, kd.chunk_tokens
        )
    loss = weight * distance + (1 - weight) * ce
    return loss, {"ce": ce.item(), "kd": distance.item()}
