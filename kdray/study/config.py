"""StudyConfig: what a study varies and what it fixes, validated before anything runs.
Kept free of Ray and MLflow imports so the command line answers bad input at once."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kdray.cache import default_cache_dir
from kdray.config.pretrain import PretrainConfig
from kdray.config.run import TEACHER_KINDS, EvalConfig, KDConfig, TrainConfig, _check
from kdray.hub.task_files import data_root
from kdray.hub.zoo import check_pair, hub_model
from kdray.world.domains import WorldConfig, check_domain, domain_of
from kdray.world.synthetic_math import MathWorldConfig
from kdray.world.zoo import FAMILIES, tiny_model

if TYPE_CHECKING:
    pass

ZOOS = ("tiny", "hub")
LOG_MODELS = ("all", "picks", "none")
"""--log-models: every trial's student as an MLflow model, only optimal.py's picks, or none."""
TRAIN_RUNS = ("packed", "setting", "run")
"""--train-runs: how the grid's runs share Ray Train runs (StudyConfig.train_runs)."""


@dataclass(frozen=True)
class StudyConfig:
    """What a study varies (methods, temperatures, noise, students, seeds) and what it fixes."""

    name: str = "temperature"
    preset: str = "tiny"
    """The preset it started from (`tiny` or `paper`), tagged on every MLflow run."""
    resume: bool = False
    """Continue the latest unfinished run of this study in its experiment (kdray.study)."""
    zoo: str = "tiny"
    """`tiny`: models and data built here (kdray.world); `hub`: the study's Hugging Face
    checkpoints and benchmarks (kdray.hub.zoo, kdray.hub.tasks)."""
    domain: str = "math"
    """`math`, `commonsense` or `instruction`; must be the domain of `world`."""
    family: str = "qwen"
    """Model family (`qwen` or `llama`; `all` for hub pairs of both): teacher and students
    come from it, sharing its tokenizer."""
    teacher_kinds: tuple[str, ...] = ("task-aware",)
    """Kinds of teacher each KD setting distils from. `task-aware`: the teacher is first
    fine-tuned on the domain's training data (cached); `task-unaware`: the family's base
    model as it is (the study's ablation). Both: every KD trial runs once with each."""
    teacher: str = "tiny-qwen2-m"
    students: tuple[str, ...] = ("tiny-qwen2-xs", "tiny-qwen2-s")
    pairs: tuple[tuple[str, str], ...] = ()
    """(teacher, student) pairs; when given they replace `teacher` x `students`."""
    methods: tuple[str, ...] = ("kd", "revkd")
    """KD methods of the grid; every student also gets one `sft` trial per seed (the baseline)."""
    temperatures: tuple[float, ...] = (1.0, 2.0, 5.0)
    noise_sigmas: tuple[float, ...] = (0.0,)
    seeds: tuple[int, ...] = (0,)
    train_runs: str = "packed"
    """How the grid's runs share Ray Train runs (one MLflow run per run whatever the choice;
    the ~30 s every Train run pays whatever it trains, for its worker processes, imports and
    DeepSpeed set-up, is paid once per Train run):
    - `packed`: as many Train runs as run at once, each training its share of the grid one
      run after another (setting by setting), balanced by the runs' expected work.
      For students trained on CPUs; on GPUs, or while the cluster has no room for a trial yet,
      it is `setting`;
    - `setting`: a Train run per setting, its seeds in turn;
    - `run`: a Train run per run."""
    kd: KDConfig = field(default_factory=KDConfig)
    """Knobs shared by the KD trials (CE weight, beta, lambda, alpha, ...); each trial sets its
    own method, temperature and noise."""
    world: WorldConfig | None = field(default_factory=MathWorldConfig)
    """The tiny world's task (None for the hub zoo)."""
    pretrain: PretrainConfig | None = None
    """Tiny zoo: pretrain a base per model (and per seed for students) on the world's generic
    text, and start every run from it (the tiny preset does); None starts from a random
    initialisation. Hub models are pretrained already."""
    data_dir: str | None = None
    """Hub zoo: a local folder with the LLM-Adapters / MiniLLM data files (None: the hub)."""
    validation_items: int | None = None
    """Validation items held out of the training set (None: the world's own split)."""
    teacher_train: TrainConfig = field(default_factory=TrainConfig)
    student_train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    experiment: str | None = None
    """MLflow experiment; default `kdray-<name>`."""
    tracking_uri: str | None = None
    """MLflow store; default MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db."""
    tracking_wait: float = 600.0
    """Seconds a trial waits for an unreachable tracking server before the study stops (its
    results kept on disk for --resume); training itself goes on meanwhile."""
    cache_dir: str | None = None
    """Worlds, teachers and Ray results; default KDRAY_CACHE or ~/.cache/kdray."""
    max_concurrent: int | None = None
    """Trials in flight; default what the cluster's CPUs (or GPUs) can run at once."""
    system_metrics_seconds: float = 2.0
    """Each trial's system metrics (CPU, memory, GPU) sampled every this many seconds into its
    MLflow run; 0: off. Short, since tiny trials last about a minute."""
    results_dir: str = "results"
    """Where the results table and figure are written (also logged to MLflow)."""
    log_models: str = "all"
    """Trained students logged as MLflow models: `all` (every trial's; the tiny world's are
    kilobytes), `picks` (optimal.py's picks only, then registered; grid studies log none) or
    `none`. optimal.py registers its picks unless `none`."""

    def __post_init__(self) -> None:
        _check(
            self.tracking_wait >= 0,
            f"--tracking-wait must be >= 0 seconds, got {self.tracking_wait:g}",
        )
        _check(
            math.isfinite(self.system_metrics_seconds) and self.system_metrics_seconds >= 0,
            f"--system-metrics-seconds must be >= 0 (0: off), got {self.system_metrics_seconds:g}",
        )
        _check(
            self.log_models in LOG_MODELS,
            f"--log-models must be one of {', '.join(LOG_MODELS)}, got {self.log_models!r}",
        )
        _check(
            self.train_runs in TRAIN_RUNS,
            f"--train-runs must be one of {', '.join(TRAIN_RUNS)}, got {self.train_runs!r}",
        )
        _check(
            self.max_concurrent is None or self.max_concurrent >= 1,
            f"--max-concurrent must be >= 1, got {self.max_concurrent}",
        )
        self._check_texts()
        for flag, values in (
            ("--temperatures", self.temperatures), ("--noise-sigmas", self.noise_sigmas),
            ("--seeds", self.seeds), ("--methods", self.methods), ("--students", self.students),
        ):  # fmt: skip
            twice = sorted({v for v in values if list(values).count(v) > 1}, key=str)
            shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in twice)
            _check(
                not twice,
                f"{flag} lists {shown} more than once: give each value once (each setting runs "
                "once per seed)",
            )
        for seed in self.seeds:
            _check(0 <= seed < 2**32, f"seed {seed} is out of range: seeds are 0 to 2**32 - 1")
        check_domain(self.domain)
        _check(self.zoo in ZOOS, f"unknown zoo {self.zoo!r}: choose tiny or hub")
        families = (*FAMILIES, "all") if self.zoo == "hub" else FAMILIES
        _check(
            self.family in families,
            f"unknown family {self.family!r}: choose one of {', '.join(families)}",
        )
        object.__setattr__(self, "teacher_kinds", tuple(self.teacher_kinds))
        for kind in self.teacher_kinds:
            _check(
                kind in TEACHER_KINDS,
                f"unknown teacher kind {kind!r}: choose one of {', '.join(TEACHER_KINDS)}",
            )
        if self.data_dir is not None:
            data_root(self.data_dir)  # a folder, not missing, not a file
        if self.zoo == "tiny":
            _check(self.data_dir is None, "--data-dir is for the paper preset's real data")
            _check(self.world is not None, "the tiny zoo needs a world config")
            _check(
                domain_of(self.world) == self.domain,
                f"the world config is for {domain_of(self.world)}, not {self.domain}",
            )
        else:
            _check(
                self.pretrain is None, "pretraining is for the tiny zoo; hub models come pretrained"
            )
        for teacher, student in self.teacher_student_pairs():
            for model in (teacher, student):
                spec = tiny_model(model) if self.zoo == "tiny" else hub_model(model)
                _check(
                    self.family in ("all", spec.family),
                    f"{model} is a {spec.family} model but the study's family is "
                    f"{self.family}: pass --family {spec.family} or a {self.family} model",
                )
            if self.zoo == "hub":  # tiny sizes are known once the world is built
                check_pair(hub_model(teacher), hub_model(student))
        for label, values in (
            ("students", self.students),
            ("methods", self.methods),
            ("temperatures", self.temperatures),
            ("noise sigmas", self.noise_sigmas),
            ("seeds", self.seeds),
            ("teacher kinds", self.teacher_kinds),
        ):
            _check(len(values) > 0, f"no {label} given: pass at least one")
        _check("sft" not in self.methods, "sft is always run per student; list only KD methods")
        self.kd_settings()  # validates every (method, T, sigma) of the grid

    def _check_texts(self) -> None:
        """Names and paths given as empty text: refused, not silently the default."""
        defaults = {
            "--experiment": (self.experiment, f"kdray-{self.name}"),
            "--tracking-uri": (self.tracking_uri, "$MLFLOW_TRACKING_URI or ./mlflow.db"),
            "--cache-dir": (self.cache_dir, "$KDRAY_CACHE or ~/.cache/kdray"),
            "--results-dir": (self.results_dir, f"results/{self.name}"),
            "--data-dir": (self.data_dir, "the hub"),
        }
        for flag, (value, default) in defaults.items():
            _check(
                value is None or value.strip() != "",
                f"{flag} is empty: give it a value, or omit the flag for its default ({default})",
            )

    def teacher_student_pairs(self) -> list[tuple[str, str]]:
        if self.pairs:
            return list(self.pairs)
        return [(self.teacher, student) for student in self.students]

    def teachers(self) -> list[str]:
        return list(dict.fromkeys(t for t, _ in self.teacher_student_pairs()))

    def distinct_students(self) -> list[str]:
        return list(dict.fromkeys(s for _, s in self.teacher_student_pairs()))

    @property
    def teacher_kind(self) -> str:
        """The kinds as one label: `task-aware`, or `task-aware,task-unaware` when compared."""
        return ",".join(self.teacher_kinds)

    @property
    def experiment_name(self) -> str:
        return self.experiment or f"kdray-{self.name}"

    def cache_root(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()

    def kd_settings(self) -> list[KDConfig]:
        """The grid's KD settings. Methods that take no teacher logits (seqkd with k = 0) do
        not vary with T or sigma, so they get one setting instead of identical copies."""
        settings = []
        for method in self.methods:
            base = dataclasses.replace(self.kd, method=method)
            if not base.needs_teacher_logits:
                settings.append(dataclasses.replace(base, temperature=1.0, noise_sigma=0.0))
                continue
            for temperature in self.temperatures:
                for sigma in self.noise_sigmas:
                    settings.append(
                        dataclasses.replace(base, temperature=temperature, noise_sigma=sigma)
                    )
        return settings
