"""The study's zero-shot prompt (the Alpaca-style template of LLM-Adapters)."""

from __future__ import annotations

PROMPT_TEMPLATE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
PROMPT_TEMPLATE_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)


def format_prompt(example: dict[str, str]) -> str:
    if example.get("input"):
        return PROMPT_TEMPLATE_WITH_INPUT.format(**example)
    return PROMPT_TEMPLATE.format(instruction=example["instruction"])
