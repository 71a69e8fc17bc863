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

from kdray.cli.one_line_parser import (
    EXIT_USAGE,
    OneLineParser,
    count,
    port,
    positive_number,
)
from kdray.errors import KdrayError
from kdray.hub.zoo import FAMILIES, HUB_MODELS, check_family, check_pair, format_parameters, pairs


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


def _add_domain(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--domain", choices=("math", "commonsense", "instruction"), help="only this domain"
    )


def _run_tasks(args: argparse.Namespace) -> int:
    from kdray.hub.tasks import TRAIN_SETS, tasks_for_domain

    domains = [args.domain] if args.domain else ["math", "commonsense", "instruction"]
    rows = []
    for domain in domains:
        for spec in tasks_for_domain(domain):
            hub = spec.hub.repo_id if spec.hub else "(local folder only)"
            rows.append((spec.name, spec.display, domain, spec.answer_kind, spec.folder, hub))
    print(table(("task", "name", "domain", "scored by", "folder", "hub"), rows, "llllll"))
    trains = [t for t in TRAIN_SETS.values() if t.domain in domains]
    for train in trains:
        hub = train.hub.repo_id if train.hub else "local file only"
        print(f"training set for {train.domain}: {train.display} ({train.file}; hub: {hub})")
    print(f"{len(rows)} evaluation tasks")
    return 0


def _add_check_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", help="folder holding LLM-Adapters dataset folders")


def _run_check_data(args: argparse.Namespace) -> int:
    from kdray.hub.task_files import check_task_folder, data_root, task_report_markdown

    fix = "pass the folder holding the LLM-Adapters dataset folders (AQuA/, gsm8k/, ...)"
    reports = check_task_folder(data_root(args.data_dir, fix))
    if all(r["status"] == "missing" for r in reports):
        raise KdrayError(
            f"{args.data_dir} holds no task's test file (such as AQuA/test.json): {fix}; "
            "kdray tasks lists the folders"
        )
    print(task_report_markdown(reports))
    return 1 if any(r["status"] == "error" for r in reports) else 0


def _add_plan_memory_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--student", required=True, help="hub model trained (kdray models)")
    parser.add_argument("--teacher", help="hub model distilled from (none: SFT)")
    parser.add_argument("--gpu-memory", type=positive_number, default=80.0, help="GiB per GPU (80)")
    parser.add_argument("--micro-batch", type=count, default=4, help="sequences per GPU step (4)")
    parser.add_argument("--seq-len", type=count, default=256, help="tokens per sequence (256)")
    parser.add_argument("--finetune", choices=("lora", "full"), default="lora")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument(
        "--teacher-placement",
        choices=("replica", "zero3", "actor"),
        help="only this placement (default: the cheapest that fits)",
    )


def _run_plan_memory(args: argparse.Namespace) -> int:
    from kdray.config.run import TEACHER_PLACEMENTS
    from kdray.hub.zoo import hub_model
    from kdray.study.memory import placement_estimates, plan_trial

    student = hub_model(args.student)
    teacher = hub_model(args.teacher) if args.teacher else None
    # A pair of two tokenizers is refused; what the study only notes (lm_head widths that
    # differ, a teacher not larger than its student) is printed with the plan.
    notes = check_pair(teacher, student) if teacher else []
    options = dict(
        finetune=args.finetune,
        micro_batch=args.micro_batch,
        seq_len=args.seq_len,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    placements = (args.teacher_placement,) if args.teacher_placement else TEACHER_PLACEMENTS
    plan = plan_trial(student, teacher, args.gpu_memory, placements, **options)
    pair = f"{teacher.name} -> {student.name}" if teacher else f"{student.name} (SFT)"
    print(f"{pair}, {args.finetune}, micro batch {args.micro_batch} x {args.seq_len} tokens, "
          f"{args.gpu_memory:g} GiB GPUs (estimate):")  # fmt: skip
    print(f"  plan: {plan.describe()}")
    for note in notes:
        print(f"  note: {note}")
    if teacher is not None:
        for placement, line in placement_estimates(
            student, teacher, args.gpu_memory, **options
        ).items():
            print(f"  teacher {placement}: {line}")
    return 0


def _add_mlflow_server_arguments(parser: argparse.ArgumentParser) -> None:
    from kdray.tracking.server import DEFAULT_HOST, DEFAULT_PORT

    parser.add_argument("--store", default=".", help="folder of mlflow.db and mlartifacts/ (.)")
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to bind ({DEFAULT_HOST}: this machine only)"
    )
    parser.add_argument("--port", type=port, default=DEFAULT_PORT, help=f"({DEFAULT_PORT})")


def _run_mlflow_server(args: argparse.Namespace) -> int:
    import contextlib
    import os
    import signal
    import subprocess

    from kdray.tracking.server import check_address, server_command, server_env, store_folder

    store = store_folder(args.store)
    check_address(args.host, args.port)
    command = server_command(
        f"sqlite:///{store / 'mlflow.db'}", args.host, args.port, store / "mlartifacts"
    )
    url = f"http://{args.host}:{args.port}"
    print(f"[kdray] MLflow server on {url} (store {store}); studies: --tracking-uri {url}; "
          "Ctrl-C stops it", flush=True)  # fmt: skip
    # Its own process group: `mlflow server` runs uvicorn as a child, and both must stop.
    server = subprocess.Popen(command, env=server_env(), start_new_session=True)
    # `kill` (SIGTERM) stops it as Ctrl-C does: else the server, in its own session, would
    # outlive us and keep the port.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return server.wait()
    except KeyboardInterrupt:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:  # still shutting down gracefully after 10 s
            pass
        # Whatever of the group is left goes too: a survivor would keep the server's port.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


COMMANDS: dict[str, Command] = {
    "models": Command("list the hub models of the study", _add_family, _run_models),
    "pairs": Command("list the teacher -> student pairs", _add_pairs_arguments, _run_pairs),
    "tasks": Command("list the evaluation tasks and training sets", _add_domain, _run_tasks),
    "plan-memory": Command(
        "choose GPUs per trial, ZeRO stage and teacher placement for a hub pair (estimate)",
        _add_plan_memory_arguments,
        _run_plan_memory,
    ),
    "mlflow-server": Command(
        "a local MLflow tracking server (SQLite store, 127.0.0.1) for multi-process runs",
        _add_mlflow_server_arguments,
        _run_mlflow_server,
    ),
    "check-data": Command(
        "check local task files: items, gold answers, extraction",
        _add_check_data_arguments,
        _run_check_data,
    ),
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
