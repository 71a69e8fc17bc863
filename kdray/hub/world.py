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
from kdray.eval.answers import parse_gold
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


def build_hub_world(
    domain: str,
    cache_dir: Path,
    data_dir: str | None = None,
    validation_items: int = 500,
    seed: int = 6,
    eval_limit: int | None = None,
) -> tuple[HubWorld, bool]:
    """The domain's data folder from `data_dir` (LLM-Adapters / MiniLLM files) or the hub,
    cached by what produced it; returns (world, built_now)."""
    source = str(Path(data_dir).resolve()) if data_dir else "hub"
    key = content_key(DATA_VERSION, domain, source, validation_items, seed, eval_limit)
    folder = cache_dir / "hub_data" / f"{domain}-{key}"

    def build(staging: Path) -> None:
        train = load_train_set(TRAIN_SET_OF_DOMAIN[domain], data_dir)
        train, validation = hold_out(train, domain, validation_items, seed)
        test = []
        for spec in tasks_for_domain(domain):
            test += load_task(spec, data_dir, limit=eval_limit)
        (staging / "data").mkdir(parents=True)
        for name, records in (("train", train), ("validation", validation), ("test", test)):
            (staging / "data" / f"{name}.json").write_text(json.dumps(records))
        manifest = {
            "domain": domain,
            "source": source,
            "sizes": {"train": len(train), "validation": len(validation), "test": len(test)},
            "tasks": list(dict.fromkeys(r["task"] for r in test)),
        }
        (staging / "world.json").write_text(json.dumps(manifest, indent=1))

    root, built = build_once(folder, build, verify=True, on_rebuild=say)
    return HubWorld(root, domain), built


def hold_out(
    records: list[dict[str, str]], domain: str, count: int, seed: int
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(train, validation): `count` seeded items with a usable gold answer held out."""
    from kdray.eval.responses import ROUGE, answer_kind

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
