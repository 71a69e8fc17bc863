"""Seeds as paired replicates: per cell (student x method x T x sigma x teacher kind), the mean
over seeds with its 95% confidence interval, and the paired difference to the same student's
baseline (SFT) run of the same seed, with its CI, a paired t-test (Holm-corrected over the
table's cells), a Wilcoxon signed-rank test, the minimal detectable effect at its n, and how
many seeds it won; per student, a two-way ANOVA of accuracy on method and seed.

Seed s gives every method of a student the same base and data order, so the paired difference
removes what the seed does to both (kdray.study.bases)."""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from analysis.conventions import RUN_METRICS

CELL = ["student", "method", "temperature", "noise_sigma", "teacher_kind"]
LOWER_IS_BETTER = ("nll", "kl_teacher_student")
ALPHA, POWER = 0.05, 0.8
"""The minimal detectable effect: the paired difference a two-sided t-test at ALPHA finds with
probability POWER at the cell's n, given the SD of its differences."""


def per_run(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per student run: accuracy averaged over its tasks (the study's unweighted mean),
    its per-run metrics, and its seed."""
    runs = frame[frame.get("role", "student") != "teacher"]
    runs = runs.assign(teacher_kind=runs["teacher_kind"].fillna(""), seed=runs["seed"].astype(str))
    keys = ["run_id", *CELL, "seed"]
    metrics = {"accuracy": ("accuracy", "mean")}
    metrics |= {m: (m, "first") for m in RUN_METRICS if m in runs}
    filled = runs.assign(**{c: runs[c].astype(object).where(runs[c].notna(), "") for c in CELL})
    return filled.groupby(keys, sort=False).agg(**metrics).reset_index()


def mean_ci(values: pd.Series, level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the t-interval); the half-width is NaN for fewer than 2 values."""
    values = values.dropna()
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    if n < 2:
        return float(values.mean()), math.nan
    half = stats.t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return float(values.mean()), float(half)


def paired_table(
    frame: pd.DataFrame, metric: str = "accuracy", baseline: str = "sft"
) -> pd.DataFrame:
    """Per cell: n, mean ± CI of `metric`, and (cells other than the baseline) the paired
    difference to the baseline over the seeds both ran: delta ± CI, paired t p-value, and the
    seeds in which the cell was better (higher, or lower for NLL and KL)."""
    runs = per_run(frame)
    base = runs[runs["method"] == baseline].set_index(["student", "seed"])[metric]
    rows = []
    for cell, group in runs.groupby(CELL, sort=False):
        mean, ci = mean_ci(group[metric])
        row = dict(zip(CELL, cell, strict=True)) | {"n": len(group), "mean": mean, "ci": ci}
        if cell[1] != baseline:
            paired = group.set_index(["student", "seed"])[metric]
            joined = pd.concat([paired, base], axis=1, join="inner").dropna()
            delta = joined.iloc[:, 0] - joined.iloc[:, 1]
            row["pairs"] = len(delta)
            row["delta"], row["delta_ci"] = mean_ci(delta)
            row["delta_sd"] = float(delta.std(ddof=1)) if len(delta) > 1 else math.nan
            row["p"] = _paired_p(delta)
            row["p_wilcoxon"] = _wilcoxon_p(delta)
            row["mde"] = minimal_detectable_effect(row["delta_sd"], len(delta))
            better = delta < 0 if metric in LOWER_IS_BETTER else delta > 0
            row["wins"] = int(better.sum())
        rows.append(row)
    table = pd.DataFrame(rows)
    table["p_holm"] = holm(table["p"]) if "p" in table else math.nan
    # As the results table: each student's baseline first, then its settings by method and T.
    order = table["method"].map(lambda m: (m != baseline, m))
    temperature = pd.to_numeric(table["temperature"], errors="coerce").fillna(0)
    keyed = table.assign(_order=order, _t=temperature)
    return (
        keyed.sort_values(["student", "_order", "_t"])
        .drop(columns=["_order", "_t"])
        .reset_index(drop=True)
    )


def holm(p_values: pd.Series) -> pd.Series:
    """Holm's step-down correction over the p-values present (NaN where a cell has none)."""
    present = p_values.dropna()
    corrected = pd.Series(math.nan, index=p_values.index)
    if len(present):
        corrected[present.index] = multipletests(present.to_numpy(), method="holm")[1]
    return corrected


def minimal_detectable_effect(sd: float, n: int) -> float:
    """The smallest mean paired difference a two-sided paired t-test at ALPHA detects with
    POWER, for n pairs whose differences have standard deviation `sd`."""
    if n < 2 or math.isnan(sd):
        return math.nan
    effect = TTestPower().solve_power(nobs=n, alpha=ALPHA, power=POWER, alternative="two-sided")
    return float(effect * sd)


def _wilcoxon_p(delta: pd.Series) -> float:
    if len(delta) < 2 or (delta == 0).all():
        return math.nan
    return float(stats.wilcoxon(delta).pvalue)


def method_seed_anova(frame: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Per student: two-way ANOVA of `metric` on method (each cell a level) and seed, additive
    (one run per method and seed); the method effect's F, p and n runs. Rows only where
    there are at least two cells and two seeds."""
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    runs = per_run(frame)
    rows = []
    for student, group in runs.groupby("student", sort=False):
        group = group.assign(
            cell=group[CELL[1:]].astype(str).agg(" ".join, axis=1), y=group[metric]
        ).dropna(subset=["y"])
        if group["cell"].nunique() < 2 or group["seed"].nunique() < 2:
            continue
        fitted = smf.ols("y ~ C(cell) + C(seed)", data=group).fit()
        table = anova_lm(fitted, typ=2)
        method = table.loc["C(cell)"]
        rows.append(
            {
                "student": student,
                "F": float(method["F"]),
                "p": float(method["PR(>F)"]),
                "n": len(group),
                "cells": group["cell"].nunique(),
                "seeds": group["seed"].nunique(),
            }
        )
    return pd.DataFrame(rows)


def replicate_tests(frame: pd.DataFrame) -> pd.DataFrame:
    """The paired tests in the tests.csv schema (analysis.hypothesis_tests.TEST_COLUMNS): per
    cell, the paired t-test against SFT (statistic: mean Δ; `p_value` Holm-corrected, the raw p
    in `paired_t_uncorrected`), the Wilcoxon signed-rank test and the minimal detectable effect
    (statistic, no p-value); per student, the method x seed ANOVA's F for method."""
    table = paired_table(frame)
    rows = []
    for _, row in table[table["method"] != "sft"].iterrows():
        group = " ".join(str(row[c]) for c in CELL if row[c] != "")
        pairs = int(row["pairs"])
        for test, statistic, p in (
            ("paired_t_vs_sft", row["delta"], row["p_holm"]),
            ("paired_t_vs_sft_uncorrected", row["delta"], row["p"]),
            ("wilcoxon_vs_sft", row["delta"], row["p_wilcoxon"]),
            ("mde_paired_t", row["mde"], math.nan),
        ):
            rows.append({"test": test, "domain": "", "task": "Average", "group": group,
                         "statistic": statistic, "p_value": p, "n": pairs})  # fmt: skip
    for _, row in method_seed_anova(frame).iterrows():
        rows.append({"test": "anova_method_seed", "domain": "", "task": "Average",
                     "group": row["student"], "statistic": row["F"], "p_value": row["p"],
                     "n": int(row["n"])})  # fmt: skip
    return pd.DataFrame(rows)


def _paired_p(delta: pd.Series) -> float:
    if len(delta) < 2 or delta.std(ddof=1) == 0:
        return math.nan
    return float(stats.ttest_1samp(delta, 0.0).pvalue)


def _p_text(p: float) -> str:
    return "" if math.isnan(p) else f"{p:.3g}"


def format_ci(mean: float, half: float, digits: int = 1, signed: bool = False) -> str:
    """'12.3 ± 4.5' (or '12.3' with one replicate)."""
    if math.isnan(mean):
        return ""
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return text if math.isnan(half) else f"{text} ± {half:.{digits}f}"


def replicates_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The paired tables of accuracy and (where logged) held-out NLL side by side, one row
    per cell, as results.md shows them."""
    accuracy = paired_table(frame, "accuracy")
    if "nll" not in frame or frame["nll"].isna().all():
        return accuracy
    nll = paired_table(frame, "nll")
    return accuracy.merge(nll, on=[*CELL, "n"], how="left", suffixes=("", "_nll"))


def reading(row: pd.Series, baseline: str = "sft") -> str:
    """What a cell's paired difference on accuracy says: better or worse than the baseline when
    its 95% CI excludes 0, else inconclusive with the CI's half-width."""
    if row["method"] == baseline:
        return "baseline"
    delta, half = row.get("delta", math.nan), row.get("delta_ci", math.nan)
    if math.isnan(half):
        return f"no CI ({row.get('pairs', 0):.0f} seed)"
    if abs(delta) <= half:
        return f"inconclusive: {row['pairs']:.0f} seeds, CI ±{half:.1f}"
    return f"{'above' if delta > 0 else 'below'} {baseline}"


def replicates_markdown(frame: pd.DataFrame) -> str:
    """results.md's section on the seeds: mean ± 95% CI per cell, the paired difference to the
    same student's SFT with its CI, the paired t-test's p and the
    seeds that beat SFT (`won`)."""
    table = replicates_table(frame)
    has_nll = "mean_nll" in table
    rows = []
    for _, row in table.iterrows():
        shown = {
            "student": row["student"], "method": row["method"],
            "T": row["temperature"], "σ": row["noise_sigma"], "seeds": int(row["n"]),
            "accuracy": format_ci(row["mean"], row["ci"]),
            "Δ vs sft": format_ci(row.get("delta", math.nan), row.get("delta_ci", math.nan),
                                  signed=True),
            "p (paired t)": _p_text(row.get("p", math.nan)),
            "p Holm": _p_text(row.get("p_holm", math.nan)),
            "p Wilcoxon": _p_text(row.get("p_wilcoxon", math.nan)),
            "MDE": "" if math.isnan(row.get("mde", math.nan)) else f"{row['mde']:.1f}",
            "won": "" if row["method"] == "sft" else f"{row['wins']:.0f}/{row['pairs']:.0f}",
        }  # fmt: skip
        shown["reading"] = reading(row, baseline="sft")
        if has_nll:
            shown["NLL"] = format_ci(row["mean_nll"], row["ci_nll"], 4)
            shown["Δ NLL vs sft"] = format_ci(
                row.get("delta_nll", math.nan), row.get("delta_ci_nll", math.nan), 4, True
            )
        rows.append(shown)
    lines = [
        "## Seeds as paired replicates",
        "",
        "Mean ± 95% CI (t) over seeds; Δ: the paired difference to the same student's SFT run "
        "of the same seed (same base, same data order), with its CI, a paired t-test (raw p, "
        "and Holm-corrected over the table's cells) and a Wilcoxon signed-rank test (with 3 "
        "seeds its smallest possible p is 0.25). MDE: the smallest |Δ| a paired t-test at 0.05 "
        "detects with power 0.8 at this n and spread. NLL: held-out response NLL per token "
        "(lower is better).",
        "",
        pd.DataFrame(rows).to_markdown(index=False),
    ]
    if table["n"].max() < 2:
        lines += ["", "One seed per cell: no intervals and no paired tests (pass --seeds 0,1,2)."]
    return "\n".join(lines)
