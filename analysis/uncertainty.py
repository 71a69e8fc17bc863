"""Every answer with its uncertainty: 95% intervals and minimal detectable effects (MDE), from
scipy and statsmodels.

- `mean_ci`: the mean with the half-width of its t-interval;
- `paired_test`: a paired t-test of differences against 0, with their mean, CI, SD and MDE;
- `spearman_ci`: a percentile bootstrap interval of Spearman's rho (scipy.stats.bootstrap,
  paired resamples, a fixed seed, so the same rows give the same interval);
- `mde_t`, `mde_f_test`, `mde_spearman`: the smallest effect a test at ALPHA finds with
  probability POWER at its n, in the test's own terms: points (t-tests), eta squared (a one-way
  ANOVA; partial eta squared for one factor of a linear model), |rho| (Spearman).
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
from scipy import optimize, stats
from statsmodels.stats.power import FTestPowerF2, NormalIndPower, TTestPower

LEVEL = 0.95
ALPHA, POWER = 0.05, 0.8
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0
BOOTSTRAP_MIN_PAIRS = 5
"""Fewer pairs have too few distinct resamples for a percentile interval (3 pairs give rho of
+-1, +-0.5 or 0.866 only): no interval."""
SPEARMAN_Z_VARIANCE = 1.06
"""var(atanh(rho_s)) ~ 1.06 / (n - 3) for Spearman's rho (Fieller, Hartley and Pearson 1957;
1 for Pearson's r): the MDE of a Spearman test is that of a z-test on this scale."""
NAN = float("nan")


def mean_ci(values, level: float = LEVEL) -> tuple[float, float]:
    """(mean, half-width of the t-interval) of the values present; the half-width is NaN for
    fewer than 2 values, both are NaN for none."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return NAN, NAN
    if len(values) < 2:
        return float(values.mean()), NAN
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * stats.sem(values)
    return float(values.mean()), float(half)


def paired_test(delta) -> dict[str, float]:
    """Two-sided t-test of paired differences against 0: n, mean (`estimate`), the CI's
    `half` width and bounds, `sd`, t (`statistic`), p and the MDE. No test and no MDE (NaN)
    below 2 differences or at no spread, where a t-test is undefined."""
    values = np.asarray(delta, dtype=float)
    values = values[~np.isnan(values)]
    n = len(values)
    mean, half = mean_ci(values)
    sd = float(np.std(values, ddof=1)) if n > 1 else NAN
    t = p = mde = NAN
    if n > 1 and sd > 0:
        result = stats.ttest_1samp(values, 0.0)
        t, p, mde = float(result.statistic), float(result.pvalue), mde_t(sd, n)
    return {"n": n, "estimate": mean, "half": half, "ci_low": mean - half,
            "ci_high": mean + half, "sd": sd, "statistic": t, "p": p, "mde": mde}  # fmt: skip


def _spearman_along(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rho along `axis` (Pearson's r of the average ranks, as scipy.stats.spearmanr
    computes it); NaN where a resample is constant."""
    ranks = stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis)
    return stats.pearsonr(*ranks, axis=axis).statistic


def spearman_ci(x, y, level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of Spearman's rho over the pairs (x[i], y[i]): scipy's
    bootstrap with BOOTSTRAP_RESAMPLES paired resamples from seed BOOTSTRAP_SEED. A resample
    whose x or y is constant has no rho and is left out (a few of them with small n); NaN
    where fewer than BOOTSTRAP_MIN_PAIRS pairs or rho itself is undefined."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < BOOTSTRAP_MIN_PAIRS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return NAN, NAN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant resamples, and scipy's NaN interval then
        result = stats.bootstrap(
            (x, y), _spearman_along, n_resamples=BOOTSTRAP_RESAMPLES, vectorized=True,
            paired=True, confidence_level=level, method="percentile",
            rng=np.random.default_rng(BOOTSTRAP_SEED),
        )  # fmt: skip
        tail = (1 - level) / 2
        low, high = stats.quantile(
            result.bootstrap_distribution, np.array([tail, 1 - tail]), nan_policy="omit"
        )
    return float(low), float(high)


def _effect_at_power(power_of) -> float:
    """The effect size at which statsmodels' `power_of(effect)` reaches POWER (its own F-test
    solve_power searches a bracket that the large effects met at small n fall outside): the
    bracket doubles from 1 until the power is reached, before the noncentral F's tail turns to
    NaN at huge noncentralities."""
    high = 1.0
    while not power_of(high) >= POWER:
        if high > 2**40:
            return NAN
        high *= 2
    return float(optimize.brentq(lambda effect: power_of(effect) - POWER, 0.0, high))


def mde_t(sd: float, n: int, alternative: str = "two-sided") -> float:
    """The smallest mean (or mean paired difference) a one-sample t-test at ALPHA detects with
    POWER, for n values of standard deviation `sd`; `alternative` as statsmodels' ("larger"
    for a one-sided test that the mean is > 0)."""
    if n < 2 or not math.isfinite(sd):
        return NAN
    return _t_effect(n, alternative) * sd


@functools.cache
def _t_effect(n: int, alternative: str) -> float:
    """Cohen's d that a one-sample t-test of n values finds at ALPHA with POWER (one solve per
    n: a report asks for the same few n many times)."""
    effect = TTestPower().solve_power(nobs=n, alpha=ALPHA, power=POWER, alternative=alternative)
    return float(effect)


def mde_f_test(df_num: int, df_denom: int, nobs: int) -> float:
    """The smallest (partial) eta squared an F-test with these degrees of freedom detects at
    ALPHA with POWER, its noncentrality Cohen's f^2 x nobs (statsmodels' FTestPowerF2 with
    ncc = nobs - df_num - df_denom): a one-way ANOVA of k groups is (k - 1, nobs - k, nobs)."""
    if df_num < 1 or df_denom < 1:
        return NAN
    power, ncc = FTestPowerF2().power, nobs - df_num - df_denom
    f2 = _effect_at_power(lambda f2: power(f2, df_num, df_denom, ALPHA, ncc=ncc))
    return f2 / (1 + f2)


@functools.cache
def mde_spearman(n: int) -> float:
    """The smallest |rho| a two-sided Spearman test of n pairs detects at ALPHA with POWER: a
    z-test (statsmodels' NormalIndPower, one sample) on atanh(rho), whose variance is
    SPEARMAN_Z_VARIANCE / (n - 3)."""
    if n < 4:
        return NAN
    z = NormalIndPower().solve_power(
        nobs1=(n - 3) / SPEARMAN_Z_VARIANCE, alpha=ALPHA, power=POWER, ratio=0
    )
    return math.tanh(float(z))
