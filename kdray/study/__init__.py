"""A study in the Tune driver: its config, presets and designs, the dry-run and memory plans, the
checks before any work (preflight.py, resume.py), its trials, teachers and caches (prepare.py),
and the grid (grid.py) or search (search.py) over them, the search's picks registered as MLflow
models (picks.py). Imports trial and everything below it, and analysis for the closing report."""
