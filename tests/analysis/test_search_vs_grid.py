"""benchmarks/search_vs_grid.py's bookkeeping without training anything: the grid's pick is the
setting with the best mean validation score over its seeds, the comparison is paired over the
confirmation seeds with its CI, and a grid of another world is refused."""

import importlib.util
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from kdray.cli.args import config_from_flags
from kdray.config.run import flatten, to_dict
from kdray.errors import KdrayError

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "search_vs_grid.py"
spec = importlib.util.spec_from_file_location("search_vs_grid", PATH)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def run(student, method, temperature, seed, val, test, **params):
    data = SimpleNamespace(
        params={"student": student, "method": method, "temperature": temperature,
                "noise_sigma": "0.0" if temperature else "", "seed": str(seed), **params},
        metrics={"val_score": val, "score": test},
    )  # fmt: skip
    return SimpleNamespace(data=data)


def test_the_grid_picks_the_best_mean_over_seeds_not_the_luckiest_run():
    config = config_from_flags("temperature", [])
    runs = [
        run("s", "sft", "", 0, 30, 31), run("s", "sft", "", 1, 32, 30),
        run("s", "kd", "1.0", 0, 50, 40), run("s", "kd", "1.0", 1, 10, 12),  # one lucky seed
        run("s", "kd", "2.0", 0, 40, 41), run("s", "kd", "2.0", 1, 38, 37),
    ]  # fmt: skip
    pick, means = bench.grid_pick(bench.grid_table(runs), config)
    assert pick == {"method": "kd", "temperature": 2.0, "noise_sigma": 0.0,
                    "ce_weight": config.kd.ce_weight,
                    "learning_rate": config.student_train.learning_rate}  # fmt: skip
    assert (means["val"], means["test"]) == (39.0, 39.0)
    sft = bench.grid_table(runs[:2])
    assert bench.grid_pick(sft, config)[0] == {
        "method": "sft", "learning_rate": config.student_train.learning_rate}  # fmt: skip


def test_the_picks_are_compared_paired_over_the_confirmation_seeds():
    runs = [run("s", "kd", "1.0", seed, 0, test, confirms="t1")
            for seed, test in ((3, 50), (4, 44), (5, 47), (1, 99))]  # fmt: skip
    runs += [run("s", "sft", "", seed, 0, test, confirms="grid")
             for seed, test in ((3, 46), (4, 42), (5, 43))]  # fmt: skip
    search = bench.confirmation_scores(runs, "s", "t1", [3, 4, 5])
    grid = bench.confirmation_scores(runs, "s", "grid", [3, 4, 5])
    assert search.tolist() == [50, 44, 47]  # seed 1 was a search seed, not a confirmation
    shown = bench.compare(search, grid, same=False)
    # differences 4, 2, 4: mean 10/3, sd 2/sqrt(3), t(0.975, 2) = 4.302653
    half = 4.302653 * (2 / math.sqrt(3)) / math.sqrt(3)
    assert shown["search − grid (paired)"] == f"+3.3 ± {half:.1f} (n=3)"
    assert shown["verdict"] == "search better" and float(shown["p (paired t)"]) < 0.05
    # n = 3, sd 2/sqrt(3): statsmodels' paired-t effect size at power 0.8 times the sd
    from statsmodels.stats.power import TTestPower

    effect = TTestPower().solve_power(nobs=3, alpha=0.05, power=0.8)
    assert shown["MDE (paired t, power 0.8)"] == f"{effect * 2 / math.sqrt(3):.1f}"
    assert shown["grid pick test (confirmation)"].startswith("43.7 ± ")
    assert bench.compare(search, search, same=True)["verdict"] == "the same setting"
    one = bench.compare(search[:1], grid[:1], same=False)
    assert one["verdict"].startswith("no CI") and one["p (paired t)"] == ""


def test_a_grid_of_other_settings_is_refused():
    config = config_from_flags("optimal", [])
    grid = {k: str(v) for k, v in flatten(to_dict(config_from_flags("temperature", [])),
                                          "config.").items()}  # fmt: skip
    bench.check_same_world(grid, config)  # the default studies share their preset
    smoke = {k: str(v) for k, v in flatten(to_dict(config_from_flags(
        "temperature", ["--smoke"])), "config.").items()}  # fmt: skip
    with pytest.raises(KdrayError, match="config.student_train.steps"):
        bench.check_same_world(smoke, config)
    with pytest.raises(KdrayError, match="no config params"):
        bench.check_same_world({}, config)
