"""The DeepSpeed configuration of a run's TrainConfig (the engine's and the ZeRO-3 teacher's)."""

from __future__ import annotations

from typing import Any

from kdray.config.run import TrainConfig


def deepspeed_config(train: TrainConfig) -> dict[str, Any]:
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": train.batch_size,
        "gradient_accumulation_steps": train.grad_accum_steps,
        "gradient_clipping": train.grad_clip,
        "zero_optimization": {"stage": train.zero_stage},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if train.zero_stage == 3:
        config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
    if train.use_gpu:
        config["bf16"] = {"enabled": True}
    return config
