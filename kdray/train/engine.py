"""The DeepSpeed engine of a Train worker: config, initialisation and weight export.

The optimizer is plain torch AdamW handed to DeepSpeed: on CPU the fused DeepSpeed optimizers
bring nothing and each costs a one-minute JIT build on a fresh machine."""

from __future__ import annotations

import os

import torch

from kdray.config.deepspeed import deepspeed_config
from kdray.config.run import TrainConfig
from kdray.config.schedule import warmup_then_decay


def create_engine(model: torch.nn.Module, train: TrainConfig):
    """A DeepSpeed engine over `model` in the current (Ray Train) process group; `train.steps`
    must be the resolved step count (the schedule ends there)."""
    if not train.use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed  # after DS_ACCELERATOR: DeepSpeed picks its accelerator at import

    trainable = [p for p in model.parameters() if p.requires_grad]  # LoRA: the adapters only
    optimizer = torch.optim.AdamW(
        trainable, lr=train.learning_rate, weight_decay=train.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_decay(train))
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=deepspeed_config(train),
        dist_init_required=False,
    )
    engine.checkpoint_engine = weights_only_checkpoint_engine(engine)
    return engine


def weights_only_checkpoint_engine(engine):
    """DeepSpeed's torch checkpoint engine, but loading with `torch.load(weights_only=True)`:
    DeepSpeed itself unpickles arbitrary objects. Its ZeRO optimizer states hold four of its
    own plain classes, allowed by name; anything else in a file is refused."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import (
        TorchCheckpointEngine,
    )
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    allowed = [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]

    class WeightsOnlyCheckpointEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location=None):
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location=map_location, weights_only=True)

    return WeightsOnlyCheckpointEngine(engine._config)


def full_state_dict(engine, zero_stage: int) -> dict[str, torch.Tensor]:
    """The full fp32 weights on every rank; under ZeRO-3 the shards are gathered (a
    collective: every rank must call this)."""
    module = engine.module
    if zero_stage < 3:
        return {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
        return {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}


def trainable_state(engine, zero_stage: int) -> dict[str, torch.Tensor]:
    """A CPU copy of the trainable weights (the adapters under LoRA), gathered under ZeRO-3
    (a collective: every rank must call this)."""
    params = {n: p for n, p in engine.module.named_parameters() if p.requires_grad}
    if zero_stage < 3:
        return {n: p.detach().float().cpu().clone() for n, p in params.items()}
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(params.values()), modifier_rank=None):
        return {n: p.detach().float().cpu().clone() for n, p in params.items()}


def load_trainable_state(engine, zero_stage: int, state: dict[str, torch.Tensor]) -> None:
    """Put weights saved by `trainable_state` back into the model (before its export)."""
    params = {n: p for n, p in engine.module.named_parameters() if n in state}
    if zero_stage < 3:
        with torch.no_grad():
            for name, parameter in params.items():
                parameter.copy_(state[name].to(parameter.dtype))
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(params.values()), modifier_rank=0):
        with torch.no_grad():
            for name, parameter in params.items():
                parameter.copy_(state[name].to(parameter.dtype))
