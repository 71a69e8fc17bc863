"""Settings of one run, below everything else: KDConfig, TrainConfig and EvalConfig (run.py), the
RunSpec a Train worker receives (run_spec.py) and its DeepSpeed form (deepspeed.py). Imports
only kdray.errors."""
