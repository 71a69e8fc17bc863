"""The tiny world's pretrained bases: one per (model, seed), pretrained on the world's generic
text (kdray.world.pretraining) from a seeded random initialisation, saved as a model folder and
cached by the content hash of what produced it (world, model, seed, recipe).

The default study's bases also ship with the package (`packaged_bases/`, 3 MB, written by
`python -m kdray.cli.package_bases`): a base the cache lacks is copied from there when the
package has it for the same world, tokenizer included (its SHA-256), and its files match their
checksums; any other base is pretrained."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdray.cache import build_once, content_key, file_sha256, verify_checksums
from kdray.config.pretrain import PretrainConfig
from kdray.config.run import to_dict
from kdray.console import say
from kdray.world.build import World, init_seed

CURVE_FILE = "pretraining.json"
PACKAGED_BASES = Path(__file__).with_name("packaged_bases")
PACKAGED_CHECKSUMS = "checksums.json"
PACKAGED_RECORD = "packaged.json"
"""In a packaged base: the SHA-256 of the tokenizer it was pretrained with, and how it was made."""
TOKENIZER_FILE = "tokenizer.json"


def base_recipe(pretrain: PretrainConfig, teacher: bool, seed: int) -> dict[str, Any]:
    """The pretraining recipe that makes a base, as its cache key and record hold it. The plain
    pretraining loop does not average weights, so `average_decay` (a Ray Train loop option,
    added later) is not part of what makes a base: leaving it out keeps the bases built before
    it, the packaged ones included, valid."""
    recipe = to_dict(pretrain.train_config(teacher, seed))
    recipe.pop("average_decay")
    return recipe


def base_folder(
    world: World, name: str, seed: int, pretrain: PretrainConfig, teacher: bool
) -> Path:
    key = content_key(world.key, name, seed, base_recipe(pretrain, teacher, seed))
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
        record = {
            "model": name, "seed": seed, "recipe": base_recipe(pretrain, teacher, seed),
            "curve": curve,
        }  # fmt: skip
        (staging / CURVE_FILE).write_text(json.dumps(record, indent=1))

    target = base_folder(world, name, seed, pretrain, teacher)
    return build_once(target, build, verify=True, on_rebuild=say)


def tokenizer_sha256(world: World) -> str:
    return file_sha256(world.tokenizer_dir / TOKENIZER_FILE)


def packaged_base(world: World, folder: Path, packaged: Path = PACKAGED_BASES) -> Path | None:
    """The package's copy of the base cached at `folder`, if it ships one pretrained with this
    world's tokenizer (a tokenizer trained differently would make its embeddings mean nothing)."""
    candidate = packaged / folder.name
    if not (candidate / PACKAGED_RECORD).is_file():
        return None
    record = json.loads((candidate / PACKAGED_RECORD).read_text())
    return candidate if record["tokenizer_sha256"] == tokenizer_sha256(world) else None


def install_packaged_base(world: World, folder: Path, packaged: Path = PACKAGED_BASES) -> bool:
    """Copy the package's base for `folder` into the cache, its checksums verified first (a
    damaged copy raises CacheCorruptError); False when the package has none for this world."""
    source = packaged_base(world, folder, packaged)
    if source is None:
        return False

    def copy(staging: Path) -> None:
        verify_checksums(source, PACKAGED_CHECKSUMS)
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns(PACKAGED_CHECKSUMS))

    build_once(folder, copy, verify=True, on_rebuild=say)
    return True


def pretraining_record(folder: Path) -> dict:
    """What a base's pretraining did: its recipe and loss curve."""
    return json.loads((folder / CURVE_FILE).read_text())
