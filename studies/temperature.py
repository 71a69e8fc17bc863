"""Temperature study: SFT per student, plus KD (forward KL) for each student x temperature T
(`--methods kd,revkd` adds Rev-KD), 3 paired seeds, on the tiny world by default.

    python studies/temperature.py            # the default study, 3 seeds (13-15 min, 2 CPUs)
    python studies/temperature.py --smoke    # the same path, reduced (under 3 min)
"""

from kdray.cli.main import study_main

if __name__ == "__main__":
    raise SystemExit(study_main("temperature"))
