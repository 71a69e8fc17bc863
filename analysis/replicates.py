"""Seeds as paired replicates: per cell (student x method x T x sigma x teacher kind), the mean
over seeds with its 95% confidence interval, and the paired difference to the same student's
baseline (SFT) run of the same seed, with its CI, a paired t-test and how many seeds it won.

Seed s gives every method of a student the same base and data order, so the paired difference
removes what the seed does to both (kdray.study.bases)."""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats

from analysis.conventions import RUN_METRICS

CELL = ["student", "method", "temperature", "noise_sigma", "teacher_kind"]
LOWER_IS_BETTER = ("nll", "kl_teacher_student")


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
            better = delta < 0 if metric in LOWER_IS_BETTER else delta > 0
            row["wins"] = int(better.sum())
        rows.append(row)
    table = pd.DataFrame(rows)
    # As the results table: each student's baseline first, then its settings by method and T.
    order = table["method"].map(lambda m: (m != baseline, m))
    temperature = pd.to_numeric(table["temperature"], errors="coerce").fillna(0)
    keyed = table.assign(_order=order, _t=temperature)
    return (
        keyed.sort_values(["student", "_order", "_t"])
        .drop(columns=["_order", "_t"])
        .reset_index(drop=True)
    )


def _paired_p(delta: pd.Series) -> float:
    if len(delta) < 2 or delta.std(ddof=1) == 0:
        return math.nan
    return float(stats.ttest_1samp(delta, 0.0).pvalue)


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
            "p (paired t)": "" if math.isnan(row.get("p", math.nan)) else f"{row['p']:.3g}",
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
        "of the same seed (same base, same data order), with its CI and a paired t-test "
        "(uncorrected). NLL: held-out response NLL per token (lower is better).",
        "",
        pd.DataFrame(rows).to_markdown(index=False),
    ]
    if table["n"].max() < 2:
        lines += ["", "One seed per cell: no intervals and no paired tests (pass --seeds 0,1,2)."]
    return "\n".join(lines)
