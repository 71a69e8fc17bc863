"""LoRA through peft: adapters on the study's projections for teachers and students, and the
merge that turns a trained adapter back into an ordinary model folder for evaluation and
for use as a teacher."""

from __future__ import annotations

import torch

from kdray.config.run import TrainConfig


def lora_config(train: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=train.lora_rank,
        lora_alpha=train.lora_alpha,
        lora_dropout=train.lora_dropout,
        target_modules=list(train.lora_targets),
        task_type="CAUSAL_LM",
    )


def with_lora(model: torch.nn.Module, train: TrainConfig) -> torch.nn.Module:
    """`model` with trainable adapters; every base weight is frozen."""
    from peft import get_peft_model

    missing = [t for t in train.lora_targets if not _has_module(model, t)]
    if missing:
        raise ValueError(
            f"LoRA targets {missing} are not modules of {type(model).__name__}: "
            "set lora_targets to its projection names"
        )
    return get_peft_model(model, lora_config(train))


def merged_lora_model(
    base: torch.nn.Module, state: dict[str, torch.Tensor], train: TrainConfig
) -> torch.nn.Module:
    """Load a trained LoRA model's full state (base + adapters) onto `base` and merge the
    adapters into its weights: an ordinary model again."""
    model = with_lora(base, train)
    model.load_state_dict(state)
    return model.merge_and_unload()


def trainable_parameters(model: torch.nn.Module) -> int:
    # ZeRO-3 leaves each rank an empty placeholder; ds_numel is the full size.
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad)


def _has_module(model: torch.nn.Module, suffix: str) -> bool:
    return any(name.split(".")[-1] == suffix for name, _ in model.named_modules())
