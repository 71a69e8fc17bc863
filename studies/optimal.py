"""Optimal-settings study: per student size, an Optuna TPE search (ASHA stops weak trials early)
over method, T, sigma, CE weight, beta, lambda and learning rate; prints the best settings per
student with validation and test accuracy, and Optuna's parameter importances.

    python studies/optimal.py --num-samples 6
    python studies/optimal.py --help
"""

from kdray.cli.main import study_main

if __name__ == "__main__":
    raise SystemExit(study_main("optimal"))
