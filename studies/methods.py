"""Methods study: SFT, KD, Rev-KD, Seq-KD, GKD and the skew KLs for every pair of a family at
T=1: the balanced design behind the one-way ANOVA of improvement across methods.

    python studies/methods.py --smoke    # reduced: one student
    python studies/methods.py --help
"""

from kdray.cli.main import study_main

if __name__ == "__main__":
    raise SystemExit(study_main("methods"))
