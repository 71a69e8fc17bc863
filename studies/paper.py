"""The study's replication grid (KD, Rev-KD, Seq-KD, GKD x T in {1, 2, 5} for every pair of both
families), for a GPU cluster; --preset tiny runs the same grid on the tiny world.

    python studies/paper.py --dry-run    # the plan: pairs, trials, GPUs
    python studies/paper.py --preset tiny --smoke
    python studies/paper.py --help
"""

from kdray.cli.main import study_main

if __name__ == "__main__":
    raise SystemExit(study_main("paper"))
