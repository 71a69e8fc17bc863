"""A real Hugging Face tokenizer trained on the tiny world's text with `tokenizers`.

Digits are split one per token (as Qwen2.5 and Llama 3 do for arithmetic), newlines are
tokens of their own (so the prompt/response boundary is a token boundary), and spaces are
kept with the Metaspace scheme so decoding gives back the original text. Each tiny family
has its own special tokens (named as in Qwen2.5 and Llama 3), so the two families' token ids
differ as they do on the hub and cross-family KD is refused."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "<|endoftext|>", "<unk>"
SPECIAL_TOKENS = {
    # family: (pad, eos, unk, extra specials placed first)
    "qwen": (PAD, EOS, UNK, ()),
    "llama": ("<|finetune_right_pad_id|>", "<|end_of_text|>", UNK, ("<|begin_of_text|>",)),
}


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, family: str = "qwen"
) -> PreTrainedTokenizerFast:
    pad, eos, unk, extra = SPECIAL_TOKENS[family]
    tokenizer = Tokenizer(models.BPE(unk_token=unk))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("\n", behavior="isolated"),
            pre_tokenizers.Metaspace(prepend_scheme="first"),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    tokenizer.decoder = decoders.Metaspace(prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[*extra, pad, eos, unk], show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=pad, eos_token=eos, unk_token=unk
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, folder: Path) -> None:
    tokenizer.save_pretrained(str(folder))
