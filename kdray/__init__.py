"""kdray: Ray-based hyperparameter and ablation studies of knowledge distillation."""

__version__ = "0.1.0"
