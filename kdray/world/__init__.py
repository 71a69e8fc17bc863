"""The tiny world: synthetic tasks, a trained tokenizer and small models, built offline."""
