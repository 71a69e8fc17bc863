"""Teacher-domain study: each KD trial with a task-aware teacher (fine-tuned on the domain first)
and with a task-unaware one (the base model), KD at T=1.

    python studies/teacher_domain.py --smoke
    python studies/teacher_domain.py --help
"""

from kdray.cli.main import study_main

if __name__ == "__main__":
    raise SystemExit(study_main("teacher_domain"))
