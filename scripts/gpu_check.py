"""The GPU check: one tiny-world KD trial (and its SFT baseline) on the GPU with bf16 and
ZeRO-2 through the real path (Ray Tune -> Ray Train -> DeepSpeed -> MLflow), then the numbers
to record in README ("GPU check") with the date and the GPU:

    pip install -e .          # on a CUDA machine: torch==2.13.0 from PyPI is its CUDA build
    python scripts/gpu_check.py [--work DIR]

Prints one line per trial: steps/s, tokens/s (training, all ranks), peak GPU memory (MiB,
torch's max allocated on rank 0), test accuracy; exits 1 if a trial failed or no GPU is there.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", help="MLflow store and results (default: a temporary folder)")
    parser.add_argument("--steps", type=int, default=300, help="student steps (300)")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible to torch (is the CUDA build installed?)",
              file=sys.stderr)  # fmt: skip
        return 1
    from mlflow.tracking import MlflowClient

    from kdray.cli.args import config_from_flags
    from kdray.study.grid import run_study
    from kdray.tracking.runs import PARENT_TAG

    work = Path(args.work or tempfile.mkdtemp(prefix="kdray-gpu-check-"))
    config = config_from_flags("temperature", [
        "--smoke", "--use-gpu", "--zero-stage", "2", "--students", "tiny-qwen2-s",
        "--methods", "kd", "--temperatures", "1", "--steps", str(args.steps),
        "--tracking-uri", f"sqlite:///{work}/mlflow.db", "--results-dir", str(work / "results"),
        "--experiment", "kdray-gpu-check",
    ])  # fmt: skip
    outcome = run_study(config)
    client = MlflowClient(outcome.tracking_uri)
    runs = client.search_runs(
        [outcome.experiment_id], f"tags.`{PARENT_TAG}` = '{outcome.parent_run_id}'"
    )
    device = torch.cuda.get_device_name(0)
    print(f"\nGPU check {datetime.date.today()} on {device} (torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}), bf16, ZeRO-2, {args.steps} steps:")  # fmt: skip
    for run in sorted(runs, key=lambda r: r.info.run_name):
        m, stage = run.data.metrics, run.data.params.get("config.train.zero_stage")
        print(f"  {run.info.run_name}: {run.info.status}, zero_stage {stage}, "
              f"{m.get('steps_per_second', float('nan')):.1f} steps/s, "
              f"{m.get('tokens_per_second', float('nan')):.0f} tokens/s, "
              f"peak GPU {m.get('peak_gpu_mib', float('nan')):.0f} MiB, "
              f"accuracy {m.get('accuracy', float('nan')):.1f}")  # fmt: skip
    return 0 if outcome.failed == 0 and all(r.info.status == "FINISHED" for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
