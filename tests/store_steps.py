"""Reading a study's progress straight from its MLflow sqlite store, while the study writes it."""

import sqlite3
from pathlib import Path


def logged_step(db: Path, run_name_prefix: str) -> int:
    """The last train_loss step logged by the run whose name starts with the prefix."""
    if not db.is_file():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as store:
        row = store.execute(
            "select max(m.step) from metrics m join runs r on r.run_uuid = m.run_uuid "
            "where m.key = 'train_loss' and r.name like ?",
            (f"{run_name_prefix}%",),
        ).fetchone()
    return row[0] or 0
