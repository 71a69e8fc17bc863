"""Loading the study's benchmark files, from a local folder or the Hugging Face hub, with every
record checked; and a sanity report over a folder of LLM-Adapters test sets.

Records come back as `{"instruction", "input", "output", "answer", "task"}` strings (`task` is
the task's canonical id). An instruction-following item with several reference responses also
carries `references`, a JSON list of them (see `reference_texts`); `answer` is the first one.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from kdray.errors import ConfigError
from kdray.eval.answers import ANSWER_KINDS, answers_match, extract_answer, parse_gold
from kdray.hub.tasks import (
    EVAL_TASKS,
    INSTRUCTION_EVAL_TASKS,
    ROUGE_L,
    TRAIN_SETS,
    HubSource,
    TaskSpec,
    TrainSetSpec,
)

_LLM_ADAPTERS_HINT = "expected LLM-Adapters records with instruction, input, output, answer"
_MINILLM_HINT = "expected MiniLLM records with instruction, input, output"
_TEXT_KEYS = ("instruction", "input", "output", "answer")
_FIX_DIR = "pass --data-dir with the LLM-Adapters dataset folder, or omit it to use the hub"


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number" if isinstance(value, int | float) else "value")


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _key(text: str) -> str:
    return "".join(c for c in text.lower() if c not in "-_ ")


def read_records_file(path: Path, label: str | None = None) -> list[Any]:
    """The records of a JSON list file, or of a JSON Lines file (`.jsonl`); ConfigError naming
    the file when it cannot be read or parsed, or when a JSON file does not hold a list."""
    where = label or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{where}: cannot read the file ({_first_line(error)})") from None
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ConfigError(
                        f"{where}: line {number} is not valid JSON ({error.msg}): {_MINILLM_HINT}"
                    ) from None
        return rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{where}: not valid JSON ({error.msg} at line {error.lineno} column {error.colno}):"
            f" {_LLM_ADAPTERS_HINT}"
        ) from None
    if not isinstance(data, list):
        raise ConfigError(
            f"{where}: the file holds a JSON {_json_type(data)}, not a list: {_LLM_ADAPTERS_HINT}"
        )
    return data


def _apply_fields(row: dict, fields: tuple[tuple[str, str], ...]) -> dict:
    mapped = dict(row)
    for ours, theirs in fields:
        if ours not in mapped and theirs in mapped:
            mapped[ours] = row[theirs]
    return mapped


def _string_list(value: Any) -> list[str] | None:
    """A non-empty list of strings as such, else None."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    return None


def _task_record(spec: TaskSpec, row: Any, index: int, where: str) -> dict[str, str]:
    """One record checked for its shape (not its gold answer) and normalised."""
    rouge = spec.answer_kind == ROUGE_L
    hint = _MINILLM_HINT if rouge else _LLM_ADAPTERS_HINT
    row = _fields_of(row, spec.fields, index, where, hint)
    for key in ("instruction", "answer"):
        if key not in row:
            raise ConfigError(f"{where}: record {index} has no {key!r}: {hint}")
    # Instruction sets may give several reference responses; ROUGE-L takes the best of them.
    references = _string_list(row["answer"]) if rouge else None
    record = {}
    for key in _TEXT_KEYS:
        value = row.get(key)
        if value is None and key in ("input", "output"):
            value = ""
        if rouge and key in ("output", "answer") and _string_list(value):
            value = value[0]
        record[key] = _string(value, key, index, where, hint)
    record["task"] = spec.name
    if references is not None and len(references) > 1:
        record["references"] = json.dumps(references)
    return record


def _check_gold(spec: TaskSpec, record: dict[str, str], index: int, where: str) -> str | None:
    """The canonical gold answer (None for ROUGE-L tasks); ConfigError if it does not parse."""
    if spec.answer_kind not in ANSWER_KINDS:
        return None
    try:
        return parse_gold(spec.answer_kind, record["answer"])
    except ValueError as error:
        raise ConfigError(
            f"{where}: record {index}: {error}; is this the {spec.display} test set?"
        ) from None


def reference_texts(record: dict[str, str]) -> list[str]:
    """The reference responses of an instruction-following record (one or several)."""
    if "references" in record:
        return json.loads(record["references"])
    return [record["answer"]]


def _check_limit(limit: int | None) -> None:
    if limit is not None and (type(limit) is not int or limit < 1):
        raise ConfigError(f"limit must be a positive number of items, not {limit!r}")


def data_root(data_dir: str | Path, fix: str = _FIX_DIR) -> Path:
    """The data folder; ConfigError (one line, with `fix`) if it does not exist or is a file."""
    root = Path(data_dir).expanduser()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"data directory {root} is a file, not a folder: {fix}")
    if not root.is_dir():
        raise ConfigError(f"data directory {root} does not exist: {fix}")
    return root


def _task_folder(spec: TaskSpec, root: Path) -> Path | None:
    """`<root>/<folder>`, `<root>/<name>`, or a folder whose name matches either in any case
    and with '-'/'_' ignored ("arc-challenge", "ARC_Challenge")."""
    for name in (spec.folder, spec.name):
        if (root / name).is_dir():
            return root / name
    wanted = {_key(spec.folder), _key(spec.name)}
    for child in sorted(root.iterdir()):
        if child.is_dir() and _key(child.name) in wanted:
            return child
    return None


def _file_names(spec: TaskSpec, split: str) -> list[str]:
    names = [f"{split}.json", f"{split}.jsonl"]
    if spec.hub is not None and spec.hub.path is not None:
        # MiniLLM's layout: the evaluation file is valid.jsonl (under 11_/ for S-NI and UnNI).
        names += [spec.hub.path, Path(spec.hub.path).name]
    return list(dict.fromkeys(names))


def find_task_file(spec: TaskSpec, data_dir: str | Path, split: str = "test") -> Path:
    """The local file of a task's split under `data_dir`; ConfigError saying where it looked."""
    root = data_root(data_dir)
    folder = _task_folder(spec, root)
    if folder is None:
        raise ConfigError(
            f"no {spec.display} folder under {root}: looked for {root / spec.folder} (or"
            f" {spec.name}, any case); {_FIX_DIR}"
        )
    for name in _file_names(spec, split):
        if (folder / name).is_file():
            return folder / name
    raise ConfigError(f"{folder} has no {split}.json for {spec.display}: {_FIX_DIR}")


def _fetch_hub(source: HubSource) -> tuple[list[Any], str]:
    """Rows of a hub source and a label for messages; ConfigError when the hub fails."""
    label = f"{source.repo_id}/{source.path}" if source.path else source.repo_id
    try:
        if source.path is None:
            import datasets

            dataset = datasets.load_dataset(
                source.repo_id, source.config, split=source.split, revision=source.revision
            )
            return [dict(row) for row in dataset], f"hub dataset {label} ({source.split})"
        from huggingface_hub import hf_hub_download

        local = hf_hub_download(
            repo_id=source.repo_id,
            filename=source.path,
            repo_type="dataset",
            revision=source.revision,
        )
    except Exception as error:  # network, missing repository or file, authentication
        raise ConfigError(
            f"could not load {label} from the Hugging Face hub ({type(error).__name__}:"
            f" {_first_line(error)}): check the hub id and your network, or pass --data-dir"
            " with local files"
        ) from error
    where = f"hub file {label}"
    return read_records_file(Path(local), label=where), where


def _find_in_repo(repo_id: str, spec: TaskSpec, split: str) -> str:
    """The path of `<folder>/<split>.json(l)` in a hub dataset repository (any depth, any
    case), for repositories that mirror LLM-Adapters' dataset folder."""
    try:
        from huggingface_hub import list_repo_files

        files = list_repo_files(repo_id, repo_type="dataset")
    except Exception as error:
        raise ConfigError(
            f"could not list {repo_id} on the Hugging Face hub ({type(error).__name__}:"
            f" {_first_line(error)}): check the hub id and your network, or pass --data-dir"
        ) from error
    wanted = {_key(spec.folder), _key(spec.name)}
    for path in sorted(files):
        parts = path.split("/")
        name_ok = parts[-1].lower() in (f"{split}.json", f"{split}.jsonl")
        if len(parts) >= 2 and name_ok and _key(parts[-2]) in wanted:
            return path
    raise ConfigError(
        f"hub dataset {repo_id} has no {spec.folder}/{split}.json: pass a hub id that mirrors"
        " LLM-Adapters' dataset folder, or --data-dir with local files"
    )


def load_task(
    spec: TaskSpec,
    data_dir: str | Path | None = None,
    split: str = "test",
    hub_id: str | None = None,
    limit: int | None = None,
) -> list[dict[str, str]]:
    """The checked records of a task's split (the first `limit` of them if given).

    With `data_dir`: `<data_dir>/<folder>/<split>.json` (LLM-Adapters' layout; also
    `<data_dir>/<name>/`, a folder name in any case, and MiniLLM's `valid.jsonl` files).
    Without it: the hub, from `hub_id` when given (a repository with the task's default file
    path, or for reasoning tasks one that mirrors LLM-Adapters' dataset folder), else from the
    task's default hub source. Every record must have string `instruction` and `answer` (or
    MiniLLM's `output`) and a gold answer that parses under the task's answer kind; the first
    that does not raises ConfigError naming the file and the record index.
    """
    _check_limit(limit)
    if data_dir is not None:
        path = find_task_file(spec, data_dir, split)
        rows, where = read_records_file(path), str(path)
    else:
        source = spec.hub
        if hub_id is not None:
            source = (
                replace(source, repo_id=hub_id)
                if source is not None
                else HubSource(hub_id, path=_find_in_repo(hub_id, spec, split))
            )
        if source is None:
            raise ConfigError(
                f"no hub copy of the {spec.display} {split} set is known: pass --data-dir with"
                f" the LLM-Adapters dataset folder (holding {spec.folder}/{split}.json), or the"
                " id of a hub dataset repository that holds it"
            )
        rows, where = _fetch_hub(source)
    records = []
    for index, row in enumerate(rows):
        record = _task_record(spec, row, index, where)
        _check_gold(spec, record, index, where)
        records.append(record)
    return records[:limit]


def _fields_of(row: Any, fields, index: int, where: str, hint: str) -> dict:
    """A record that must be a JSON object, with the task's field names mapped to kdray's."""
    if not isinstance(row, dict):
        raise ConfigError(
            f"{where}: record {index} is a JSON {_json_type(row)}, not an object: {hint}"
        )
    return _apply_fields(row, fields)


def _string(value: Any, key: str, index: int, where: str, hint: str) -> str:
    """A record's text field, or one line naming the record, the field and what it holds."""
    if not isinstance(value, str):
        raise ConfigError(
            f"{where}: record {index} has {key!r} as a JSON {_json_type(value)}, not a string:"
            f" {hint}"
        )
    return value


def _train_record(spec: TrainSetSpec, row: Any, index: int, where: str) -> dict[str, str]:
    hint = "expected records with instruction, input, output (and answer)"
    row = _fields_of(row, spec.fields, index, where, hint)
    record = {}
    for key in _TEXT_KEYS:
        if key in ("instruction", "output") and key not in row:
            raise ConfigError(f"{where}: record {index} has no {key!r}: {hint}")
        value = row.get(key)
        value = "" if value is None and key in ("input", "answer") else value
        record[key] = _string(value, key, index, where, hint)
    record["task"] = spec.name
    return record


def _find_train_file(spec: TrainSetSpec, data_dir: str | Path) -> Path:
    root = data_root(data_dir)
    for path in (root / spec.file, root / spec.name / spec.file):
        if path.is_file():
            return path
    for child in sorted(root.iterdir()):
        if child.is_file() and child.name.lower() == spec.file.lower():
            return child
    raise ConfigError(
        f"no {spec.file} under {root}: pass --data-dir with the folder holding {spec.file}"
        " (LLM-Adapters' ft-training_set for Math10K and Commonsense15K), or omit it to use"
        " the hub"
    )


def load_train_set(
    name: str,
    data_dir: str | Path | None = None,
    hub_id: str | None = None,
    limit: int | None = None,
) -> list[dict[str, str]]:
    """The checked records of a training set: `<data_dir>/<file>` (e.g. math_10k.json), or
    the hub (`hub_id` replaces the default repository). Records need string `instruction` and
    `output` (the training target); `input` and `answer` default to ""."""
    if name not in TRAIN_SETS:
        raise ConfigError(f"unknown training set {name!r}: expected one of {', '.join(TRAIN_SETS)}")
    _check_limit(limit)
    spec = TRAIN_SETS[name]
    if data_dir is not None:
        path = _find_train_file(spec, data_dir)
        rows, where = read_records_file(path), str(path)
    else:
        source = spec.hub
        if hub_id is not None:
            source = replace(source, repo_id=hub_id) if source else HubSource(hub_id, spec.file)
        if source is None:
            raise ConfigError(
                f"no hub copy of {spec.display} is known: pass --data-dir with the folder holding"
                f" {spec.file}, or the id of a hub dataset repository that holds it"
            )
        rows, where = _fetch_hub(source)
    return [_train_record(spec, row, i, where) for i, row in enumerate(rows)][:limit]


def _check_one(spec: TaskSpec, root: Path) -> dict[str, Any]:
    report: dict[str, Any] = {
        "task": spec.name,
        "display": spec.display,
        "domain": spec.domain,
        "answer_kind": spec.answer_kind,
        "status": "missing",
        "path": None,
        "items": 0,
        "expected_items": spec.expected_items,
        "gold_parsed": 0,
        "gold_labels": None,
        "rationale_agrees": None,
        "note": "",
    }
    folder = _task_folder(spec, root)
    if folder is None:
        return {**report, "note": f"no {spec.folder}/ folder"}
    path = next((folder / n for n in _file_names(spec, "test") if (folder / n).is_file()), None)
    if path is None:
        return {**report, "note": f"{folder.name}/ has no test.json"}
    report.update(status="ok", path=str(path))
    try:
        rows = read_records_file(path)
    except ConfigError as error:
        return {**report, "status": "error", "note": str(error)}
    scored = spec.answer_kind in ANSWER_KINDS
    labels: set[str] = set()
    agrees = 0
    problems = []
    for index, row in enumerate(rows):
        try:
            record = _task_record(spec, row, index, str(path))
            gold = _check_gold(spec, record, index, str(path))
        except ConfigError as error:
            problems.append(str(error))
            continue
        report["gold_parsed"] += 1
        if scored:
            labels.add(gold)
            predicted = extract_answer(spec.answer_kind, record["output"])
            agrees += answers_match(spec.answer_kind, predicted, record["answer"])
    report["items"] = len(rows)
    if scored:
        report.update(gold_labels=len(labels), rationale_agrees=agrees)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        report.update(status="error", note=problems[0] + more)
    elif spec.expected_items is not None and len(rows) != spec.expected_items:
        report["note"] = f"{len(rows)} items, the study's set has {spec.expected_items}"
    return report


def check_task_folder(data_dir: str | Path) -> list[dict[str, Any]]:
    """A sanity report per registry task (reasoning and instruction following) on the files
    under `data_dir`: `status` ("ok", "missing" or "error"), `path`, `items`, `gold_parsed`
    (records whose gold answer parses), `gold_labels` (distinct gold answers), and
    `rationale_agrees`: how many `output` rationales yield the gold answer under the study's
    extraction rule (LLM-Adapters' outputs are machine-written and sometimes wrong). A task
    without files is reported as missing, a bad file as an error; neither raises."""
    root = data_root(data_dir)
    return [
        _check_one(spec, root) for spec in (*EVAL_TASKS.values(), *INSTRUCTION_EVAL_TASKS.values())
    ]


REPORT_HEADER = (
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


def task_report_markdown(reports: list[dict[str, Any]]) -> str:
    """check_task_folder's reports as a Markdown table, with the notes below it."""
    rows = [list(REPORT_HEADER), ["---"] * len(REPORT_HEADER), *(_row(r) for r in reports)]
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    notes = [f"- {r['display']}: {r['note']}" for r in reports if r["note"]]
    return "\n".join(lines + ([""] + notes if notes else []))
