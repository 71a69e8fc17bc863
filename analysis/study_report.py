"""The study's report from its tidy rows: tests.csv (full precision), report.md and
report.html (rounded tables, embedded figures), PNG figures and LaTeX tables in one folder."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis import ablations, figures
from analysis.conventions import Conventions, observations, with_average, with_sizes
from analysis.hypothesis_tests import run_tests
from analysis.replicates import REPLICATE, per_seed, replicate_tests
from analysis.uncertainty import BOOTSTRAP_MIN_PAIRS, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED

ROUNDED = dict.fromkeys(("statistic", "p_value", "ci_low", "ci_high", "mde"), "{:.3g}")


@dataclass
class Section:
    """One part of the report: a heading, sentences, a table and a figure (each optional)."""

    title: str
    text: list[str] = field(default_factory=list)
    table: pd.DataFrame | None = None
    figure: Path | None = None
    latex: str | None = None
    """File name (no suffix) of the table's LaTeX version under tables/."""


def _rounded(table: pd.DataFrame) -> pd.DataFrame:
    """For reading: p-values and statistics to 3 significant digits, other numbers to 1
    decimal; missing values blank."""
    shown = table.copy()
    for column in shown.columns:
        if column == "n":  # a count (a float only where some row has none)
            shown[column] = shown[column].map(
                lambda v: "" if pd.isna(v) else int(v) if isinstance(v, float) else v
            )
            continue
        if not pd.api.types.is_numeric_dtype(shown[column]):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else v)
            continue
        spec = _spec(column)
        shown[column] = shown[column].map(lambda v, s=spec: "" if pd.isna(v) else s.format(v))
    return shown


def _spec(column: str) -> str:
    """3 significant digits for statistics, p-values, intervals and MDEs of any test, and
    parameter counts; 1 decimal for points of accuracy."""
    significant = column.startswith(("p ", "F ", "MDE (partial")) or column.endswith("params_b")
    return "{:.3g}" if column in ROUNDED or significant else "{:.1f}"


def headline(tests: pd.DataFrame, task: str) -> str:
    """The main result in one sentence: the t-test over all methods on `task`."""
    row = tests[(tests["test"] == "ttest_improvement") & (tests["group"] == "all")
                & (tests["task"] == task)]  # fmt: skip
    if row.empty:
        return "no KD runs with an SFT baseline of the same student: no t-test of improvement"
    t, p, n, low, high, mde = row[["statistic", "p_value", "n", "ci_low", "ci_high", "mde"]].iloc[0]
    if pd.isna(t):
        why = "too few for a t-test" if n < 2 else "all equal, so no t-test"
        return f"KD improvement over SFT on {task}: {int(n)} observation(s), {why}"
    verdict = "significant" if p < 0.05 else "not significant"
    # The interval is the mean's t-interval, symmetric about the mean.
    return (
        f"KD improvement over SFT > 0 on {task}: t = {t:.2f}, p = {p:.3g}, n = {int(n)} "
        f"({verdict} at 0.05); mean {(low + high) / 2:+.1f} points, 95% CI {low:.1f} to "
        f"{high:.1f}, MDE {mde:.1f}"
    )


def build_sections(
    frame: pd.DataFrame, tests: pd.DataFrame, obs: pd.DataFrame, conventions: Conventions,
    source: str, figure_dir: Path,
) -> list[Section]:  # fmt: skip
    """The report's sections in order: data, the main tests, the ablations (figures written
    into figure_dir as they are made)."""
    task = conventions.average_task if (obs["task"] == conventions.average_task).any() else None
    task = task or (obs["task"].iloc[0] if not obs.empty else "")
    sections = [_data_section(frame, obs, conventions, source, task)]
    if not obs.empty:
        sections += _test_sections(tests, obs, task, figure_dir)
    return sections + _ablation_sections(frame, conventions, task, figure_dir)


def has_replicates(frame: pd.DataFrame) -> bool:
    """True when some setting ran with more than one seed."""
    if "seed" not in frame or frame["seed"].isna().all():
        return False
    seeds = per_seed(frame)
    return bool((seeds.groupby(REPLICATE, sort=False)["seed"].nunique() > 1).any())


def _replicates_section(paired: pd.DataFrame) -> Section:
    """The per-seed tests: paired t against SFT (Holm) with its CI and MDE, Wilcoxon, and the
    method x seed ANOVA with its MDE."""
    title = "Seeds as paired replicates (paired tests against SFT)"
    if paired.empty:
        return Section(title, ["One seed per setting: the tests have no replicates (run the "
                               "study with --seeds 0,1,2 for paired tests)."])  # fmt: skip

    def of(test: str, column: str) -> pd.Series:
        rows = paired[paired["test"] == test]
        return rows.set_index(["domain", "group"])[column]

    settings = pd.DataFrame({
        "n": of("paired_t_vs_sft", "n"),
        "mean Δ accuracy": of("paired_t_vs_sft", "statistic"),
        "95% CI low": of("paired_t_vs_sft", "ci_low"),
        "95% CI high": of("paired_t_vs_sft", "ci_high"),
        "p (paired t)": of("paired_t_vs_sft_uncorrected", "p_value"),
        "p Holm": of("paired_t_vs_sft", "p_value"),
        "p Wilcoxon": of("wilcoxon_vs_sft", "p_value"),
        "MDE (points)": of("paired_t_vs_sft", "mde"),
    })  # fmt: skip
    students = pd.DataFrame({
        "n": of("anova_method_seed", "n"),
        "F (method x seed ANOVA)": of("anova_method_seed", "statistic"),
        "p (ANOVA)": of("anova_method_seed", "p_value"),
        "MDE (partial η²)": of("anova_method_seed", "mde"),
    })  # fmt: skip
    shown = pd.concat([settings, students]).reset_index()
    if shown["domain"].nunique() <= 1:
        shown = shown.drop(columns=["domain"])
    text = [
        "Per setting: the paired difference to the same student's SFT at the same seed "
        "(accuracy averaged over tasks) with its 95% t-interval, a paired t-test "
        "(Holm-corrected over the settings), a Wilcoxon signed-rank test and the minimal "
        "detectable effect of the paired t-test in points (power 0.8, α 0.05, two-sided). Per "
        "student: a two-way ANOVA of accuracy on setting and seed (additive), its MDE as the "
        "partial η² of the setting."
    ]
    return Section(title, text, shown.rename(columns={"group": "setting or student"}))


def _data_section(
    frame: pd.DataFrame, obs: pd.DataFrame, conventions: Conventions, source: str, task: str
) -> Section:
    """Where the rows come from, what they hold and the conventions applied."""
    students = frame[frame["role"].fillna("student") != "teacher"]
    return Section(
        "Data and conventions",
        [
            f"Source: {source}.",
            f"{len(frame[frame['task'] != task])} rows; {obs['student'].nunique()} "
            "distilled students, methods "
            f"{', '.join(sorted(students['method'].unique()))}, domains "
            f"{', '.join(sorted(frame['domain'].fillna('').astype(str).unique()))}; "
            f"{len(obs)} observations in the main tests.",
            *conventions.describe(),
        ],  # fmt: skip
    )


def _test_sections(
    tests: pd.DataFrame, obs: pd.DataFrame, task: str, figure_dir: Path
) -> list[Section]:
    """The t-test of KD over SFT, the methods' ANOVA family and the Spearman correlations."""
    spearman = _pick(tests, *[t for t in tests["test"].unique() if t.startswith("spearman_")])
    sections = [
        Section(
            "Does KD improve over SFT? (one-sided one-sample t-test)",
            [
                headline(tests, task) + ".",
                "ci_low, ci_high: the mean improvement's two-sided 95% t-interval; mde: the "
                "smallest mean improvement (points) the one-sided test finds at α 0.05 with "
                "power 0.8 at its n and spread.",
            ],
            _pick(tests, "ttest_improvement"),
            figures.improvement_by_method(obs, task, figure_dir / "improvement_by_method.png"),
            "ttest_improvement",
        ),
        Section(
            "Do the KD methods differ? (one-way ANOVA; Kruskal-Wallis, η², Tukey HSD)",
            [
                "Statistic: F for ANOVA, H for Kruskal-Wallis, η² (no p-value), and the mean "
                "difference (first minus second) for Tukey HSD, with Tukey's simultaneous 95% "
                "interval in ci_low, ci_high.",
                "mde of the ANOVA: the smallest η² it finds at α 0.05 with power 0.8 at its n "
                "and number of methods (compare eta_squared_methods); the rank test and Tukey's "
                "pairs have none.",
            ],  # fmt: skip
            _pick(tests, "anova_methods", "kruskal_methods", "eta_squared_methods", "tukey_hsd"),
            latex="anova_methods",
        ),
        Section(
            "What does improvement go with? (Spearman correlations)",
            [
                "Statistic: Spearman's ρ of improvement with each variable; n pairs. Variables "
                "that do not vary in these runs (ρ undefined) are left out here; tests.csv "
                "keeps them with n.",
                f"ci_low, ci_high: percentile bootstrap 95% interval of ρ ({BOOTSTRAP_RESAMPLES} "
                f"paired resamples, seed {BOOTSTRAP_SEED}; resamples where ρ is undefined are "
                f"left out; none under {BOOTSTRAP_MIN_PAIRS} pairs); mde: the smallest |ρ| a "
                "two-sided test finds at α 0.05 with power 0.8 at its n (Fisher z, variance "
                "1.06 / (n − 3); none under 4 pairs).",
            ],  # fmt: skip
            spearman.dropna(subset=["statistic"]),
            latex="spearman",
        ),
    ]
    for variable, label in (("student_size", "student size (B parameters)"),
                            ("teacher_accuracy", "teacher accuracy")):  # fmt: skip
        rho = spearman[(spearman["test"] == f"spearman_{variable}")
                       & (spearman["group"] == "all") & (spearman["task"] == task)]  # fmt: skip
        if obs[obs["task"] == task][variable].nunique() > 1:
            row = rho.iloc[0] if len(rho) else pd.Series(float("nan"), index=rho.columns)
            figure = figures.improvement_vs(
                obs, variable, label, task, figure_dir / f"improvement_vs_{variable}.png",
                row["statistic"], (row["ci_low"], row["ci_high"]),
            )  # fmt: skip
            sections.append(Section(f"Improvement vs {label}", figure=figure))
    return sections


def _pick(tests: pd.DataFrame, *names: str) -> pd.DataFrame:
    """The rows of the named tests, in the report's order."""
    chosen = tests[tests["test"].isin(names)]
    return chosen.sort_values(["domain", "task", "test", "group"])


def _ablation_sections(
    frame: pd.DataFrame, conventions: Conventions, task: str, figure_dir: Path
) -> list[Section]:
    """Temperature and noise, teacher kinds, agreement and fidelity, best settings."""
    sections: list[Section] = []
    on_task = frame[frame["task"] == task] if task else frame
    for factor, title in (("temperature", "Accuracy vs temperature T"),
                          ("noise_sigma", "Accuracy vs teacher-logit noise σ")):  # fmt: skip
        table = ablations.accuracy_vs(frame, factor, conventions)
        if not table.empty:
            figure = figures.accuracy_vs_factor(
                on_task, factor, figure_dir / f"accuracy_vs_{factor}.png"
            )
            sections.append(
                Section(f"{title} ({task})", [], table, figure, f"accuracy_vs_{factor}")
            )
    sections += _table_only(
        f"Task-aware vs task-unaware teacher: improvement over SFT ({task})",
        ablations.teacher_kinds(frame, conventions),
        "teacher_kinds",
    )
    paradox = ablations.agreement_fidelity(frame, conventions)
    if not paradox.empty:
        sections.append(
            Section(
                f"Agreement and fidelity: SFT vs KD ({task})",
                ["KD: the mean over the main tests' KD runs of each student."],
                paradox,
                figures.agreement_fidelity_bars(paradox, figure_dir / "agreement_fidelity.png"),
                "agreement_fidelity",
            )
        )
    sections += _table_only(
        f"Best KD settings per student size ({task}, every setting tried)",
        ablations.best_settings(frame, conventions),
        "best_settings",
    )
    return sections


def _table_only(title: str, table: pd.DataFrame, latex: str) -> list[Section]:
    """A section of just a table and its LaTeX name; none when the table is empty."""
    return [] if table.empty else [Section(title, [], table, latex=latex)]


@dataclass(frozen=True)
class ReportFiles:
    tests: Path
    markdown: Path
    html: Path
    headline: str
    """The main t-test in one sentence, for the console."""


def write_report(
    frame: pd.DataFrame, out_dir: Path, conventions: Conventions | None = None,
    source: str = "results",
) -> ReportFiles:  # fmt: skip
    """Compute the tests and write everything into `out_dir`."""
    conventions = conventions or Conventions()
    out_dir.mkdir(parents=True, exist_ok=True)
    obs = observations(frame, conventions)
    paired = replicate_tests(frame) if has_replicates(frame) else pd.DataFrame()
    tests = pd.concat([run_tests(obs), paired], ignore_index=True)
    tidy = with_average(with_sizes(frame), conventions.average_task)
    sections = build_sections(tidy, tests, obs, conventions, source, out_dir / "figures")
    sections.insert(1, _replicates_section(paired))
    task = conventions.average_task if (obs["task"] == conventions.average_task).any() else None
    task = task or (str(obs["task"].iloc[0]) if len(obs) else "")
    files = ReportFiles(out_dir / "tests.csv", out_dir / "report.md", out_dir / "report.html",
                        headline(tests, task))  # fmt: skip
    tests.to_csv(files.tests, index=False)
    obs.to_csv(out_dir / "observations.csv", index=False)
    (out_dir / "tables").mkdir(exist_ok=True)
    for section in sections:
        if section.table is not None and section.latex:
            _rounded(section.table).to_latex(
                out_dir / "tables" / f"{section.latex}.tex", index=False, escape=True
            )
    files.markdown.write_text(_markdown(sections, out_dir))
    files.html.write_text(_html(sections))
    return files


def _markdown(sections: list[Section], out_dir: Path) -> str:
    lines = ["# Knowledge distillation study report", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        lines += [f"- {t}" if len(section.text) > 1 else t for t in section.text]
        lines += [""] if section.text else []
        if section.table is not None:
            lines += [_rounded(section.table).to_markdown(index=False), ""]
        if section.figure is not None:
            lines += [f"![{section.title}]({section.figure.relative_to(out_dir)})", ""]
    return "\n".join(lines)


def _html(sections: list[Section]) -> str:
    body = ["<h1>Knowledge distillation study report</h1>"]
    for section in sections:
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        body += [f"<p>{html.escape(t)}</p>" for t in section.text]
        if section.table is not None:
            body.append(_rounded(section.table).to_html(index=False, border=0))
        if section.figure is not None:
            data = base64.b64encode(section.figure.read_bytes()).decode()
            body.append(f'<img alt="{html.escape(section.title)}" '
                        f'src="data:image/png;base64,{data}">')  # fmt: skip
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
             "table{border-collapse:collapse;font-size:90%}td,th{padding:2px 8px;"
             "border-bottom:1px solid #ddd;text-align:right}img{max-width:100%}")  # fmt: skip
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>KD study report</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")  # fmt: skip
