"""A study in the Tune driver: its config, presets and designs, the dry-run and memory plans, its
trials, teachers and caches (prepare.py), and the grid (grid.py) or search (search.py) over
them. Imports trial and everything below it, and analysis for the closing report."""
