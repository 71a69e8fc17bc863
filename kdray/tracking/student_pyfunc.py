"""A trained student as an MLflow pyfunc model. MLflow stores this file with each logged student
("models from code") and runs it when the model is loaded, so it imports only MLflow, PyTorch and
transformers, never kdray. Its artifacts: `hf_model`, the student's Hugging Face folder (the
weights it was evaluated with, as safetensors, and its tokenizer), loaded without remote code;
`generation`, a JSON of the study's prompt templates and its evaluation's `max_new_tokens`.

    model = mlflow.pyfunc.load_model("models:/kdray-optimal-tiny-qwen2-s/1")
    model.predict(["Tom has 3 apples and buys 2 more. How many apples does he have?"])
    model.predict(pd.DataFrame({"instruction": [...], "input": [...]}))  # prompts with an input
    model.predict(["raw text"], params={"raw": True, "max_new_tokens": 20})

Each instruction is put in the study's prompt (unless `raw`) and answered greedily, as the study
evaluated it; the responses come back without their prompts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

HF_MODEL = "hf_model"
GENERATION = "generation"


class StudentModel(PythonModel):
    """Greedy responses of a student folder to the study's prompt."""

    def load_context(self, context) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer, PretrainedConfig

        folder = context.artifacts[HF_MODEL]
        # The tokenizer's own class (tokenizer_config.json), as the study loaded it from its
        # tokenizer folder: beside a model's config.json, transformers 5 takes the model type's
        # class instead (Qwen2Tokenizer), which tokenizes the tiny world's text differently.
        self.tokenizer = AutoTokenizer.from_pretrained(
            folder, config=PretrainedConfig(), trust_remote_code=False
        )
        self.tokenizer.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(
            folder, use_safetensors=True, trust_remote_code=False
        ).eval()
        self.generation = json.loads(Path(context.artifacts[GENERATION]).read_text())

    # The hint is what pyfunc passes under the model's signature (a list of strings arrives as
    # a one-column frame); MLflow infers no schema from it, and without one it warns.
    def predict(
        self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> list[str]:
        import torch

        params = params or {}
        prompts = [
            text if params.get("raw") else self._prompt(text, extra)
            for text, extra in _instructions(model_input)
        ]
        if not prompts:
            return []
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            output = self.model.generate(
                **batch,
                do_sample=False,
                max_new_tokens=int(
                    params.get("max_new_tokens") or self.generation["max_new_tokens"]
                ),
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
            )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        return [
            r.strip() for r in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        ]

    def _prompt(self, instruction: str, extra: str) -> str:
        if extra:
            return self.generation["prompt_with_input"].format(instruction=instruction, input=extra)
        return self.generation["prompt"].format(instruction=instruction)


def _instructions(model_input) -> list[tuple[str, str]]:
    """(instruction, input) pairs from a string, a list of strings, or a table with an
    `instruction` column (and optionally `input`) or with one column of instructions."""
    if isinstance(model_input, str):
        return [(model_input, "")]
    if hasattr(model_input, "columns"):  # a pandas DataFrame
        if "instruction" not in model_input.columns:
            return [(str(v), "") for v in model_input.iloc[:, 0]]
        instructions = model_input["instruction"].tolist()
        extras = model_input["input"].tolist() if "input" in model_input.columns else []
        extras += [""] * (len(instructions) - len(extras))
        return [(str(i), _text(e)) for i, e in zip(instructions, extras, strict=True)]
    return [(str(v), "") for v in model_input]


def _text(value) -> str:
    """A table cell as text; a missing one (None, NaN) as ''."""
    return "" if value is None or value != value else str(value)


mlflow.models.set_model(StudentModel())
