"""A run's examples: prompt templates, encoding, batching and collation, and the splits of a
world's data folder read for a run. Imports kdray.config and the base modules (errors, cache,
console, models)."""
