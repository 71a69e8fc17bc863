"""The tiny model zoo: Qwen2-architecture models built from configs, saved as ordinary
Hugging Face model folders (safetensors) and loaded back with `from_pretrained`, the same
code path as hub checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch/transformers load lazily: the CLI validates names without them
    import torch
    from transformers import PreTrainedTokenizerBase, Qwen2Config


@dataclass(frozen=True)
class TinyModelSpec:
    """One size of the tiny Qwen2 family."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int


TINY_QWEN2 = {
    spec.name: spec
    for spec in (
        TinyModelSpec("tiny-qwen2-xs", layers=2, hidden=32, heads=2, kv_heads=1, intermediate=64),
        TinyModelSpec("tiny-qwen2-s", layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128),
        TinyModelSpec("tiny-qwen2-m", layers=4, hidden=96, heads=4, kv_heads=2, intermediate=256),
        TinyModelSpec("tiny-qwen2-l", layers=4, hidden=192, heads=6, kv_heads=2, intermediate=512),
    )
}


def model_config(spec: TinyModelSpec, tokenizer: PreTrainedTokenizerBase) -> Qwen2Config:
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,
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
