"""Evaluation: generation, answer extraction, accuracy / ROUGE-L scoring, teacher agreement and
fidelity, and a trained model's evaluation on its run's splits. Imports kdray.config,
kdray.data."""
