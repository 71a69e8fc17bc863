"""Which teacher signal a trial uses: none, the online teacher, or the cached log-probs.

The cache (kdray/teacher/cache.py) pays for the teacher once per sweep instead of once per
step of every trial. It is used where it is exact, or where its approximation was measured
(benchmarks/cache_fidelity.py); everything else runs the teacher online, and the trial's
params say which and why."""

from __future__ import annotations

from dataclasses import dataclass

from kdray.config.run import KDConfig
from kdray.errors import ConfigError

NONE = "none"
ONLINE = "online"
CACHE_FULL = "cache-full"
CACHE_TOP_K = "cache-topk"
TOP_K_MAX_TEMPERATURE = 2.0
"""The highest loss temperature a top-k cache serves (benchmarks/cache_fidelity.py, sigma 0,
tiny teacher): at T <= 2 and k >= 32 the cached loss's gradient has cosine >= 0.9997 with the
online one; at T = 5 it falls to 0.87 (k 32) and 0.91 (k 128), and the loss is off by 16-41%."""


@dataclass(frozen=True)
class TeacherSignal:
    kind: str
    """`none` (no teacher logits), `online`, `cache-full` or `cache-topk`."""
    reason: str
    """One line for the trial's params."""
    top_k: int | None = None
    """Tokens per position of a top-k cache; None for the full vocabulary."""

    @property
    def cached(self) -> bool:
        return self.kind in (CACHE_FULL, CACHE_TOP_K)


def choose_teacher_signal(kd: KDConfig, vocab_size: int) -> TeacherSignal:
    """The signal for kd over a tokenizer of vocab_size tokens (rules in order):
    1. methods without teacher logits (sft, seqkd with CE only) need none;
    2. `online` asked for;
    3. gkd with on-policy batches: the teacher must score the student's fresh samples online;
    4. a vocabulary up to cache_full_vocab_limit: the whole distribution is cached, exact for
       every T and sigma (noise is drawn at read time over the same shape);
    5. noise on a larger vocabulary: top-k cannot carry noise spread over every token, online;
    6. a loss temperature above TOP_K_MAX_TEMPERATURE: online (measured: the tail's shape
       matters there);
    7. otherwise the top-k cache, T applied at read time (exact on the stored tokens)."""
    if not kd.needs_teacher_logits:
        return TeacherSignal(NONE, f"{kd.method} uses no teacher logits")
    if kd.teacher_signal == ONLINE:
        return TeacherSignal(ONLINE, "online teacher asked for (teacher_signal=online)")
    if kd.method == "gkd" and kd.on_policy_fraction > 0:
        return _online_or_refuse(kd, "gkd's on-policy batches need the teacher on fresh samples")
    if vocab_size <= kd.cache_full_vocab_limit:
        return TeacherSignal(
            CACHE_FULL, f"cached full distribution over {vocab_size} tokens: exact for any T, sigma"
        )
    if kd.noise_sigma > 0:
        return _online_or_refuse(
            kd, f"noise over all {vocab_size} tokens cannot be carried by a top-k cache"
        )
    temperature = kd.temperature if kd.method != "gkd" or kd.gkd_temperature_in_loss else 1.0
    if temperature > TOP_K_MAX_TEMPERATURE:
        return _online_or_refuse(
            kd, f"T={temperature:g} flattens the teacher into the tail a top-k cache drops"
        )
    if kd.cache_top_k >= vocab_size:
        raise ConfigError(
            f"cache_top_k {kd.cache_top_k} >= vocabulary {vocab_size}: "
            "raise cache_full_vocab_limit to cache the whole vocabulary instead"
        )
    return TeacherSignal(
        CACHE_TOP_K,
        f"cached top-{kd.cache_top_k} of {vocab_size} tokens plus the tail mass",
        kd.cache_top_k,
    )


def _online_or_refuse(kd: KDConfig, why: str) -> TeacherSignal:
    if kd.teacher_signal == "cache":
        raise ConfigError(f"teacher_signal=cache is not possible here: {why}; use auto or online")
    return TeacherSignal(ONLINE, f"online: {why}")
