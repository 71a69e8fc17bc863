"""Build the tiny world once and reuse it: data splits, tokenizer and initial models,
cached by the content hash of their configuration."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoTokenizer

from kdray.cache import build_once, content_key
from kdray.config import to_dict
from kdray.prompts import format_prompt
from kdray.world.synthetic_math import MathWorldConfig, generate_splits
from kdray.world.tokenizer import save_tokenizer, train_tokenizer
from kdray.world.zoo import TINY_QWEN2, build_model, count_parameters

GENERATOR_VERSION = 1
"""Bump when the generator's output changes for the same config."""
MODEL_INIT_SEED = 1234


@dataclass(frozen=True)
class World:
    """A built tiny world on disk."""

    root: Path
    config: MathWorldConfig

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / "tokenizer"

    def model_dir(self, name: str) -> Path:
        return self.root / "models" / name

    @property
    def key(self) -> str:
        return self.root.name

    def parameter_counts(self) -> dict[str, int]:
        return json.loads((self.root / "world.json").read_text())["parameters"]

    def split(self, name: str) -> list[dict[str, str]]:
        return json.loads((self.data_dir / f"{name}.json").read_text())

    def tokenizer(self):
        return AutoTokenizer.from_pretrained(str(self.tokenizer_dir))


def world_key(config: MathWorldConfig) -> str:
    specs = {name: to_dict(spec) for name, spec in TINY_QWEN2.items()}
    return content_key(GENERATOR_VERSION, to_dict(config), specs, MODEL_INIT_SEED)


def build_world(config: MathWorldConfig, cache_dir: Path) -> tuple[World, bool]:
    """The world for `config`, from the cache or built now; returns (world, built_now)."""
    folder = cache_dir / "worlds" / f"math-{world_key(config)}"

    def build(staging: Path) -> None:
        splits = generate_splits(config)
        (staging / "data").mkdir(parents=True)
        for name, problems in splits.items():
            (staging / "data" / f"{name}.json").write_text(json.dumps(problems, indent=1))
        texts = [format_prompt(p) + p["output"] for p in splits["train"]]
        tokenizer = train_tokenizer(texts, config.vocab_size)
        save_tokenizer(tokenizer, staging / "tokenizer")
        parameters = {}
        for index, (name, spec) in enumerate(sorted(TINY_QWEN2.items())):
            model = build_model(spec, tokenizer, staging / "models" / name, MODEL_INIT_SEED + index)
            parameters[name] = count_parameters(model)
        manifest = {"config": to_dict(config), "parameters": parameters}
        (staging / "world.json").write_text(json.dumps(manifest, indent=1))

    root, built = build_once(folder, build)
    return World(root, config), built
