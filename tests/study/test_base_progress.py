"""Pretraining bases in parallel says, while it runs, where each base is."""

import re

import ray

from kdray.config.pretrain import PretrainConfig
from kdray.study import bases
from kdray.study.bases import BaseNeed, pretrain_in_parallel, progress_line
from kdray.world.build import build_world
from kdray.world.synthetic_math import MathWorldConfig

SMALL = MathWorldConfig(train_size=300, validation_size=40, test_size=40)


def test_progress_line_names_each_base_its_step_and_the_queue():
    pretrain = PretrainConfig(steps=400, teacher_steps=800)
    latest = {BaseNeed("tiny-qwen2-s", 3, False): (120, 0.8234), BaseNeed("m", 0, True): (80, 1.5)}
    line = progress_line(latest, pretrain, silent=2, seconds=95.4)
    assert line == (
        "  pretraining: tiny-qwen2-s seed 3 step 120/400 (loss 0.823), "
        "m seed 0 step 80/800 (loss 1.500); 2 queued or starting; 95 s"
    )
    assert "queued" not in progress_line(latest, pretrain, silent=0, seconds=1)


def test_bases_in_pretraining_report_their_steps_before_they_end(tmp_path, monkeypatch, capsys):
    world, _ = build_world(SMALL, tmp_path)
    monkeypatch.setattr(bases, "PROGRESS_SECONDS", 0.2)
    pretrain = PretrainConfig(steps=100, teacher_steps=100, learning_rate=1e-2)
    needs = [BaseNeed("tiny-qwen2-xs", seed, False) for seed in (0, 1, 2)]
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        finished = list(pretrain_in_parallel(world, needs, pretrain))
    finally:
        if started_here:
            ray.shutdown()
    assert sorted(need.seed for need, _, _ in finished) == [0, 1, 2]
    assert all((folder / "model.safetensors").is_file() for _, folder, _ in finished)
    lines = [line for line in capsys.readouterr().out.splitlines() if "pretraining:" in line]
    steps = [int(s) for line in lines for s in re.findall(r"step (\d+)/100", line)]
    assert steps and min(steps) < 100  # said mid-way, not only at the end
    assert any("1 queued or starting" in line for line in lines)  # 3 bases on 2 CPUs


def test_reporting_progress_does_not_let_a_third_base_start_on_two_cpus():
    """A task that waited on each report (a blocking Queue.put is a ray.get) gave its CPU back
    meanwhile, and Ray started the next base on it: three bases on 2 CPUs. Each task here
    holds its CPU for 1.5 s and reports all along, as pretraining does."""
    from ray.util.queue import Queue

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        reports = Queue(actor_options={"num_cpus": 0})

        @ray.remote(num_cpus=1)
        def busy(seed: int) -> tuple[float, float]:
            import time

            report = bases.reporter(reports, ("tiny-qwen2-xs", seed, False))
            start = time.time()
            step = 0
            while time.time() - start < 1.5:
                step += 1
                report(step, 0.5, 0.0)
                time.sleep(0.005)
            return start, time.time()

        spans = ray.get([busy.remote(seed) for seed in range(3)])
        assert reports.qsize() > 100  # the reports arrived
        reports.shutdown()
    finally:
        if started_here:
            ray.shutdown()
    spans.sort()
    assert spans[2][0] >= min(spans[0][1], spans[1][1]) - 0.05  # the third waited for a CPU
