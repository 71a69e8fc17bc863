"""The `kdray` console command: `kdray models`, `kdray pairs`, ...

Each subcommand is one entry of COMMANDS (help, add_arguments, run); add a subcommand by adding
an entry. Imports stay light (no torch, no Ray) so the command answers at once; a subcommand
that needs heavy libraries imports them inside its run function.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kdray.errors import KdrayError
from kdray.hub_zoo import FAMILIES, HUB_MODELS, check_family, check_pair, format_parameters, pairs

EXIT_USAGE = 2


# Same behaviour as kdray.cli.OneLineParser, defined here because kdray.cli imports the study
# configuration chain (presets, run specs): `kdray models` must not depend on it.
class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2, not the usage block."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


@dataclass(frozen=True)
class Command:
    """One subcommand of `kdray`."""

    help: str
    """One line for `kdray --help`."""
    add_arguments: Callable[[argparse.ArgumentParser], None]
    """Adds the subcommand's flags to its parser."""
    run: Callable[[argparse.Namespace], int]
    """Does the work, prints to stdout, returns the exit code; raises KdrayError on bad input."""


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str) -> str:
    """A Markdown table padded to align in a terminal; `align` has one 'l' or 'r' per column."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        columns = zip(row, widths, align, strict=True)
        padded = (c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in columns)
        return "| " + " | ".join(padded) + " |"

    def dashes(width: int, a: str) -> str:  # Markdown marks right-aligned columns with ':'
        return "-" * (width + 1) + ":" if a == "r" else "-" * (width + 2)

    rule = "|" + "|".join(map(dashes, widths, align)) + "|"
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def _add_family(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--family", choices=FAMILIES, help="only this model family")


def _run_models(args: argparse.Namespace) -> int:
    check_family(args.family)
    models = [m for m in HUB_MODELS.values() if args.family in (None, m.family)]
    headers = (
        "name",
        "hub id",
        "family",
        "params",
        "layers",
        "hidden",
        "lm_head",
        "tokenizer vocab",
        "gated",
    )
    rows = [
        (
            m.name,
            m.hub_id,
            m.family,
            format_parameters(m.parameters),
            m.layers,
            m.hidden,
            f"{m.vocab_size:,}",
            f"{m.tokenizer_vocab:,}",
            "yes" if m.gated else "no",
        )
        for m in models
    ]
    print(table(headers, rows, align="lllrrrrrl"))
    print(f"{len(models)} models")
    return 0


def _add_pairs_arguments(parser: argparse.ArgumentParser) -> None:
    _add_family(parser)
    parser.add_argument(
        "--csv", action="store_true", help="CSV on stdout (the summary line goes to stderr)"
    )


def _run_pairs(args: argparse.Namespace) -> int:
    found = pairs(args.family)
    headers = ("#", "teacher", "student", "teacher params", "student params", "ratio", "notes")
    rows = [
        (
            i,
            t.name,
            s.name,
            format_parameters(t.parameters),
            format_parameters(s.parameters),
            f"{t.parameters / s.parameters:.1f}x",
            "; ".join(check_pair(t, s)),
        )
        for i, (t, s) in enumerate(found, start=1)
    ]
    counts = ", ".join(
        f"{fam} {sum(t.family == fam for t, _ in found)}"
        for fam in FAMILIES
        if args.family in (None, fam)
    )
    summary = f"{len(found)} pairs ({counts})"
    if args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows(rows)
        print(summary, file=sys.stderr)  # keeps stdout a plain CSV
    else:
        print(table(headers, rows, align="rllrrrl"))
        print(summary)
    return 0


COMMANDS: dict[str, Command] = {
    "models": Command("list the hub models of the study", _add_family, _run_models),
    "pairs": Command("list the teacher -> student pairs", _add_pairs_arguments, _run_pairs),
}


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="kdray", description="Knowledge-distillation studies on Ray: models, pairs, ..."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        command.add_arguments(sub.add_parser(name, help=command.help, description=command.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command].run(args)
    except KdrayError as error:
        print(f"kdray {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
