"""Student-size study: one teacher and every smaller student of its family, KD at T=1: the design
behind the Spearman correlation of improvement with student size.

    python studies/student_size.py --teacher tiny-qwen2-l    # students xs, s and m
    python studies/student_size.py --help
"""

from kdray.cli.main import study_main

if __name__ == "__main__":
    raise SystemExit(study_main("student_size"))
