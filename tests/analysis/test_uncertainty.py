"""Intervals and minimal detectable effects (analysis.uncertainty), against scipy called
directly and against numbers worked out by hand."""

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.power import TTestIndPower

from analysis.uncertainty import (
    BOOTSTRAP_SEED,
    mde_f_test,
    mde_spearman,
    mde_t,
    mean_ci,
    spearman_ci,
)

X = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
Y = [2.0, 1.0, 4.0, 3.0, 7.0, 5.0, 8.0, 6.0]  # sum d^2 = 14: rho = 1 - 6 * 14 / (8 * 63)


def test_the_spearman_bootstrap_is_scipys_with_a_fixed_seed():
    rho = stats.spearmanr(X, Y).statistic
    assert rho == pytest.approx(1 - 6 * 14 / (8 * 63))
    low, high = spearman_ci(X, Y)
    assert low < rho < high <= 1.0
    # The same interval from scipy's bootstrap, called the plain way (spearmanr per resample).
    direct = stats.bootstrap(
        (X, Y), lambda x, y: stats.spearmanr(x, y).statistic, paired=True, vectorized=False,
        method="percentile", rng=np.random.default_rng(BOOTSTRAP_SEED),
    )  # fmt: skip
    assert (low, high) == (
        pytest.approx(direct.confidence_interval.low),
        pytest.approx(direct.confidence_interval.high),
    )
    assert spearman_ci(X, Y) == (low, high)  # the same rows give the same interval


def test_the_spearman_bootstrap_with_few_pairs_and_ties():
    # Six pairs with ties: some resamples are constant (no rho); they are left out, not NaN.
    low, high = spearman_ci([0.5, 1.5, 3, 0.5, 1.5, 3], [2, 3, 3, 2, 0, 0])
    assert -1.0 <= low <= 0.0 <= high <= 1.0  # rho = 0 here
    assert all(math.isnan(v) for v in spearman_ci([1, 1, 1, 1], [1, 2, 3, 4]))  # constant
    assert all(math.isnan(v) for v in spearman_ci([1, 2, 3, 4], [1, 3, 2, 4]))  # too few pairs


def test_mean_ci_by_hand():
    mean, half = mean_ci([10.0, 20.0, 30.0, float("nan")])
    assert mean == 20.0 and half == pytest.approx(4.302653 * 10 / math.sqrt(3), rel=1e-6)
    assert math.isnan(mean_ci([5.0])[1]) and math.isnan(mean_ci([])[0])


def test_mde_of_a_one_sided_t_test_reaches_the_power():
    mde = mde_t(2.0, 6, "larger")
    critical = stats.t.ppf(0.95, 5)
    power = stats.nct.sf(critical, 5, mde / 2.0 * math.sqrt(6))
    assert power == pytest.approx(0.8, abs=1e-4)
    assert mde < mde_t(2.0, 6)  # one-sided finds smaller effects than two-sided
    assert math.isnan(mde_t(2.0, 1)) and math.isnan(mde_t(float("nan"), 5))


def test_mde_of_a_one_way_anova_with_two_groups_is_the_two_sample_t_tests():
    # Two groups of 5: Cohen's f = d / 2, so eta^2 = f^2 / (1 + f^2) with d the t-test's MDE.
    d = TTestIndPower().solve_power(nobs1=5, alpha=0.05, power=0.8, ratio=1)
    f2 = (d / 2) ** 2
    assert mde_f_test(1, 8, 10) == pytest.approx(f2 / (1 + f2), rel=1e-5)
    assert 0 < mde_f_test(2, 3, 6) < 1  # small n: a large effect, still found by the solver
    assert math.isnan(mde_f_test(1, 0, 2))  # no residual degrees of freedom


def test_mde_of_spearman_by_hand():
    # n = 13: atanh(rho) has SD sqrt(1.06 / 10); the MDE is (z_0.975 + z_0.8) SDs.
    z = (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * math.sqrt(1.06 / 10)
    assert mde_spearman(13) == pytest.approx(math.tanh(z), abs=1e-5)
    assert mde_spearman(40) < mde_spearman(13) < 1
    assert math.isnan(mde_spearman(3))
