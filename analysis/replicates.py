"""Seeds as paired replicates: per cell (domain x student x method x T x sigma x teacher kind),
the mean over seeds with its 95% confidence interval, and the paired difference to the same
student's baseline (SFT) run of the same seed and domain, with its CI, a paired t-test
(Holm-corrected over the table's cells), a Wilcoxon signed-rank test, the minimal detectable
effect at its n, and how many seeds it won; per student, a two-way ANOVA of accuracy on method
and seed.

Seed s gives every method of a student the same base and data order, so the paired difference
removes what the seed does to both (kdray.study.bases). A seed is one replicate: where several
study runs of one experiment ran the same cell with the same seed, their runs are averaged into
that seed's value (`per_seed`), never counted as more seeds."""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analysis.conventions import REFERENCE_METHODS, RUN_KEYS, RUN_METRICS, is_distilled
from analysis.uncertainty import mde_f_test, mean_ci, paired_test

CELL = ["student", "method", "temperature", "noise_sigma", "teacher_kind"]
REPLICATE = ["domain", *CELL]
"""What a cell is: its seeds are its replicates."""
LOWER_IS_BETTER = ("nll", "kl_teacher_student", "nll_teacher_unsure", "nll_teacher_sure")


def per_run(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per student run: accuracy averaged over its tasks (the study's unweighted mean),
    its per-run metrics, its domain ('' where the rows name none) and its seed."""
    runs = frame[frame.get("role", "student") != "teacher"]
    runs = runs.assign(
        teacher_kind=runs["teacher_kind"].fillna(""),
        seed=runs["seed"].astype(str),
        domain=runs["domain"] if "domain" in runs else "",
        run_id=run_ids(runs),
    )
    keys = ["run_id", *REPLICATE, "seed"]
    metrics = {"accuracy": ("accuracy", "mean")}
    metrics |= {m: (m, "first") for m in RUN_METRICS if m in runs}
    filled = runs.assign(
        **{c: runs[c].astype(object).where(runs[c].notna(), "") for c in REPLICATE}
    )
    return filled.groupby(keys, sort=False).agg(**metrics).reset_index()


def run_ids(rows: pd.DataFrame) -> pd.Series:
    """Each row's run: its `run_id`, or where a results file has none, its RUN_KEYS joined
    (as analysis.conventions.with_average tells runs apart)."""
    if "run_id" in rows and rows["run_id"].notna().all():
        return rows["run_id"]
    keys = [k for k in RUN_KEYS if k in rows]
    return rows[keys].astype(object).where(rows[keys].notna(), "").astype(str).agg("|".join, axis=1)


def per_seed(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per cell and seed: the mean of its runs' metrics (one run, unless several study
    runs in the frame ran the same cell with the same seed)."""
    runs = per_run(frame)
    metrics = [c for c in ("accuracy", *RUN_METRICS) if c in runs]
    return runs.groupby([*REPLICATE, "seed"], sort=False)[metrics].mean().reset_index()


def paired_table(
    frame: pd.DataFrame, metric: str = "accuracy", baseline: str = "sft"
) -> pd.DataFrame:
    """Per cell: n, mean ± CI of `metric`, and (cells of a KD method: neither the baseline nor
    a reference row such as `base`) the paired difference to the baseline over the seeds both
    ran: delta ± CI, paired t p-value, and the seeds in which the cell was better (higher, or
    lower for NLL and KL)."""
    seeds = per_seed(frame)
    pair = ["domain", "student", "seed"]
    base = seeds[seeds["method"] == baseline].set_index(pair)[metric]
    distilled = set(seeds.loc[is_distilled(seeds["method"], baseline), "method"])
    rows = []
    for cell, group in seeds.groupby(REPLICATE, sort=False):
        mean, ci = mean_ci(group[metric])
        row = dict(zip(REPLICATE, cell, strict=True)) | {"n": len(group), "mean": mean, "ci": ci}
        if row["method"] in distilled:
            paired = group.set_index(pair)[metric]
            joined = pd.concat([paired, base], axis=1, join="inner").dropna()
            delta = joined.iloc[:, 0] - joined.iloc[:, 1]
            test = paired_test(delta)
            row["pairs"] = test["n"]
            row["delta"], row["delta_ci"], row["delta_sd"] = (
                test[k] for k in ("estimate", "half", "sd")
            )
            row["p"], row["mde"] = test["p"], test["mde"]  # two-sided, as the test
            row["p_wilcoxon"] = _wilcoxon_p(delta)
            better = delta < 0 if metric in LOWER_IS_BETTER else delta > 0
            row["wins"] = int(better.sum())
        rows.append(row)
    table = pd.DataFrame(rows)
    table["p_holm"] = holm(table["p"]) if "p" in table else math.nan
    # As the results table: each student's reference and baseline first, then its settings by
    # method and T.
    order = table["method"].map(lambda m: (m not in REFERENCE_METHODS, m != baseline, m))
    temperature = pd.to_numeric(table["temperature"], errors="coerce").fillna(0)
    keyed = table.assign(_order=order, _t=temperature)
    return (
        keyed.sort_values(["domain", "student", "_order", "_t"])
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


def _wilcoxon_p(delta: pd.Series) -> float:
    if len(delta) < 2 or (delta == 0).all():
        return math.nan
    return float(stats.wilcoxon(delta).pvalue)


def method_seed_anova(frame: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Per domain and student: two-way ANOVA of `metric` on method (each cell a level) and
    seed, additive (one value per method and seed); the method effect's F, p, n values and its
    minimal detectable effect as partial eta squared (analysis.uncertainty.mde_f_test). Reference
    rows (`base`) are no level; rows only where there are at least two cells and two seeds."""
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    seeds = per_seed(frame)
    seeds = seeds[~seeds["method"].isin(REFERENCE_METHODS)]
    rows = []
    for (domain, student), group in seeds.groupby(["domain", "student"], sort=False):
        group = group.assign(
            cell=group[CELL[1:]].astype(str).agg(" ".join, axis=1), y=group[metric]
        ).dropna(subset=["y"])
        if group["cell"].nunique() < 2 or group["seed"].nunique() < 2:
            continue
        fitted = smf.ols("y ~ C(cell) + C(seed)", data=group).fit()
        method = anova_lm(fitted, typ=2).loc["C(cell)"]
        rows.append(
            {
                "domain": domain,
                "student": student,
                "F": float(method["F"]),
                "p": float(method["PR(>F)"]),
                "n": len(group),
                "cells": group["cell"].nunique(),
                "seeds": group["seed"].nunique(),
                "mde": mde_f_test(int(method["df"]), int(fitted.df_resid), len(group)),
            }
        )
    return pd.DataFrame(rows)


def replicate_tests(frame: pd.DataFrame) -> pd.DataFrame:
    """The paired tests in the tests.csv schema (analysis.hypothesis_tests.TEST_COLUMNS): per
    cell, the paired t-test against SFT (statistic: mean Δ with its 95% t-interval and its
    two-sided MDE in points; `p_value` Holm-corrected, the raw p in
    `paired_t_vs_sft_uncorrected`) and the Wilcoxon signed-rank test; per student, the method
    x seed ANOVA's F for method (MDE: partial eta squared)."""
    table = paired_table(frame)
    rows = []
    compared = table[table["pairs"].notna()] if "pairs" in table else table.iloc[:0]
    for _, row in compared.iterrows():  # cells of a KD method
        group = " ".join(str(row[c]) for c in CELL if row[c] != "")
        ci = (row["delta"] - row["delta_ci"], row["delta"] + row["delta_ci"])
        where = row["domain"], group
        for test, p, interval, mde in (
            ("paired_t_vs_sft", row["p_holm"], ci, row["mde"]),
            ("paired_t_vs_sft_uncorrected", row["p"], ci, row["mde"]),
            ("wilcoxon_vs_sft", row["p_wilcoxon"], (math.nan, math.nan), math.nan),
        ):
            rows.append(_test_row(test, where, row["delta"], p, row["pairs"], interval, mde))
    for _, row in method_seed_anova(frame).iterrows():
        rows.append(_test_row("anova_method_seed", (row["domain"], row["student"]), row["F"],
                              row["p"], row["n"], (math.nan, math.nan), row["mde"]))  # fmt: skip
    return pd.DataFrame(rows)


def _test_row(
    test: str, where: tuple[str, str], statistic: float, p: float, n: int, ci: tuple, mde: float
) -> dict:
    """A tests.csv row of the seeds' tests (on accuracy averaged over tasks: task Average);
    `where`: (domain, group)."""
    domain, group = where
    return {"test": test, "domain": domain, "task": "Average", "group": group,
            "statistic": statistic, "p_value": p, "n": int(n), "ci_low": ci[0],
            "ci_high": ci[1], "mde": mde}  # fmt: skip


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
    return accuracy.merge(nll, on=[*REPLICATE, "n"], how="left", suffixes=("", "_nll"))


def reading(row: pd.Series, baseline: str = "sft") -> str:
    """What a cell's paired difference on accuracy says: better or worse than the baseline when
    its 95% CI excludes 0, else inconclusive with the CI's half-width."""
    if row["method"] == baseline:
        return "baseline"
    if row["method"] in REFERENCE_METHODS:
        return "reference"
    delta, half = row.get("delta", math.nan), row.get("delta_ci", math.nan)
    if math.isnan(half):
        return f"no CI ({row.get('pairs', 0):.0f} seed)"
    if abs(delta) <= half:
        return f"inconclusive: {row['pairs']:.0f} seeds, CI ±{half:.1f}"
    return f"{'above' if delta > 0 else 'below'} {baseline}"


def _shown_row(row: pd.Series, domains: bool) -> dict:
    """One cell of results.md's seeds table, as text."""
    shown = {"domain": row["domain"]} if domains else {}
    shown |= {
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
        "reading": reading(row, baseline="sft"),
    }  # fmt: skip
    if "mean_nll" in row:
        shown["NLL"] = format_ci(row["mean_nll"], row["ci_nll"], 4)
        shown["Δ NLL vs sft"] = format_ci(
            row.get("delta_nll", math.nan), row.get("delta_ci_nll", math.nan), 4, True
        )
    return shown


def seeds_summary(table: pd.DataFrame, baseline: str = "sft") -> str:
    """One line: how many seeds the cells have, and how many of the cells compared with the
    baseline are inconclusive (their CI wider than their effect)."""
    counts = table["n"].value_counts().sort_index(ascending=False)
    seeds = ", ".join(f"{n} ({cells} cell{'s' * (cells > 1)})" for n, cells in counts.items())
    compared = table[is_distilled(table["method"], baseline)]
    readings = compared.apply(reading, axis=1, baseline=baseline) if len(compared) else []
    unclear = sum(str(r).startswith("inconclusive") for r in readings)
    return (
        f"Seeds per cell: {seeds}. Inconclusive (95% CI of Δ wider than |Δ|): {unclear} of "
        f"{len(compared)} cells compared with {baseline}."
    )


def replicates_markdown(frame: pd.DataFrame) -> str:
    """results.md's section on the seeds: mean ± 95% CI per cell, the paired difference to the
    same student's SFT with its CI, the paired tests' p, the MDE, the seeds that beat SFT
    (`won`) and the reading; then how many seeds each cell has and how many are
    inconclusive."""
    table = replicates_table(frame)
    domains = table["domain"].nunique() > 1
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
        pd.DataFrame([_shown_row(row, domains) for _, row in table.iterrows()]).to_markdown(
            index=False
        ),
        "",
        seeds_summary(table),
    ]
    if table["n"].max() < 2:
        lines += ["", "One seed per cell: no intervals and no paired tests (pass --seeds 0,1,2)."]
    return "\n".join(lines)
