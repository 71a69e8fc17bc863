"""Loading model folders (safetensors only, never remote code) and quieting the libraries a
process loads: shared by the Train workers, the teacher placements and the cache builders."""

from __future__ import annotations

import logging
import os
import warnings

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PretrainedConfig


def load_model(
    folder: str, device: torch.device | None, dtype: torch.dtype = torch.float32, **options
) -> torch.nn.Module:
    """A model folder or hub id, from safetensors only (remote code is never run); device
    None leaves placement to `options` (e.g. device_map)."""
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=dtype, use_safetensors=True, trust_remote_code=False, **options
    )
    return model if device is None else model.to(device)


def load_tokenizer(folder: str):
    """A model folder's (or hub id's) tokenizer as its tokenizer_config.json names it. Beside a
    model's config.json transformers 5 otherwise takes the model type's class (Qwen2Tokenizer),
    which tokenizes the tiny world's text differently from the tokenizer the model trained on."""
    return AutoTokenizer.from_pretrained(folder, config=PretrainedConfig(), trust_remote_code=False)


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # peft 0.21 calls a transformers method that transformers 5 deprecates; nothing to act on.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    logging.getLogger("deepspeed").setLevel(logging.WARNING)
    try:  # Train V2 logs every report at INFO under a logger named by its file path
        from ray.train.v2._internal.execution import context as train_context

        logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    except ImportError:
        pass
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def inference_device(use_gpu: bool) -> tuple[torch.device, torch.dtype]:
    """Where and in which dtype a model runs outside the training engine (teacher forwards,
    generation): bf16 on GPU as the students' engines run, fp32 on CPU."""
    if use_gpu:
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), torch.float32
