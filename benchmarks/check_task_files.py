"""Sanity check of a folder of the study's test sets (LLM-Adapters layout: `<folder>/test.json`,
plus MiniLLM's instruction sets if present): items, gold answers that parse under the task's
answer kind, distinct gold labels, and how often the file's own `output` rationale yields the
gold answer under the study's extraction rule.

    python benchmarks/check_task_files.py DATA_DIR

Prints a Markdown table; exits 2 with one line when DATA_DIR does not exist, 1 when a file
has problems (missing tasks are listed, not failures)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kdray.errors import ConfigError
from kdray.task_data import check_task_folder

HEADER = (
    "task",
    "domain",
    "answer kind",
    "items",
    "gold parsed",
    "gold labels",
    "rationale agrees with gold",
)


def _row(report: dict[str, Any]) -> list[str]:
    cells = [report["display"], report["domain"], report["answer_kind"]]
    if report["status"] == "missing":
        return cells + ["missing", "", "", ""]
    items, parsed, agrees = report["items"], report["gold_parsed"], report["rationale_agrees"]
    if agrees is None or not parsed:
        rationale = "n/a"
    else:
        rationale = f"{100 * agrees / parsed:.1f}% ({agrees})"
    labels = "n/a" if report["gold_labels"] is None else str(report["gold_labels"])
    return cells + [str(items), str(parsed), labels, rationale]


def markdown_table(reports: list[dict[str, Any]]) -> str:
    rows = [list(HEADER), ["---"] * len(HEADER), *(_row(r) for r in reports)]
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    notes = [f"- {r['display']}: {r['note']}" for r in reports if r["note"]]
    return "\n".join(lines + ([""] + notes if notes else []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", metavar="DATA_DIR", help="folder holding <task>/test.json")
    args = parser.parse_args(argv)
    if not Path(args.data_dir).is_dir():
        print(
            f"check_task_files: DATA_DIR {args.data_dir} does not exist: pass the folder that"
            " holds <task>/test.json (LLM-Adapters' dataset/ folder)",
            file=sys.stderr,
        )
        return 2
    try:
        reports = check_task_folder(args.data_dir)
    except ConfigError as error:
        print(f"check_task_files: {error}", file=sys.stderr)
        return 2
    print(markdown_table(reports))
    return 1 if any(r["status"] == "error" for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
