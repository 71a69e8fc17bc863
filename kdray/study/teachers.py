"""Teachers. Task-aware: fine-tuned once on the domain's training data (through the same
Ray Train + DeepSpeed path as the trials, full or LoRA), evaluated, cached and reused by every
trial. Task-unaware: the family's base model as it is, evaluated and cached the same way."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import ray

from kdray.cache import build_once, content_key
from kdray.config.run import EvalConfig, KDConfig, TrainConfig, to_dict
from kdray.config.run_spec import RunSpec
from kdray.console import say
from kdray.eval.evaluate import PREDICTIONS_FILE
from kdray.hub.world import HubWorld
from kdray.train.loop import METRICS_FILE
from kdray.train.run import fit
from kdray.world.build import World

RESPONSES_FILE = "responses.json"


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


TEACHER_FORMAT = 2
"""2: each teacher's Train run is named by its content key. Under 1 a second teacher of the
same model in one cache (another domain, another recipe) could be a copy of the first, so
folders made then are not reused."""


def teacher_folder(
    world: World | HubWorld,
    name: str,
    kind: str,
    train: TrainConfig,
    eval_config: EvalConfig,
    init_dir: str | None = None,
) -> Path:
    """The cache folder of a teacher; `init_dir`: the base it starts from, when it is not the
    world's own model folder (a pretrained tiny base)."""
    trained = train.what_it_trains() if kind == "task-aware" else None
    start = [Path(init_dir).name] if init_dir else []  # the base's name holds its content key
    key = content_key(TEACHER_FORMAT, world.key, name, kind, trained, to_dict(eval_config), *start)
    return world.root.parent.parent / "teachers" / f"{name}-{kind}-{key}"


def prepare_teacher(
    world: World | HubWorld,
    name: str,
    kind: str,
    train: TrainConfig,
    eval_config: EvalConfig,
    storage_path: Path,
    tracking_uri: str | None = None,
    run_id: str | None = None,
    init_dir: str | None = None,
) -> PreparedTeacher:
    """The teacher of `kind`, from the cache or prepared now: `task-aware` fine-tunes `name`
    (from `init_dir`, default the world's model folder) on the world's training split (SFT);
    `task-unaware` evaluates that starting model as it is."""
    spec = RunSpec.in_world(
        world, "teacher", name, train, KDConfig(method="sft"), eval_config, init_dir=init_dir,
        tracking_uri=tracking_uri, run_id=run_id,
    )  # fmt: skip

    target = teacher_folder(world, name, kind, train, eval_config, init_dir)

    def build(staging: Path) -> None:
        if kind == "task-unaware":
            task = ray.remote(**_task_resources(train.use_gpu))(_evaluate_base_model)
            ray.get(task.remote(spec.to_dict(), str(staging)))
            return
        # Named by the teacher's content key: Ray Train restores a run of the same name in the
        # same storage, which should resume this teacher's own interrupted training and never
        # hand back another teacher (another domain's, or another recipe's) of the same model.
        shutil.copytree(fit(spec, f"teacher-{target.name}", storage_path), staging)

    folder, built_now = build_once(target, build, verify=True, on_rebuild=say)
    return PreparedTeacher(name, folder, built_now)


def _evaluate_base_model(spec_dict: dict, staging: str) -> None:
    """A task-unaware teacher's folder: the base model and tokenizer, its metrics and test
    predictions (written by the same evaluation as every trial)."""
    from transformers import AutoTokenizer

    from kdray.eval.evaluate import evaluate
    from kdray.models import inference_device, load_model, quiet_libraries

    quiet_libraries()
    spec = RunSpec.from_dict(spec_dict)
    out = Path(staging)
    device, dtype = inference_device(spec.train.use_gpu)
    model = load_model(spec.init_dir, device, dtype)
    model.save_pretrained(str(out), safe_serialization=True)  # a folder or a hub id alike
    tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer_dir)
    tokenizer.save_pretrained(str(out))
    metrics = evaluate(spec, model, tokenizer, out)
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=1))


def _task_resources(use_gpu: bool) -> dict[str, float]:
    """A one-off generation task: one GPU on a GPU cluster, else one CPU."""
    return {"num_gpus": 1, "num_cpus": 1} if use_gpu else {"num_cpus": 1}


RESPONSES_VERSION = 2
"""2: generated with the tokenizer the teacher trained on (1 took transformers' Qwen2Tokenizer
for tiny Qwen teachers, which tokenizes the tiny world's text differently)."""


def teacher_responses_file(
    teacher: PreparedTeacher, world: World | HubWorld, count: int | None, eval_config: EvalConfig
) -> Path:
    key = content_key(
        RESPONSES_VERSION, teacher.folder.name, world.key, count, to_dict(eval_config)
    )
    return world.root.parent.parent / "teacher_outputs" / f"{teacher.name}-{key}" / RESPONSES_FILE


def prepare_teacher_responses(
    teacher: PreparedTeacher,
    world: World | HubWorld,
    count: int | None,
    eval_config: EvalConfig,
    use_gpu: bool = False,
) -> tuple[Path, bool]:
    """The teacher's responses (greedy, or sampled as the study evaluates) to the first `count`
    training prompts (Kim & Rush's sequence-level KD data), generated once per teacher x data
    x decoding and cached.
    Returns (file, built_now); generation runs as a Ray task on the cluster."""
    target = teacher_responses_file(teacher, world, count, eval_config)

    def build(staging: Path) -> None:
        staging.mkdir(parents=True)
        task = ray.remote(**_task_resources(use_gpu))(_generate_responses)
        responses = ray.get(
            task.remote(str(teacher.folder), str(world.data_dir), count, eval_config, use_gpu)
        )
        (staging / RESPONSES_FILE).write_text(json.dumps(responses))

    folder, built_now = build_once(target.parent, build, verify=True, on_rebuild=say)
    return folder / RESPONSES_FILE, built_now


def _generate_responses(
    model_dir: str, data_dir: str, count: int | None, eval_config: EvalConfig, use_gpu: bool
) -> list[str]:
    from kdray.data.examples import read_split
    from kdray.eval.responses import generate_responses
    from kdray.models import inference_device, load_model, load_tokenizer, quiet_libraries

    quiet_libraries()
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, *inference_device(use_gpu))
    problems = read_split(data_dir, "train")[:count]
    return generate_responses(model, tokenizer, problems, eval_config)
