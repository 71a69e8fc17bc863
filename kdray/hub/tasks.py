"""The study's benchmarks: 14 zero-shot reasoning tasks in the LLM-Adapters JSON format (6 math,
8 commonsense), 5 instruction-following sets scored with ROUGE-L (MiniLLM's), and the 3
training sets (Math10K, Commonsense15K, Dolly-15K).

Where the data come from on the Hugging Face hub, and the evidence for each id:

- Instruction-following eval sets: `MiniLLM/dolly`, `MiniLLM/self-inst`, `MiniLLM/Vicuna`,
  `MiniLLM/sinst`, `MiniLLM/uinst`, listed in MiniLLM's README (microsoft/LMOps,
  minillm/README.md, "2.1 Resources"). MiniLLM's eval scripts
  (minillm/scripts/*/eval/eval_main_*.sh) read `data/<set>/valid.jsonl`, and for S-NI and UnNI
  `data/<set>/11_/valid.jsonl` (items whose reference has at least 11 words); the hub trees of
  those repos hold exactly these files.
- Math10K: `lmms-lab/Math10K` (dataset card cites LLM-Adapters, arXiv 2304.01933; one `train`
  split of 9.92k rows, the size of LLM-Adapters' ft-training_set/math_10k.json).
- Dolly-15K: `databricks/databricks-dolly-15k`, Databricks' own release (fields instruction,
  context, response, category).
- None found for LLM-Adapters' 14 test sets (`dataset/<folder>/test.json` in the
  AGI-Edgerunners/LLM-Adapters GitHub repository) or for commonsense_15k.json: they load from a
  local folder (`--data-dir`), or from a hub dataset repository the user names (`hub_id`) that
  holds the same files.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdray.errors import ConfigError

ROUGE_L = "rouge_l"
DOMAINS = ("math", "commonsense", "instruction")

# MiniLLM's files have instruction/input/output(/prompt) and no `answer`: the reference
# response is the output.
_MINILLM_FIELDS = (("answer", "output"),)


@dataclass(frozen=True)
class HubSource:
    """Where a data set lives on the Hugging Face hub."""

    repo_id: str
    """Dataset repository id, e.g. "MiniLLM/dolly"."""
    path: str | None = None
    """File inside the repository (a JSON list or JSON Lines), fetched with `hf_hub_download`;
    None: the repository is a regular dataset, read with `datasets.load_dataset`."""
    config: str | None = None
    """`datasets` configuration name (only with `path=None`)."""
    split: str = "train"
    """`datasets` split to read (only with `path=None`)."""
    revision: str | None = None
    """Branch, tag or commit to read; None: the repository's default branch."""


@dataclass(frozen=True)
class TaskSpec:
    """One evaluation task of the study."""

    name: str
    """Canonical id, used on the command line and in MLflow ("gsm8k", "arc_challenge")."""
    display: str
    """Name as the paper prints it ("GSM8K", "ARC-Challenge")."""
    domain: str
    """"math", "commonsense" or "instruction"."""
    answer_kind: str
    """How a response is scored: one of `kdray.eval.answers.ANSWER_KINDS`, or "rouge_l"."""
    folder: str
    """Folder of the task's files: LLM-Adapters' `dataset/<folder>/test.json` layout for the
    reasoning tasks, MiniLLM's `data/<folder>/` layout for instruction following."""
    hub: HubSource | None = None
    """Default hub source; None where no hub copy is known (pass `hub_id` or a local folder)."""
    fields: tuple[tuple[str, str], ...] = ()
    """(our key, source key) pairs for sources whose records use other names; each fills our
    key only when the record lacks it."""
    expected_items: int | None = None
    """Size of the test set the study evaluates on (a sanity check on the files, not a limit)."""


@dataclass(frozen=True)
class TrainSetSpec:
    """One training set of the study."""

    name: str
    """Canonical id ("math10k", "commonsense15k", "dolly15k")."""
    display: str
    """Name as the paper prints it ("Math10K")."""
    domain: str
    """Domain of the tasks the set trains for: "math", "commonsense" or "instruction"."""
    file: str
    """File name of a local copy (LLM-Adapters' ft-training_set/<file>, or the hub file)."""
    hub: HubSource | None = None
    """Default hub source; None where no hub copy is known."""
    fields: tuple[tuple[str, str], ...] = ()
    """(our key, source key) pairs, as for `TaskSpec.fields`."""


def _reasoning(
    name: str, display: str, domain: str, kind: str, folder: str, items: int
) -> TaskSpec:
    return TaskSpec(name, display, domain, kind, folder, expected_items=items)


# Item counts are those of LLM-Adapters' test files, which the study evaluates on.
EVAL_TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _reasoning("aqua", "AQuA", "math", "letter", "AQuA", 254),
        _reasoning("addsub", "AddSub", "math", "number", "AddSub", 395),
        _reasoning("gsm8k", "GSM8K", "math", "number", "gsm8k", 1319),
        _reasoning("multiarith", "MultiArith", "math", "number", "MultiArith", 600),
        _reasoning("svamp", "SVAMP", "math", "number", "SVAMP", 1000),
        _reasoning("singleeq", "SingleEq", "math", "number", "SingleEq", 508),
        _reasoning(
            "arc_challenge", "ARC-Challenge", "commonsense", "answer", "ARC-Challenge", 1172
        ),
        _reasoning("arc_easy", "ARC-Easy", "commonsense", "answer", "ARC-Easy", 2376),
        _reasoning("boolq", "BoolQ", "commonsense", "boolean", "boolq", 3270),
        _reasoning("hellaswag", "HellaSwag", "commonsense", "ending", "hellaswag", 10042),
        _reasoning("openbookqa", "OpenBookQA", "commonsense", "answer", "openbookqa", 500),
        _reasoning("piqa", "PIQA", "commonsense", "solution", "piqa", 1838),
        _reasoning("siqa", "SIQA", "commonsense", "answer", "social_i_qa", 1954),
        _reasoning("winogrande", "WinoGrande", "commonsense", "option", "winogrande", 1267),
    )
}


def _instruction(name: str, display: str, folder: str, repo: str, path: str) -> TaskSpec:
    source = HubSource(repo, path=path)
    return TaskSpec(name, display, "instruction", ROUGE_L, folder, source, _MINILLM_FIELDS)


# MiniLLM's evaluation sets (see the module docstring for the evidence).
INSTRUCTION_EVAL_TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _instruction("dolly", "Dolly", "dolly", "MiniLLM/dolly", "valid.jsonl"),
        _instruction("selfinst", "SelfInst", "self-inst", "MiniLLM/self-inst", "valid.jsonl"),
        _instruction("vicuna", "Vicuna", "vicuna", "MiniLLM/Vicuna", "valid.jsonl"),
        _instruction("sni", "S-NI", "sinst", "MiniLLM/sinst", "11_/valid.jsonl"),
        # MiniLLM scores the first 10,000 UnNI items (--dev-num 10000): pass limit=10000.
        _instruction("unni", "UnNI", "uinst", "MiniLLM/uinst", "11_/valid.jsonl"),
    )
}

TRAIN_SETS: dict[str, TrainSetSpec] = {
    spec.name: spec
    for spec in (
        TrainSetSpec("math10k", "Math10K", "math", "math_10k.json", HubSource("lmms-lab/Math10K")),
        # No hub copy found: read LLM-Adapters' ft-training_set/commonsense_15k.json locally.
        TrainSetSpec("commonsense15k", "Commonsense15K", "commonsense", "commonsense_15k.json"),
        TrainSetSpec(
            "dolly15k",
            "Dolly-15K",
            "instruction",
            "databricks-dolly-15k.jsonl",
            HubSource("databricks/databricks-dolly-15k"),
            (("input", "context"), ("output", "response"), ("answer", "response")),
        ),
    )
}


def tasks_for_domain(domain: str) -> list[TaskSpec]:
    """The evaluation tasks of a domain, in registry order."""
    if domain not in DOMAINS:
        raise ConfigError(f"unknown domain {domain!r}: expected one of {', '.join(DOMAINS)}")
    registry = INSTRUCTION_EVAL_TASKS if domain == "instruction" else EVAL_TASKS
    return [spec for spec in registry.values() if spec.domain == domain]


def _key(text: str) -> str:
    """Lower-case, without '-', '_' and spaces: "ARC-Challenge" and "arc_challenge" meet."""
    return "".join(c for c in text.lower() if c not in "-_ ")


def find_task(name: str) -> TaskSpec:
    """An evaluation task by canonical id, paper name or folder name, in any case."""
    wanted = _key(name)
    for spec in (*EVAL_TASKS.values(), *INSTRUCTION_EVAL_TASKS.values()):
        if wanted in (_key(spec.name), _key(spec.display), _key(spec.folder)):
            return spec
    valid = ", ".join([*EVAL_TASKS, *INSTRUCTION_EVAL_TASKS])
    raise ConfigError(f"unknown task {name!r}: expected one of {valid}")
