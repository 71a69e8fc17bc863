"""An exponential moving average of a run's trainable weights (Polyak averaging), which the run
exports and evaluates instead of its last weights when TrainConfig.average_decay > 0.

Why: the last iterate of a noisy optimiser sits somewhere in its basin by chance; the average
sits nearer the middle. Two runs that differ only in their loss (SFT and KD of one seed) then
differ by what their losses do, less by where the last few batches happened to push them.

Each rank averages the weights it holds: whole tensors below ZeRO-3, its own partition under
ZeRO-3, so the average costs no collective; the export gathers it like any other weights."""

from __future__ import annotations

import torch

WARMUP = 10
"""The decay at step t is min(decay, (1 + t) / (WARMUP + t)), so the starting weights fade
within the first steps instead of weighing on the average for hundreds of them."""


def decay_at(decay: float, step: int) -> float:
    """The averaging decay applied after optimizer step `step` (1-based)."""
    return min(decay, (1 + step) / (WARMUP + step))


def local_weights(engine, zero_stage: int) -> dict[str, torch.Tensor]:
    """The trainable weights this rank holds (under ZeRO-3 its partition), by parameter name:
    live tensors, not copies."""
    params = {n: p for n, p in engine.module.named_parameters() if p.requires_grad}
    return {n: (p.ds_tensor if zero_stage == 3 else p).data for n, p in params.items()}


@torch.no_grad()
def update_average(
    average: dict[str, torch.Tensor] | None, weights: dict[str, torch.Tensor], decay: float
) -> dict[str, torch.Tensor]:
    """The average after one more step: `decay` of the old one plus the rest of `weights` (in
    fp32 whatever the weights' dtype, on the weights' device: no transfer per step); the first
    call copies `weights`."""
    if average is None:
        return {n: w.detach().float().clone() for n, w in weights.items()}
    for name, weight in weights.items():
        if average[name].device != weight.device:  # restored from a checkpoint, on the CPU
            average[name] = average[name].to(weight.device)
        average[name].lerp_(weight.detach().float(), 1.0 - decay)
    return average


@torch.no_grad()
def load_average(engine, zero_stage: int, average: dict[str, torch.Tensor]) -> None:
    """Put the averaged weights into the model in place of the last ones (each rank its own
    part), before the export gathers them."""
    for name, weight in local_weights(engine, zero_stage).items():
        weight.copy_(average[name].to(weight.dtype))
