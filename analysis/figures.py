"""Figures for papers: PNG, one panel per student, against the factor the study varies."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.conventions import is_distilled  # noqa: E402
from analysis.tables import METHOD_ORDER, teacher_accuracy  # noqa: E402
from analysis.uncertainty import mean_ci  # noqa: E402

FACTORS = {"temperature": "temperature T", "noise_sigma": "teacher-logit noise σ"}


def study_figure(frame: pd.DataFrame, out_dir: Path) -> Path:
    """The figure of what the study varies: accuracy against T, or against σ, and otherwise
    (methods, student sizes, teacher kinds) accuracy per method as bars."""
    kd = frame[(frame["role"] != "teacher") & is_distilled(frame["method"])]
    for factor in FACTORS:
        if kd[factor].nunique() > 1:
            return accuracy_vs_factor(frame, factor, out_dir / f"accuracy_vs_{factor}.png")
    return accuracy_by_method(frame, out_dir / "accuracy_by_method.png")


def accuracy_by_method(frame: pd.DataFrame, path: Path) -> Path:
    """Bars per method (and teacher kind, when the study compares kinds), per student, with
    the teacher's accuracy as a reference. A bar: the mean over seeds (each seed's mean over
    settings and tasks) with its 95% CI as an error bar, and one small dot per seed."""
    students_rows = frame[frame["role"] != "teacher"]
    students = (
        students_rows.groupby("student")["student_params_b"].first().sort_values(ascending=False)
    )
    figure, axes = plt.subplots(
        1, len(students), figsize=(4.2 * len(students), 3.4), squeeze=False, sharey=True
    )
    kinds = students_rows["teacher_kind"].replace("", None).nunique() > 1
    teachers = frame[frame["role"] == "teacher"]
    if kinds:  # one reference line per teacher kind
        by_kind = teachers.groupby("teacher_kind")
        teacher_lines = {f"teacher ({k})": teacher_accuracy(rows).mean() for k, rows in by_kind}
    else:
        teacher_lines = {"teacher": teacher_accuracy(frame).mean()}
    teacher_lines = {k: v for k, v in teacher_lines.items() if pd.notna(v)}
    for axis, student in zip(axes[0], students.index, strict=True):
        rows = students_rows[students_rows["student"] == student]
        label = rows["method"] + (" " + rows["teacher_kind"].fillna("") if kinds else "")
        seeds = _per_seed(rows.assign(label=label.str.strip()), ["label"])
        labels = sorted(seeds.index.unique("label"),
                        key=lambda b: (METHOD_ORDER.get(b.split()[0], 99), b))  # fmt: skip
        bars = [mean_ci(seeds.loc[b]) for b in labels]
        halves = [0.0 if pd.isna(half) else half for _, half in bars]
        axis.bar(range(len(bars)), [m for m, _ in bars], yerr=halves, capsize=3,
                 color="tab:blue", alpha=0.8)  # fmt: skip
        for x, b in enumerate(labels):
            axis.scatter([x] * len(seeds.loc[b]), seeds.loc[b], s=9, color="black", alpha=0.6,
                         zorder=3)  # fmt: skip
        axis.set_xticks(range(len(bars)), labels, rotation=45, ha="right", fontsize="small")
        for (kind, value), style in zip(teacher_lines.items(), (":", "-."), strict=False):
            axis.axhline(value, color="black", linestyle=style, label=kind)
        if teacher_lines:
            axis.legend(loc="best", fontsize="small")
        axis.set_title(student)
        axis.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel("test accuracy (%)")
    return _save(figure, path)


def _per_seed(rows: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Accuracy per (keys..., seed): each seed's mean over its tasks (one value when the rows
    carry no seed)."""
    seed = rows["seed"].astype(str) if "seed" in rows else pd.Series("", index=rows.index)
    return rows.assign(_seed=seed).groupby([*keys, "_seed"])["accuracy"].mean()


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def paired_deltas(rows: pd.DataFrame, factor: str) -> pd.Series:
    """One student's KD − SFT accuracy per (method, factor value, seed), each KD run paired
    with the SFT run of its own seed (seeds without an SFT run are left out)."""
    sft = _per_seed(rows[rows["method"] == "sft"], [])
    kd = _per_seed(rows[is_distilled(rows["method"])], ["method", factor])
    paired = kd[kd.index.get_level_values("_seed").isin(sft.index)]
    return paired - sft.reindex(paired.index.get_level_values("_seed")).to_numpy()


def accuracy_vs_factor(frame: pd.DataFrame, factor: str, path: Path) -> Path:
    """Accuracy against `factor` (T or σ) for each KD method, per student, with the student's
    SFT accuracy (its 95% CI over seeds shaded) and the teacher's accuracy as horizontal
    references. Each point: the mean over seeds of the runs' task means, with its 95% CI as an
    error bar and one small dot per seed. Where SFT runs share seeds with the KD runs, a second
    row shows the paired difference KD − SFT per seed with its 95% CI: the seed-to-seed spread
    that widens the first row's intervals cancels there, as in the replicates table."""
    students_rows = frame[frame["role"] != "teacher"]
    students = (
        students_rows.groupby("student")["student_params_b"].first().sort_values(ascending=False)
    )
    deltas = {s: paired_deltas(students_rows[students_rows["student"] == s], factor)
              for s in students.index}  # fmt: skip
    paired = any(len(d) for d in deltas.values())
    figure, axes = plt.subplots(1 + paired, len(students), figsize=(4.2 * len(students),
                                3.4 * (1 + paired)), squeeze=False, sharey="row")  # fmt: skip
    teacher = teacher_accuracy(frame).mean()
    for axis, student in zip(axes[0], students.index, strict=True):
        rows = students_rows[students_rows["student"] == student]
        for method, by_method in rows[is_distilled(rows["method"])].groupby("method"):
            _draw_curve(axis, _per_seed(by_method, [factor]), factor, method)
        sft, sft_half = mean_ci(_per_seed(rows[rows["method"] == "sft"], []))
        if pd.notna(sft):
            axis.axhline(sft, color="grey", linestyle="--", label="SFT")
            if pd.notna(sft_half):
                axis.axhspan(sft - sft_half, sft + sft_half, color="grey", alpha=0.15)
        if pd.notna(teacher):
            axis.axhline(teacher, color="black", linestyle=":", label="teacher")
        axis.set_title(student)
        axis.set_xlabel(FACTORS[factor])
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    # A t interval over 3 seeds can reach past 0-100%; the axis keeps to what accuracy can be.
    axes[0][0].set_ylim(-2, 102)
    axes[0][-1].legend(loc="best", fontsize="small")
    if paired:
        for axis, student in zip(axes[1], students.index, strict=True):
            for method, by_method in deltas[student].groupby(level="method"):
                _draw_curve(axis, by_method.droplevel("method"), factor, method)
            axis.axhline(0, color="grey", linestyle="--")
            axis.set_xlabel(FACTORS[factor])
            axis.grid(alpha=0.3)
        axes[1][0].set_ylabel("KD − SFT, paired per seed (points)")
    return _save(figure, path)


def _draw_curve(axis, seeds: pd.Series, factor: str, method: str) -> None:
    """Mean ± 95% CI over seeds per value of `factor`, and one small dot per seed."""
    curve = seeds.groupby(level=factor).agg(lambda v: mean_ci(v))
    x = curve.index.to_numpy(dtype=float)
    means = [m for m, _ in curve.to_numpy()]
    halves = [0.0 if pd.isna(h) else h for _, h in curve.to_numpy()]
    line = axis.errorbar(x, means, yerr=halves, marker="o", capsize=3, label=method)
    axis.scatter(seeds.index.get_level_values(factor).to_numpy(dtype=float), seeds.to_numpy(),
                 s=9, alpha=0.5, color=line[0].get_color())  # fmt: skip


METHOD_COLOURS = {"kd": "tab:blue", "revkd": "tab:orange", "seqkd": "tab:green",
                  "gkd": "tab:red", "skew_fkl": "tab:purple", "skew_rkl": "tab:brown"}  # fmt: skip


def _methods(observations: pd.DataFrame) -> list[str]:
    return sorted(observations["method"].unique(), key=lambda m: (METHOD_ORDER.get(m, 99), m))


def improvement_by_method(observations: pd.DataFrame, task: str, path: Path) -> Path:
    """One message: does each KD method beat SFT? Every (teacher, student) pair's improvement
    as a dot, the method's mean as a bar with its 95% CI over the pairs, zero marked."""
    rows = observations[observations["task"] == task]
    methods = _methods(rows)
    figure, axis = plt.subplots(figsize=(1.1 * len(methods) + 2.4, 3.4))
    shown = [0.0]  # every value and interval end drawn, for the axis limits
    for x, method in enumerate(methods):
        values = rows[rows["method"] == method]["improvement"].dropna()
        colour = METHOD_COLOURS.get(method, "tab:gray")
        mean, half = mean_ci(values)
        half = 0.0 if pd.isna(half) else half
        axis.bar(x, mean, yerr=half, capsize=3, color=colour, alpha=0.35, width=0.6)
        spread = [x + 0.18 * ((i % 5) - 2) / 2 for i in range(len(values))]
        axis.scatter(spread, values, color=colour, s=18, zorder=3)
        shown += [*values, mean - half, mean + half] if len(values) else []
    axis.axhline(0, color="black", linewidth=0.8)
    low, high = min(shown), max(shown)
    pad = 0.1 * ((high - low) or 1.0)
    axis.set_ylim(low - pad, high + pad)  # dots at zero stay visible above the bars' floor
    axis.set_xticks(range(len(methods)), methods)
    axis.set_ylabel(f"improvement over SFT\n({task}, points)")
    axis.set_title("KD vs SFT per method\n(bar: mean, 95% CI; dot: one teacher-student pair)",
                   fontsize=10)  # fmt: skip
    axis.grid(alpha=0.3, axis="y")
    return _save(figure, path)


def improvement_vs(
    observations: pd.DataFrame, variable: str, label: str, task: str, path: Path, rho: float,
    ci: tuple[float, float] = (float("nan"), float("nan")),
) -> Path:  # fmt: skip
    """One message: how improvement moves with `variable` (student size, teacher accuracy),
    one colour per method, Spearman's rho over all methods and its 95% CI in the title."""
    rows = observations[observations["task"] == task].dropna(subset=[variable, "improvement"])
    figure, axis = plt.subplots(figsize=(5.2, 3.6))
    for method in _methods(rows):
        part = rows[rows["method"] == method].sort_values(variable)
        axis.plot(part[variable], part["improvement"], marker="o", linestyle="", alpha=0.75,
                  color=METHOD_COLOURS.get(method, "tab:gray"), label=method)  # fmt: skip
    if variable == "student_size" and (rows[variable] > 0).all():
        axis.set_xscale("log")
        plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:.2g}")
        axis.xaxis.set_major_formatter(plain)
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_xticks(sorted(rows[variable].unique()))
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set_xlabel(label)
    axis.set_ylabel(f"improvement over SFT ({task}, points)")
    shown = "n/a" if pd.isna(rho) else f"{rho:.2f}"
    if not pd.isna(rho) and not pd.isna(ci[0]):
        shown += f", 95% CI [{ci[0]:.2f}, {ci[1]:.2f}]"
    axis.set_title(f"Improvement over SFT vs {label.split(' (')[0]}\n(Spearman ρ = {shown}, "
                   "all methods)", fontsize=10)  # fmt: skip
    axis.legend(fontsize="small", loc="best")
    axis.grid(alpha=0.3)
    return _save(figure, path)


def agreement_fidelity_bars(table: pd.DataFrame, path: Path) -> Path:
    """One message: does KD bring the student closer to its teacher than SFT does? Agreement
    and BLEU fidelity per student, SFT next to KD."""
    figure, axes = plt.subplots(1, 2, figsize=(8.4, 3.4))
    x = range(len(table))
    for axis, value, label in zip(
        axes,
        ("agreement", "fidelity"),
        ("agreement with teacher (%)", "fidelity (BLEU)"),
        strict=True,
    ):
        for offset, kind, colour in ((-0.2, "SFT", "tab:gray"), (0.2, "KD", "tab:blue")):
            column = f"{value} {kind}"
            if column in table:
                axis.bar([i + offset for i in x], table[column], width=0.4, label=kind,
                         color=colour)  # fmt: skip
        axis.set_xticks(list(x), table["student"], rotation=30, ha="right", fontsize="small")
        axis.set_ylabel(label)
        columns = [f"{value} SFT", f"{value} KD"]
        top = table[[c for c in columns if c in table]].max().max()
        axis.set_ylim(0, 1.3 * top if top > 0 else 1)  # headroom for the legend
        axis.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize="small", loc="upper right", ncol=2)
    figure.suptitle("Teacher-student agreement and fidelity: SFT vs KD", fontsize=10)
    return _save(figure, path)
