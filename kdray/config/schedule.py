"""The learning-rate schedule every kdray training loop follows (DeepSpeed trials and the
tiny world's pretraining alike), as a LambdaLR factor."""

from __future__ import annotations

import math

from kdray.config.run import TrainConfig


def warmup_then_decay(train: TrainConfig):
    """Linear warm-up, then cosine or linear decay to `min_lr_ratio` at the last step."""

    def factor(step: int) -> float:
        if step < train.warmup_steps:
            return (step + 1) / train.warmup_steps
        progress = min(1.0, (step - train.warmup_steps) / max(1, train.steps - train.warmup_steps))
        decay = (
            1.0 - progress
            if train.lr_schedule == "linear"
            else 0.5 * (1 + math.cos(math.pi * progress))
        )
        return train.min_lr_ratio + (1 - train.min_lr_ratio) * decay

    return factor
