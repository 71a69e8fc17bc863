"""Build the tiny world once and reuse it: one domain's data splits, one family's tokenizer
and initial models, cached by the content hash of their configuration."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoTokenizer

from kdray.cache import build_once, content_key
from kdray.config.run import to_dict
from kdray.console import say
from kdray.data.prompts import format_prompt
from kdray.world.domains import WorldConfig, domain_of, generate_splits
from kdray.world.pretraining import pretraining_corpus
from kdray.world.tokenizer import save_tokenizer, train_tokenizer
from kdray.world.zoo import build_model, count_parameters, family_models, tiny_model

GENERATOR_VERSION = 5
"""Bump when the generator's output changes for the same config."""
MODEL_INIT_SEED = 1234
PRETRAINING_DOCUMENTS = 20_000
"""Documents of generic text the world holds for pretraining its bases (kdray.world.bases)."""


@dataclass(frozen=True)
class BuiltModel:
    """What the pair rules (kdray.hub.zoo.check_pair) need to know of a built tiny model."""

    name: str
    tokenizer: str
    parameters: int
    vocab_size: int
    """lm_head width."""
    tokenizer_vocab: int


@dataclass(frozen=True)
class World:
    """A built tiny world on disk: one domain's data and one family's tokenizer and models."""

    root: Path
    config: WorldConfig
    family: str

    @property
    def domain(self) -> str:
        return domain_of(self.config)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / "tokenizer"

    def model_dir(self, name: str) -> Path:
        return self.root / "models" / name

    def tokenizer_for(self, name: str) -> Path:
        """The family's tokenizer (one per world)."""
        return self.tokenizer_dir

    @property
    def key(self) -> str:
        return self.root.name

    def manifest(self) -> dict:
        return json.loads((self.root / "world.json").read_text())

    def parameter_counts(self) -> dict[str, int]:
        return self.manifest()["parameters"]

    def lm_head_widths(self) -> dict[str, int]:
        return self.manifest()["lm_head_widths"]

    def built_model(self, name: str) -> BuiltModel:
        manifest = self.manifest()
        return BuiltModel(
            name,
            tiny_model(name).tokenizer,
            manifest["parameters"][name],
            manifest["lm_head_widths"][name],
            manifest["tokenizer_vocab"],
        )

    def tasks(self) -> list[str]:
        return self.manifest()["tasks"]

    def split(self, name: str) -> list[dict[str, str]]:
        return json.loads((self.data_dir / f"{name}.json").read_text())

    def tokenizer(self):
        return AutoTokenizer.from_pretrained(str(self.tokenizer_dir))

    def pretraining_documents(self) -> list[str]:
        return json.loads((self.data_dir / "pretraining.json").read_text())


def init_seed(name: str, family: str, seed: int = 0) -> int:
    """The random initialisation's seed of model `name` for study seed `seed` (seed 0: the
    initial model the world saves)."""
    index = sorted(family_models(family)).index(name)
    return MODEL_INIT_SEED + index + 7919 * seed


LATER_FIELDS_OFF = {"style_concentration": 0.0}
"""World fields added after worlds were built, at their value that changes nothing: left out of
the key there, so the worlds (and packaged bases) built before them keep their key."""


def world_key(config: WorldConfig, family: str) -> str:
    specs = {name: to_dict(spec) for name, spec in family_models(family).items()}
    values = {
        name: value for name, value in to_dict(config).items()
        if not (name in LATER_FIELDS_OFF and value == LATER_FIELDS_OFF[name])
    }  # fmt: skip
    return content_key(
        GENERATOR_VERSION, domain_of(config), values, family, specs, MODEL_INIT_SEED,
        PRETRAINING_DOCUMENTS,
    )  # fmt: skip


def build_world(config: WorldConfig, cache_dir: Path, family: str = "qwen") -> tuple[World, bool]:
    """The world for `config` and `family`, from the cache or built now; returns
    (world, built_now)."""
    domain = domain_of(config)
    folder = cache_dir / "worlds" / f"{domain}-{family}-{world_key(config, family)}"

    def build(staging: Path) -> None:
        splits = generate_splits(config)
        (staging / "data").mkdir(parents=True)
        for name, records in splits.items():
            (staging / "data" / f"{name}.json").write_text(json.dumps(records, indent=1))
        documents = pretraining_corpus(config, PRETRAINING_DOCUMENTS)
        (staging / "data" / "pretraining.json").write_text(json.dumps(documents, indent=0))
        # The tokenizer learns the world's text: its generic text and the task's.
        texts = documents + [format_prompt(r) + r["output"] for r in splits["train"]]
        tokenizer = train_tokenizer(texts, config.vocab_size, family)
        save_tokenizer(tokenizer, staging / "tokenizer")
        parameters, widths = {}, {}
        for name, spec in sorted(family_models(family).items()):
            model = build_model(spec, tokenizer, staging / "models" / name, init_seed(name, family))
            parameters[name] = count_parameters(model)
            widths[name] = model.get_output_embeddings().weight.shape[0]
        manifest = {
            "domain": domain,
            "family": family,
            "config": to_dict(config),
            "tokenizer_vocab": len(tokenizer),
            "parameters": parameters,
            "lm_head_widths": widths,
            "tasks": sorted({r.get("task", domain) for r in splits["test"]}),
        }
        (staging / "world.json").write_text(json.dumps(manifest, indent=1))

    root, built = build_once(folder, build, verify=True, on_rebuild=say)
    return World(root, config, family), built
