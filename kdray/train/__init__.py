"""Inside Ray Train workers: the training loop (loop.py), the DeepSpeed engine (engine.py), LoRA,
checkpoints, and the TorchTrainer that runs it (run.py). Imports teacher, losses, eval,
tracking, data, config and the base modules; never the trial, study or cli layers."""
