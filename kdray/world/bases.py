"""The tiny world's pretrained bases: one per (model, seed), pretrained on the world's generic
text (kdray.world.pretraining) from a seeded random initialisation, saved as a model folder and
cached by the content hash of what produced it (world, model, seed, recipe)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from kdray.cache import build_once, content_key
from kdray.config.pretrain import PretrainConfig
from kdray.config.run import to_dict
from kdray.console import say
from kdray.world.build import World, init_seed

CURVE_FILE = "pretraining.json"


def base_folder(
    world: World, name: str, seed: int, pretrain: PretrainConfig, teacher: bool
) -> Path:
    recipe = pretrain.train_config(teacher, seed)
    key = content_key(world.key, name, seed, to_dict(recipe))
    return world.root.parent.parent / "bases" / f"{name}-seed{seed}-{key}"


def build_base(
    world: World,
    name: str,
    seed: int,
    pretrain: PretrainConfig,
    teacher: bool,
    on_report: Callable[[int, float, float], None] | None = None,
) -> tuple[Path, bool]:
    """The base of `name` for `seed`, from the cache or pretrained now: returns (folder,
    built_now). The folder holds the model and `pretraining.json` (recipe and loss curve)."""
    import torch
    from transformers import AutoModelForCausalLM

    from kdray.world.pretrain import encode_documents, train_plain
    from kdray.world.zoo import model_config, tiny_model

    def build(staging: Path) -> None:
        tokenizer = world.tokenizer()
        torch.manual_seed(init_seed(name, world.family, seed))
        model = AutoModelForCausalLM.from_config(model_config(tiny_model(name), tokenizer))
        recipe = pretrain.train_config(teacher, seed)
        examples = encode_documents(world.pretraining_documents(), tokenizer)
        curve = train_plain(model, examples, tokenizer.pad_token_id, recipe, on_report=on_report)
        model.save_pretrained(str(staging), safe_serialization=True)
        record = {"model": name, "seed": seed, "recipe": to_dict(recipe), "curve": curve}
        (staging / CURVE_FILE).write_text(json.dumps(record, indent=1))

    target = base_folder(world, name, seed, pretrain, teacher)
    return build_once(target, build, verify=True, on_rebuild=say)


def pretraining_record(folder: Path) -> dict:
    """What a base's pretraining did: its recipe and loss curve."""
    return json.loads((folder / CURVE_FILE).read_text())
