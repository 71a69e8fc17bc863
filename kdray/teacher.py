"""Task-aware teachers: fine-tuned once on the domain's training data (through the same
Ray Train + DeepSpeed path as the trials), evaluated, cached and reused by every trial."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from kdray.cache import build_once, content_key
from kdray.config import EvalConfig, KDConfig, TrainConfig, to_dict
from kdray.run_spec import RunSpec
from kdray.train_loop import METRICS_FILE, PREDICTIONS_FILE
from kdray.train_run import fit
from kdray.world.build import World


@dataclass(frozen=True)
class PreparedTeacher:
    name: str
    folder: Path
    """Model folder of the fine-tuned teacher, with its metrics and test predictions."""
    built_now: bool

    @property
    def predictions_file(self) -> Path:
        return self.folder / PREDICTIONS_FILE

    @property
    def metrics(self) -> dict[str, float]:
        return json.loads((self.folder / METRICS_FILE).read_text())


def teacher_folder(world: World, name: str, train: TrainConfig, eval_config: EvalConfig) -> Path:
    key = content_key(world.key, name, to_dict(train), to_dict(eval_config))
    return world.root.parent.parent / "teachers" / f"{name}-{key}"


def prepare_teacher(
    world: World,
    name: str,
    train: TrainConfig,
    eval_config: EvalConfig,
    storage_path: Path,
    tracking_uri: str | None = None,
    run_id: str | None = None,
) -> PreparedTeacher:
    """Fine-tune `name` on the world's training split (SFT) unless already cached."""
    spec = RunSpec.in_world(
        world, "teacher", name, train, KDConfig(method="sft"), eval_config,
        tracking_uri=tracking_uri, run_id=run_id,
    )  # fmt: skip

    def build(staging: Path) -> None:
        checkpoint = fit(spec, f"teacher-{name}", storage_path)
        with checkpoint.as_directory() as folder:
            shutil.copytree(folder, staging)

    folder, built_now = build_once(teacher_folder(world, name, train, eval_config), build)
    return PreparedTeacher(name, folder, built_now)
