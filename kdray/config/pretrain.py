"""PretrainConfig: how the tiny world's base models are pretrained on its generic text."""

from __future__ import annotations

from dataclasses import dataclass

from kdray.config.run import TrainConfig, _check


@dataclass(frozen=True)
class PretrainConfig:
    """Pretraining of the tiny bases (kdray.world.bases). Every student and teacher of a tiny
    study fine-tunes from a base of its size; a student's base is pretrained once per study
    seed (its initialisation and data order), the teacher's once."""

    steps: int = 400
    """Optimizer steps of a student-sized base."""
    teacher_steps: int = 800
    """Optimizer steps of the teacher's base (a larger model, pretrained longer)."""
    batch_size: int = 32
    learning_rate: float = 5e-3
    warmup_steps: int = 40
    weight_decay: float = 0.1
    min_lr_ratio: float = 0.1
    """The learning rate's floor as a fraction of `learning_rate`."""

    def __post_init__(self) -> None:
        _check(self.steps >= 1 and self.teacher_steps >= 1, "pretraining needs >= 1 step")
        # The rest is checked where it becomes a TrainConfig.
        self.train_config(teacher=False, seed=0)

    def train_config(self, teacher: bool, seed: int) -> TrainConfig:
        """The plain loop's recipe for a student's (or the teacher's) base of `seed`."""
        steps = self.teacher_steps if teacher else self.steps
        return TrainConfig(
            steps=steps,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            warmup_steps=min(self.warmup_steps, steps),
            weight_decay=self.weight_decay,
            min_lr_ratio=self.min_lr_ratio,
            report_every=max(1, steps // 10),
            seed=seed,
        )
