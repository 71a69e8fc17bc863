"""The hub model zoo of the study: Qwen2.5 and Llama 3.x base checkpoints on the Hugging Face
Hub, their architecture (from each checkpoint's config.json), and the teacher -> student pairs.

KD compares token distributions, so a teacher and its student must share a tokenizer: pairs
stay within a family. Nothing here downloads or imports torch; the numbers are enough to list
models, check pairs and estimate memory (kdray.study.memory) before anything is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kdray.config.run import FAMILIES
from kdray.errors import ConfigError


@dataclass(frozen=True)
class HubModel:
    """One base checkpoint on the Hugging Face Hub."""

    name: str
    """Short id used on the command line, e.g. "qwen2.5-0.5b", "llama-3.1-8b"."""
    hub_id: str
    """Hugging Face repository, e.g. "Qwen/Qwen2.5-0.5B"."""
    family: str
    """"qwen" or "llama": pairs never cross families."""
    tokenizer: str
    """Identity of the tokenizer, shared by the whole family ("qwen2.5", "llama3")."""
    layers: int
    """num_hidden_layers."""
    hidden: int
    """hidden_size."""
    heads: int
    """num_attention_heads (query heads)."""
    kv_heads: int
    """num_key_value_heads (grouped-query attention)."""
    intermediate: int
    """intermediate_size of the SwiGLU MLP."""
    vocab_size: int
    """config.json vocab_size: rows of the embedding and width of lm_head (padded, so it can
    exceed the tokenizer's vocabulary)."""
    tokenizer_vocab: int
    """len(tokenizer): the tokens that exist; KD compares over these."""
    tied_embeddings: bool
    """tie_word_embeddings: lm_head shares the embedding matrix."""
    attention_bias: bool
    """q/k/v projections have biases (Qwen2), o_proj never does."""
    gated: bool
    """Download needs an accepted license and a Hugging Face token (Llama)."""

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def embedding_parameters(self) -> int:
        return self.vocab_size * self.hidden

    @property
    def layer_parameters(self) -> int:
        """Parameters of one decoder layer: attention, MLP and its two RMSNorms."""
        q_width = self.heads * self.head_dim
        kv_width = self.kv_heads * self.head_dim
        attention = self.hidden * (q_width + 2 * kv_width) + q_width * self.hidden
        if self.attention_bias:
            attention += q_width + 2 * kv_width
        mlp = 3 * self.hidden * self.intermediate  # gate, up, down
        return attention + mlp + 2 * self.hidden

    @property
    def parameters(self) -> int:
        """Total parameters: embeddings, layers, final norm, and lm_head unless tied."""
        lm_head = 0 if self.tied_embeddings else self.embedding_parameters
        return (
            self.embedding_parameters + self.layers * self.layer_parameters + self.hidden + lm_head
        )


def _qwen(size: str, layers, hidden, heads, kv_heads, intermediate, vocab, tied) -> HubModel:
    return HubModel(
        name=f"qwen2.5-{size.lower()}",
        hub_id=f"Qwen/Qwen2.5-{size}",
        family="qwen",
        tokenizer="qwen2.5",
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        intermediate=intermediate,
        vocab_size=vocab,
        tokenizer_vocab=151_665,  # 151,643 BPE tokens + 22 special tokens
        tied_embeddings=tied,
        attention_bias=True,
        gated=False,
    )


def _llama(version: str, size: str, layers, hidden, heads, intermediate, tied) -> HubModel:
    return HubModel(
        name=f"llama-{version}-{size.lower()}",
        hub_id=f"meta-llama/Llama-{version}-{size}",
        family="llama",
        tokenizer="llama3",
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=8,
        intermediate=intermediate,
        vocab_size=128_256,
        tokenizer_vocab=128_256,  # 128,000 BPE tokens + 256 special (mostly reserved) tokens
        tied_embeddings=tied,
        attention_bias=False,
        gated=True,
    )


# Numbers from each checkpoint's config.json. Qwen2.5 pads lm_head to 151,936 (<= 3B) or
# 152,064 (>= 7B) rows over the same 151,665-token tokenizer.
HUB_MODELS: dict[str, HubModel] = {
    model.name: model
    for model in (
        _qwen("0.5B", 24, 896, 14, 2, 4864, 151_936, tied=True),
        _qwen("1.5B", 28, 1536, 12, 2, 8960, 151_936, tied=True),
        _qwen("3B", 36, 2048, 16, 2, 11008, 151_936, tied=True),
        _qwen("7B", 28, 3584, 28, 4, 18944, 152_064, tied=False),
        _qwen("14B", 48, 5120, 40, 8, 13824, 152_064, tied=False),
        _qwen("32B", 64, 5120, 40, 8, 27648, 152_064, tied=False),
        _llama("3.2", "1B", 16, 2048, 32, 8192, tied=True),
        _llama("3.2", "3B", 28, 3072, 24, 8192, tied=True),
        _llama("3.1", "8B", 32, 4096, 32, 14336, tied=False),
        _llama("3.1", "70B", 80, 8192, 64, 28672, tied=False),
    )
}


def hub_model(name: str) -> HubModel:
    """The model called `name`, or a one-line ConfigError listing the known names."""
    try:
        return HUB_MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown hub model {name!r}; known: {', '.join(HUB_MODELS)} (kdray models)"
        ) from None


def check_family(family: str | None) -> None:
    if family is not None and family not in FAMILIES:
        raise ConfigError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")


def pairs(family: str | None = None) -> list[tuple[HubModel, HubModel]]:
    """Every (teacher, student) with the teacher larger, within a family: by family, then
    teacher size descending, then student size descending."""
    check_family(family)
    result = []
    for fam in FAMILIES if family is None else (family,):
        members = sorted(
            (m for m in HUB_MODELS.values() if m.family == fam),
            key=lambda m: m.parameters,
            reverse=True,
        )
        for i, teacher in enumerate(members):
            result.extend((teacher, student) for student in members[i + 1 :])
    return result


class PairModel(Protocol):
    """What check_pair needs: HubModel, and the tiny zoo's models, both provide it."""

    @property
    def name(self) -> str: ...
    @property
    def tokenizer(self) -> str: ...
    @property
    def parameters(self) -> int: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def tokenizer_vocab(self) -> int: ...


def format_parameters(count: int) -> str:
    return f"{count / 1e9:.2f}B"


def check_pair(teacher: PairModel, student: PairModel) -> list[str]:
    """Warnings and notes for a teacher -> student pair; ConfigError (one line) if the two do
    not share a tokenizer, since KD needs both distributions over the same tokens."""
    if teacher.tokenizer != student.tokenizer:
        raise ConfigError(
            f"teacher {teacher.name} (tokenizer {teacher.tokenizer}) and student {student.name} "
            f"(tokenizer {student.tokenizer}) do not share a tokenizer: KD compares token "
            "distributions, pick a pair from the same family (kdray pairs)"
        )
    notes = []
    if teacher.parameters <= student.parameters:
        notes.append(
            f"teacher {teacher.name} ({format_parameters(teacher.parameters)}) is not larger "
            f"than student {student.name} ({format_parameters(student.parameters)})"
        )
    if teacher.vocab_size != student.vocab_size:
        # Rows past the tokenizer are padding no token maps to; losses.restrict_to_vocab cuts
        # both logit tensors to the shared width.
        vocab = min(teacher.tokenizer_vocab, student.tokenizer_vocab)
        notes.append(
            f"lm_head widths differ ({teacher.vocab_size:,} vs {student.vocab_size:,}): "
            f"compared over the tokenizer's {vocab:,} tokens"
        )
    return notes
