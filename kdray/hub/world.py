"""The study's own world: hub checkpoints (kdray.hub.zoo) and real data (kdray.hub.tasks), with
the same interface as the tiny world so the same study code runs on both.

The data of a domain is written once into a cached folder in the tiny world's layout:
`train.json` (the domain's training set less the validation items), `validation.json` (items
held out of the training set, seeded) and `test.json` (every evaluation task of the domain,
each record tagged with its `task`). Models are not copied: `model_dir` is the hub id, which
`from_pretrained` resolves (safetensors only, no remote code)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from kdray.cache import build_once, content_key
from kdray.console import say
from kdray.errors import ConfigError
from kdray.eval.answers import ROUGE, answer_kind, parse_gold
from kdray.hub.task_files import load_task, load_train_set
from kdray.hub.tasks import tasks_for_domain
from kdray.hub.zoo import HUB_MODELS, HubModel, hub_model

TRAIN_SET_OF_DOMAIN = {
    "math": "math10k",
    "commonsense": "commonsense15k",
    "instruction": "dolly15k",
}
DATA_VERSION = 1
"""Bump when the folder's content changes for the same inputs."""


@dataclass(frozen=True)
class HubWorld:
    """A domain's data folder plus the hub zoo."""

    root: Path
    domain: str

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def key(self) -> str:
        return self.root.name

    def model_dir(self, name: str) -> str:
        return hub_model(name).hub_id

    def tokenizer_for(self, name: str) -> str:
        return hub_model(name).hub_id

    def parameter_counts(self) -> dict[str, int]:
        return {name: model.parameters for name, model in HUB_MODELS.items()}

    def lm_head_widths(self) -> dict[str, int]:
        return {name: model.vocab_size for name, model in HUB_MODELS.items()}

    def built_model(self, name: str) -> HubModel:
        return hub_model(name)

    def tasks(self) -> list[str]:
        return json.loads((self.root / "world.json").read_text())["tasks"]


@dataclass(frozen=True)
class HubData:
    """What names and builds a domain's data folder."""

    domain: str  # math | commonsense | instruction
    data_dir: str | None = None  # LLM-Adapters / MiniLLM files; None reads the hub
    validation_items: int = 500  # held out of the train set for validation
    seed: int = 6  # of the hold-out split
    eval_limit: int | None = None  # test items per task; None keeps all

    def source(self) -> str:
        """Where the data comes from: the data folder's absolute path, or the hub."""
        return str(Path(self.data_dir).resolve()) if self.data_dir else "hub"


def hub_data_folder(spec: HubData, cache_dir: Path) -> Path:
    """The cache folder of a domain's data, named by what produces it."""
    key = content_key(
        DATA_VERSION, spec.domain, spec.source(), spec.validation_items, spec.seed, spec.eval_limit
    )
    return cache_dir / "hub_data" / f"{spec.domain}-{key}"


def domain_records(spec: HubData) -> dict[str, list[dict[str, str]]]:
    """The domain's train, validation and test records from `data_dir` or the hub, every
    file read and checked (ConfigError naming the file and record); writes nothing."""
    train = load_train_set(TRAIN_SET_OF_DOMAIN[spec.domain], spec.data_dir)
    test = []
    for task in tasks_for_domain(spec.domain):
        test += load_task(task, spec.data_dir, limit=spec.eval_limit)
    train, validation = hold_out(train, spec.domain, spec.validation_items, spec.seed)
    return {"train": train, "validation": validation, "test": test}


def build_hub_world(spec: HubData, cache_dir: Path) -> tuple[HubWorld, bool]:
    """The domain's data folder from `data_dir` (LLM-Adapters / MiniLLM files) or the hub,
    cached by what produced it; returns (world, built_now)."""
    folder = hub_data_folder(spec, cache_dir)

    def build(staging: Path) -> None:
        records = domain_records(spec)
        (staging / "data").mkdir(parents=True)
        for name, split in records.items():
            (staging / "data" / f"{name}.json").write_text(json.dumps(split))
        manifest = {
            "domain": spec.domain,
            "source": spec.source(),
            "sizes": {name: len(split) for name, split in records.items()},
            "tasks": list(dict.fromkeys(r["task"] for r in records["test"])),
        }
        (staging / "world.json").write_text(json.dumps(manifest, indent=1))

    root, built = build_once(folder, build, verify=True, on_rebuild=say)
    return HubWorld(root, spec.domain), built


def hold_out(
    records: list[dict[str, str]], domain: str, count: int, seed: int
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(train, validation): `count` seeded items with a usable gold answer held out."""

    def scorable(record: dict[str, str]) -> bool:
        kind = answer_kind(domain, record.get("answer", ""))
        if kind == ROUGE:
            return bool(record.get("answer"))
        try:
            parse_gold(kind, record.get("answer", ""))
        except ValueError:
            return False
        return True

    candidates = [i for i, r in enumerate(records) if scorable(r)]
    if len(candidates) < count:
        raise ConfigError(
            f"the {domain} training set has {len(candidates)} items with a usable answer, "
            f"fewer than the {count} validation items asked for"
        )
    held = set(random.Random(seed).sample(candidates, count))
    validation = [records[i] for i in sorted(held)]
    train = [r for i, r in enumerate(records) if i not in held]
    return train, validation
