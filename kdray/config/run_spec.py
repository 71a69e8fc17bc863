"""RunSpec: everything one Ray Train run needs, as one serialisable record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kdray.config.run import EvalConfig, KDConfig, TrainConfig, to_dict

if TYPE_CHECKING:
    from kdray.hub.world import HubWorld
    from kdray.world.build import World


@dataclass(frozen=True)
class RunSpec:
    """One training run: a teacher's preparation or a student trial."""

    role: str
    """`teacher` (task-aware teacher preparation) or `student` (a trial)."""
    model_name: str
    init_dir: str
    """Model folder the run starts from (loaded with from_pretrained)."""
    tokenizer_dir: str
    data_dir: str
    """Folder with train.json / validation.json / test.json (LLM-Adapters form)."""
    train: TrainConfig
    kd: KDConfig = field(default_factory=lambda: KDConfig(method="sft"))
    domain: str = "math"
    """`math`, `commonsense` (accuracy by the study's answer extraction) or `instruction`
    (ROUGE-L against the reference response)."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    teacher_dir: str | None = None
    """Teacher model folder (methods that use a teacher)."""
    teacher_cache: str | None = None
    """Teacher log-prob cache folder (kdray/teacher/cache.py): read instead of running the
    teacher; None runs the teacher online."""
    teacher_server: str | None = None
    """Ray actor name of the trial's teacher server (teacher_placement=actor); set by fit()."""
    teacher_responses: str | None = None
    """seqkd: JSON list of the teacher's responses to the training prompts, in order."""
    teacher_predictions: str | None = None
    """JSON of the teacher's test predictions, for agreement and fidelity."""
    eval_teacher_dir: str | None = None
    """The study's teacher model folder, for the held-out KL(teacher || student) of every
    trial (sft included); None skips that metric."""
    tracking_uri: str | None = None
    run_id: str | None = None
    """MLflow run that rank 0 writes the curve, metrics and predictions to."""
    run_name: str | None = None
    """That run's name, for the progress line of a Train run that trains several runs."""
    system_metrics_seconds: float = 0.0
    """Rank 0 samples CPU, memory, disk, network (and GPU) every this many seconds into the
    run's `system/` metrics (MLflow's SystemMetricsMonitor); 0: off."""

    @classmethod
    def in_world(
        cls, world: World | HubWorld, role: str, model_name: str, train: TrainConfig, kd: KDConfig,
        eval: EvalConfig, init_dir: str | None = None, **extra: Any,
    ) -> RunSpec:  # fmt: skip
        """A run on `world`'s data and tokenizer, starting from `init_dir` (default: the
        world's `model_name` folder)."""
        return cls(
            role=role,
            model_name=model_name,
            init_dir=init_dir or str(world.model_dir(model_name)),
            tokenizer_dir=str(world.tokenizer_for(model_name)),
            data_dir=str(world.data_dir),
            domain=world.domain,
            train=train,
            kd=kd,
            eval=eval,
            **extra,
        )

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunSpec:
        values = dict(values)
        values["train"] = TrainConfig(**values["train"])
        values["kd"] = KDConfig(**values["kd"])
        values["eval"] = EvalConfig(**values["eval"])
        return cls(**values)
