"""The study's statistics over its observations (analysis.conventions.observations): one row
per test in the `tests.csv` schema, at full precision, each with its n, its 95% interval
(`ci_low`, `ci_high`) where the test has one and its minimal detectable effect (`mde`, at
ALPHA 0.05 and power 0.8: analysis.uncertainty) where power has a closed form.

- `ttest_improvement`: one-sample t-test that improvement > 0 (one-sided), all methods and
  per method; CI: the mean improvement's t-interval; MDE in points;
- `anova_methods`: one-way ANOVA of improvement across KD methods (the study's test; MDE as
  eta squared), with `kruskal_methods` (Kruskal-Wallis), `eta_squared_methods` (effect size,
  no p-value) and `tukey_hsd` (one row per pair of methods: mean difference, adjusted p and
  Tukey's simultaneous CI) beside it;
- `spearman_<x>`: Spearman's rho of improvement with student size, teacher accuracy, the
  student's SFT accuracy, agreement and fidelity, all methods and per method; CI: percentile
  bootstrap; MDE as |rho|.

Each per domain and task (the Average pseudo-task included). A test without enough data
(fewer than 2 values, fewer than 2 methods, a constant variable) keeps its row with n and NaN.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from analysis.uncertainty import mde_f_test, mde_spearman, mde_t, mean_ci, spearman_ci

TEST_COLUMNS = ["test", "domain", "task", "group", "statistic", "p_value", "n", "ci_low",
                "ci_high", "mde"]  # fmt: skip
SPEARMAN_VARIABLES = {
    "student_size": "spearman_student_size",
    "teacher_accuracy": "spearman_teacher_accuracy",
    "sft_accuracy": "spearman_student_sft",
    "agreement": "spearman_agreement",
    "fidelity": "spearman_fidelity",
}
NAN = float("nan")


def _row(
    test: str, where: tuple, group: str, statistic, p_value, n: int,
    ci: tuple[float, float] = (NAN, NAN), mde: float = NAN,
) -> dict:  # fmt: skip
    """One tests.csv row; a test that could not run (NaN statistic) has no MDE either."""
    domain, task = where
    mde = NAN if np.isnan(statistic) else mde
    return {"test": test, "domain": domain, "task": task, "group": group,
            "statistic": float(statistic), "p_value": float(p_value), "n": int(n),
            "ci_low": float(ci[0]), "ci_high": float(ci[1]), "mde": float(mde)}  # fmt: skip


def _quiet(function, *args, **kwargs):
    """scipy's result, NaN where the data cannot carry the test (scipy warns or raises)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return function(*args, **kwargs)
        except ValueError:
            return None


def ttest_improvement(improvement: pd.Series) -> tuple[float, float, int]:
    """One-sided one-sample t-test of improvement > 0: (t, p, n)."""
    values = improvement.dropna().to_numpy(dtype=float)
    if len(values) < 2:
        return NAN, NAN, len(values)
    result = _quiet(stats.ttest_1samp, values, 0.0, alternative="greater")
    return result.statistic, result.pvalue, len(values)


def eta_squared(groups: list[np.ndarray]) -> float:
    """Share of the total sum of squares between the groups (one-way ANOVA's effect size)."""
    values = np.concatenate(groups)
    total = ((values - values.mean()) ** 2).sum()
    between = sum(len(g) * (g.mean() - values.mean()) ** 2 for g in groups)
    return between / total if total > 0 else NAN


def method_rows(observations: pd.DataFrame, where: tuple) -> list[dict]:
    """ANOVA, Kruskal-Wallis, eta squared and Tukey HSD of improvement across KD methods."""
    by_method = {
        method: rows["improvement"].dropna().to_numpy(dtype=float)
        for method, rows in observations.groupby("method", sort=True)
    }
    by_method = {m: v for m, v in by_method.items() if len(v)}
    groups = list(by_method.values())
    n = sum(len(g) for g in groups)
    if len(groups) < 2:
        return [_row(t, where, "all", NAN, NAN, n)
                for t in ("anova_methods", "kruskal_methods", "eta_squared_methods")]  # fmt: skip
    anova = _quiet(stats.f_oneway, *groups)
    kruskal = _quiet(stats.kruskal, *groups)
    mde = mde_f_test(len(groups) - 1, n - len(groups), n)  # as eta squared
    rows = [
        _row("anova_methods", where, "all", *(anova or (NAN, NAN)), n, mde=mde),
        _row("kruskal_methods", where, "all", *(kruskal or (NAN, NAN)), n),
        _row("eta_squared_methods", where, "all", eta_squared(groups), NAN, n),
    ]
    if all(len(g) >= 2 for g in groups):
        rows += tukey_rows(by_method, where)
    return rows


def tukey_rows(by_method: dict[str, np.ndarray], where: tuple) -> list[dict]:
    """Tukey's HSD, one row per pair of methods: the mean difference (first minus second), its
    adjusted p and its simultaneous 95% interval."""
    tukey = _quiet(stats.tukey_hsd, *by_method.values())
    interval = _quiet(tukey.confidence_interval) if tukey else None
    names, groups = list(by_method), list(by_method.values())
    rows = []
    for i, j in itertools.combinations(range(len(names)), 2):
        statistic = tukey.statistic[i, j] if tukey else NAN
        p_value = tukey.pvalue[i, j] if tukey else NAN
        ci = (interval.low[i, j], interval.high[i, j]) if interval else (NAN, NAN)
        rows.append(_row("tukey_hsd", where, f"{names[i]} vs {names[j]}", statistic, p_value,
                         len(groups[i]) + len(groups[j]), ci))  # fmt: skip
    return rows


def _pairs(x: pd.Series, y: pd.Series) -> pd.DataFrame:
    """The pairs where both are known."""
    return pd.DataFrame({"x": x, "y": y}).dropna()


def spearman(x: pd.Series, y: pd.Series) -> tuple[float, float, int]:
    """Spearman's rho of the pairs where both are known: (rho, p, n)."""
    pairs = _pairs(x, y)
    if len(pairs) < 3 or pairs["x"].nunique() < 2 or pairs["y"].nunique() < 2:
        return NAN, NAN, len(pairs)
    result = _quiet(stats.spearmanr, pairs["x"], pairs["y"])
    return result.statistic, result.pvalue, len(pairs)


def improvement_row(improvement: pd.Series, where: tuple, group: str) -> dict:
    """The t-test of improvement > 0 with the mean's 95% t-interval and the MDE of the
    one-sided test (points of improvement)."""
    values = improvement.dropna().to_numpy(dtype=float)
    mean, half = mean_ci(values)
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else NAN
    return _row("ttest_improvement", where, group, *ttest_improvement(improvement),
                (mean - half, mean + half), mde_t(sd, len(values), "larger"))  # fmt: skip


def spearman_row(test: str, x: pd.Series, y: pd.Series, where: tuple, group: str) -> dict:
    """Spearman's rho with its bootstrap 95% interval and the MDE (|rho|) at its n."""
    rho, p_value, n = spearman(x, y)
    pairs = _pairs(x, y)
    ci = spearman_ci(pairs["x"], pairs["y"]) if not np.isnan(rho) else (NAN, NAN)
    return _row(test, where, group, rho, p_value, n, ci, mde_spearman(n))


def run_tests(observations: pd.DataFrame) -> pd.DataFrame:
    """Every test, per domain and task, over all methods and per method."""
    rows: list[dict] = []
    for where, at in observations.groupby(["domain", "task"], sort=True):
        methods = sorted(at["method"].unique())
        groups = [("all", at)] + [(m, at[at["method"] == m]) for m in methods]
        rows += [improvement_row(part["improvement"], where, group) for group, part in groups]
        rows += method_rows(at, where)
        for variable, test in SPEARMAN_VARIABLES.items():
            rows += [spearman_row(test, part[variable], part["improvement"], where, group)
                     for group, part in groups if variable in part]  # fmt: skip
    return pd.DataFrame(rows, columns=TEST_COLUMNS)
