"""The tiny model zoo: a Qwen2-architecture family and a Llama-architecture family built from
configs, saved as ordinary Hugging Face model folders (safetensors) and loaded back with
`from_pretrained`, the same code path as hub checkpoints. It mirrors the hub zoo's shape:
two families, four sizes each, one tokenizer per family, tied embeddings in the small
models, and a larger Qwen whose lm_head is wider than its tokenizer (as Qwen2.5-7B+)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kdray.config.run import FAMILIES
from kdray.errors import ConfigError

if TYPE_CHECKING:  # torch/transformers load lazily: the CLI validates names without them
    import torch
    from transformers import PretrainedConfig, PreTrainedTokenizerBase


@dataclass(frozen=True)
class TinyModelSpec:
    """One size of a tiny family."""

    name: str
    family: str
    """`qwen` (transformers Qwen2Config) or `llama` (LlamaConfig)."""
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    tied_embeddings: bool = True
    """Share the input embedding and lm_head (Qwen2.5 <= 3B, Llama 3.2 do; larger ones not)."""
    lm_head_padding: int = 0
    """Rows of the embedding/lm_head beyond the tokenizer's vocabulary (Qwen2.5-7B and up have
    152,064 rows for a 151,665-token tokenizer; their smaller siblings 151,936)."""

    @property
    def tokenizer(self) -> str:
        """Models of one family share one tokenizer; KD needs the same tokenizer."""
        return f"tiny-{self.family}"


# xs is 2 x 48: at 2 x 32 its bases never learnt to read a story's changes in order (11% after
# fine-tuning), at 3 x 32 two of five did not; at 2 x 48 they do (benchmarks/calibrate_recipe.py,
# README, "The tiny world").
TINY_MODELS: dict[str, TinyModelSpec] = {
    spec.name: spec
    for spec in (
        TinyModelSpec("tiny-qwen2-xs", "qwen", 2, 48, 4, 2, 96),
        TinyModelSpec("tiny-qwen2-s", "qwen", 2, 64, 4, 2, 128),
        TinyModelSpec("tiny-qwen2-m", "qwen", 4, 96, 4, 2, 256),
        TinyModelSpec("tiny-qwen2-l", "qwen", 4, 192, 6, 2, 512, lm_head_padding=64),
        TinyModelSpec("tiny-llama-xs", "llama", 2, 48, 4, 2, 96),
        TinyModelSpec("tiny-llama-s", "llama", 2, 64, 4, 2, 128),
        TinyModelSpec("tiny-llama-m", "llama", 4, 96, 4, 2, 256, tied_embeddings=False),
        TinyModelSpec("tiny-llama-l", "llama", 4, 192, 6, 2, 512, tied_embeddings=False),
    )
}


def family_models(family: str) -> dict[str, TinyModelSpec]:
    if family not in FAMILIES:
        raise ConfigError(f"unknown family {family!r}: choose one of {', '.join(FAMILIES)}")
    return {name: spec for name, spec in TINY_MODELS.items() if spec.family == family}


def tiny_model(name: str, family: str | None = None) -> TinyModelSpec:
    """The spec of `name`, checked to be in `family` when one is given."""
    known = family_models(family) if family else TINY_MODELS
    if name not in known:
        where = f"the {family} family" if family else "the tiny zoo"
        raise ConfigError(f"unknown model {name!r} in {where}: choose from {', '.join(known)}")
    return known[name]


def model_config(spec: TinyModelSpec, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    from transformers import LlamaConfig, Qwen2Config

    config_class = Qwen2Config if spec.family == "qwen" else LlamaConfig
    return config_class(
        vocab_size=len(tokenizer) + spec.lm_head_padding,
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=256,
        tie_word_embeddings=spec.tied_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )


def build_model(spec: TinyModelSpec, tokenizer: PreTrainedTokenizerBase, folder: Path, seed: int):
    """Randomly initialise a model (seeded) and save it as a model folder."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(model_config(spec, tokenizer))
    model.save_pretrained(str(folder), safe_serialization=True)
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())
