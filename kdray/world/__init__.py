"""The tiny world, built offline: synthetic math, commonsense and instruction tasks, a tokenizer
trained on them and the tiny Qwen2 / Llama zoo, cached by content. Imports config, data (the
prompt template) and the base modules; never hub, train or anything above."""
