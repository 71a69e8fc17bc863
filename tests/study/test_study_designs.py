"""What each study script varies, checked without running it (fast, no Ray)."""

import dataclasses
import types
from pathlib import Path

import pytest

from kdray.cli.args import config_from_flags
from kdray.cli.main import study_main
from kdray.study import runtime as study_runtime
from kdray.study.designs import DESIGNS
from kdray.study.grid import tune_trials
from kdray.study.plan import plan_pairs
from kdray.study.trials import (
    expected_work,
    longest_first,
    packed_groups,
    run_label,
    seed_groups,
    setting_key,
    trial_plans,
)


class StubWorld:
    """What trial plans read from a world, without building one."""

    domain = "math"
    data_dir = "/nowhere/data"
    key = "stub"
    root = Path("/nowhere/worlds/stub")

    def parameter_counts(self):
        return {"tiny-qwen2-xs": 40_000, "tiny-qwen2-s": 91_000, "tiny-qwen2-m": 500_000}

    def lm_head_widths(self):
        return dict.fromkeys(self.parameter_counts(), 300)

    def built_model(self, name):
        return types.SimpleNamespace(tokenizer_vocab=300)

    def tasks(self):
        return ["arith-1step"]

    def model_dir(self, name):
        return f"/nowhere/{name}"

    def tokenizer_for(self, name):
        return "/nowhere/tokenizer"


@pytest.fixture
def tiny_world_stub():
    return StubWorld()


def _trials(config):
    return sum(row.trials for row in plan_pairs(config))


@pytest.mark.parametrize(
    "study, flags, trials",
    [
        # The tiny preset runs 3 paired seeds of every setting.
        ("temperature", [], 3 * 2 * (1 + 3)),  # Rev-KD: one flag away
        ("temperature", ["--methods", "kd,revkd"], 3 * 2 * (1 + 2 * 3)),
        ("temperature", ["--smoke"], 2 * (1 + 2)),  # one seed, kd and revkd at T=2
        ("noise", [], 3 * 2 * (1 + 2 * 4)),
        ("methods", [], 3 * 2 * (1 + 6)),
        ("student_size", [], 3 * 2 * 2),
        ("student_size", ["--teacher", "tiny-qwen2-l"], 3 * 3 * 2),
        ("teacher_domain", [], 3 * 2 * (1 + 2)),
        ("paper", ["--preset", "tiny"], 3 * 2 * (1 + 3 * 3 + 1)),  # seqkd has no T
        ("noise", ["--num-samples", "2"], 2 * 2 * (1 + 2 * 4)),
        ("noise", ["--num-samples", "3", "--seeds", "7"], 2 * (1 + 2 * 4)),
        ("temperature", ["--temperatures", "1,10"], 3 * 2 * (1 + 2)),  # flags win
    ],
)
def test_each_study_grid(study, flags, trials):
    assert _trials(config_from_flags(study, flags)) == trials


def test_designs_keep_what_they_study():
    noise = config_from_flags("noise")
    assert noise.noise_sigmas == (0.0, 1.0, 2.0, 5.0) and noise.temperatures == (1.0,)
    size = config_from_flags("student_size", ["--teacher", "tiny-qwen2-l"])
    assert size.students == ("tiny-qwen2-xs", "tiny-qwen2-s", "tiny-qwen2-m")
    paper = config_from_flags("paper")
    assert paper.zoo == "hub" and len(paper.pairs) == 21
    hub_size = config_from_flags("student_size", ["--preset", "paper", "--family", "llama"])
    assert {t for t, _ in hub_size.pairs} == {"llama-3.1-70b"}  # the largest teacher only
    assert len(hub_size.pairs) == 3
    assert config_from_flags("teacher_domain").teacher_kinds == ("task-aware", "task-unaware")


def test_teacher_domain_trials_are_told_apart_by_key_and_name(tiny_world_stub):
    config = config_from_flags("teacher_domain")
    plans = trial_plans(config, tiny_world_stub)
    keys = [p["key"] for p in plans]
    assert len(keys) == len(set(keys)) == 3 * 6  # 3 seeds
    names = {p["run_name"] for p in plans}
    assert "kd T=1 σ=0 tiny-qwen2-s ← tiny-qwen2-m (task-unaware) seed=0" in names
    kinds = [p["params"]["teacher_kind"] for p in plans if p["teacher"]]
    assert sorted(kinds) == ["task-aware"] * 6 + ["task-unaware"] * 6


def test_a_settings_seeds_share_one_tune_trial(tiny_world_stub):
    plans = trial_plans(config_from_flags("temperature"), tiny_world_stub)
    groups = seed_groups(plans)
    assert len(plans) == 24 and len(groups) == 8  # 2 students x (SFT + 3 T), 3 seeds each
    assert sorted(m["key"] for g in groups for m in g["members"]) == sorted(p["key"] for p in plans)
    for group in groups:
        seeds = [m["params"]["seed"] for m in group["members"]]
        assert seeds == [0, 1, 2]
        settings = [{k: v for k, v in m["params"].items() if k != "seed"} for m in group["members"]]
        assert all(setting == settings[0] for setting in settings)  # one setting, 3 seeds
    names = {g["run_name"] for g in groups}
    assert "kd T=2 σ=0 tiny-qwen2-s ← tiny-qwen2-m seeds 0,1,2" in names
    assert len({g["key"] for g in groups}) == 8
    single = trial_plans(config_from_flags("temperature", ["--seeds", "7"]), tiny_world_stub)
    assert seed_groups(single) == single  # one seed: the plans as they are
    # The larger student's settings start first, so the grid does not end on one long trial.
    ordered = [g["members"][0]["params"]["student"] for g in longest_first(groups)]
    assert ordered == ["tiny-qwen2-s"] * 4 + ["tiny-qwen2-xs"] * 4


def test_the_default_grid_packs_its_runs_into_the_train_runs_that_run_at_once(tiny_world_stub):
    plans = trial_plans(config_from_flags("temperature"), tiny_world_stub)
    packed = packed_groups(plans, 2)
    assert len(packed) == 2 and all(group["packed"] for group in packed)
    members = [[m["key"] for m in group["members"]] for group in packed]
    assert sorted(k for keys in members for k in keys) == sorted(p["key"] for p in plans)
    # Balanced: each Train run gets 6 runs of each student.
    for group in packed:
        students = [m["params"]["student"] for m in group["members"]]
        assert students.count("tiny-qwen2-s") == students.count("tiny-qwen2-xs") == 6
        settings = [setting_key(m) for m in group["members"]]
        assert settings == sorted(settings)  # setting by setting (a teacher cache stays loaded)
    assert {g["run_name"] for g in packed} == {
        "Train run 1 of 2 (12 runs)",
        "Train run 2 of 2 (12 runs)",
    }
    # More slots than runs: a Train run per run; as many as settings: still packed by run.
    assert packed_groups(plans, 24) == plans
    assert len(packed_groups(plans, 8)) == 8


def test_packing_balances_unequal_work(tiny_world_stub):
    plans = trial_plans(config_from_flags("temperature", ["--seeds", "0"]), tiny_world_stub)
    loads = [sum(expected_work(m) for m in g["members"]) for g in packed_groups(plans, 3)]
    # 4 runs of s (91k parameters) and 4 of xs (40k) in 3 Train runs: the best split is
    # s+xs+xs, s+xs+xs, s+s (171k, 171k, 182k), in parameters x 400 steps (billions).
    expected = [171_000 * 400e-9, 171_000 * 400e-9, 182_000 * 400e-9]
    assert sorted(loads) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("flags", "concurrent", "trials"),
    [
        ([], 2, 2),  # packed (the default): one Train run per slot
        ([], None, 8),  # no slot count known yet (an autoscaling cluster): per setting
        (["--train-runs", "setting"], 2, 8),
        (["--train-runs", "run"], 2, 24),
    ],
)
def test_train_runs_flag_chooses_how_runs_share_train_runs(
    tiny_world_stub, flags, concurrent, trials
):
    config = config_from_flags("temperature", flags)
    plans = trial_plans(config, tiny_world_stub)
    assert len(tune_trials(config, plans, concurrent)) == trials


def test_gpu_students_keep_a_train_run_per_setting(tiny_world_stub):
    config = config_from_flags("temperature")
    config = dataclasses.replace(
        config, student_train=dataclasses.replace(config.student_train, use_gpu=True)
    )
    assert len(tune_trials(config, trial_plans(config, tiny_world_stub), 2)) == 8


def test_train_runs_flag_refuses_other_values(capsys):
    with pytest.raises(SystemExit) as exit_info:
        config_from_flags("temperature", ["--train-runs", "seed"])
    assert exit_info.value.code == 2
    assert "--train-runs" in capsys.readouterr().err


def test_run_names_read_as_settings():
    from kdray.config.run import KDConfig

    assert run_label(KDConfig("kd", 2.0), "s", "m", "", False) == "kd T=2 σ=0 s ← m"
    assert run_label(KDConfig("sft"), "s", None, "", False) == "sft s"
    assert run_label(KDConfig("seqkd"), "s", "m", "task-aware", True) == "seqkd s ← m (task-aware)"


@pytest.mark.parametrize("study", sorted(DESIGNS))
def test_every_study_script_plans_with_dry_run(study, capsys):
    flags = ["--dry-run"] + (["--preset", "tiny"] if study == "paper" else [])
    assert study_main(study, flags) == 0
    assert "trials" in capsys.readouterr().out


def test_the_plan_says_which_training_items_the_students_use(capsys):
    assert study_main("temperature", ["--dry-run"]) == 0
    assert "400 steps on all the training items" in capsys.readouterr().out
    assert study_main("temperature", ["--dry-run", "--train-examples", "500"]) == 0
    assert "on the first 500 training items" in capsys.readouterr().out


def test_bad_num_samples_is_one_line_and_exit_2(capsys):
    assert study_main("optimal", ["--num-samples", "0"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize(
    "resources, use_gpu, workers, expected",
    [
        ({"CPU": 2.0}, False, 1, 2),
        ({"CPU": 16.0, "GPU": 8.0}, True, 2, 4),
        ({"CPU": 4.0}, True, 1, None),  # no GPU node up yet: let the autoscaler grow
    ],
)
def test_trials_in_flight_follow_the_cluster(monkeypatch, resources, use_gpu, workers, expected):
    monkeypatch.setattr(study_runtime.ray, "cluster_resources", lambda: resources)
    config = config_from_flags("temperature")
    train = dataclasses.replace(config.student_train, use_gpu=use_gpu, num_workers=workers)
    config = dataclasses.replace(config, student_train=train)
    assert study_runtime.trials_in_flight(config) == expected


def test_the_paper_grid_fits_a_cluster_by_sharding_online_teachers():
    config = config_from_flags("paper")
    assert config.kd.teacher_placement == "zero3"  # T=5 reads no cache: 70B teachers shard
    assert all(row.gpus_per_trial for row in plan_pairs(config))  # every trial fits
    chosen = config_from_flags("paper", ["--teacher-placement", "replica", "--ce-weight", "0.5"])
    assert chosen.kd.teacher_placement == "replica" and chosen.kd.ce_weight == 0.5
    assert any(row.gpus_per_trial is None for row in plan_pairs(chosen))


def test_the_opening_line_says_how_runs_share_train_runs(tiny_world_stub):
    from kdray.study.grid import _grouping

    plans = trial_plans(config_from_flags("temperature"), tiny_world_stub)
    # 8 packed Train runs are as many as the settings, and still not one per setting.
    assert _grouping(plans, packed_groups(plans, 8)) == (
        " as 8 Ray Train runs, each training its share in turn"
    )
    assert _grouping(plans, seed_groups(plans)) == (
        " as 8 Ray Train runs (a setting's seeds in turn in one)"
    )
    assert _grouping(plans, packed_groups(plans, 1)).startswith(" as 1 Ray Train run,")
    assert _grouping(plans, plans) == ""
