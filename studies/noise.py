"""Noise study: Gaussian noise sigma in {0, 1, 2, 5} on the teacher's raw logits, KD and Rev-KD at
T=1, for each student; SFT per student as the baseline.

    python studies/noise.py --smoke    # reduced: sigma 0 and 5, KD only
    python studies/noise.py --help
"""

from kdray.cli.main import study_main

if __name__ == "__main__":
    raise SystemExit(study_main("noise"))
