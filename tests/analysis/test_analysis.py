"""The results table and figure from a tidy frame (no MLflow needed)."""

import math

import pandas as pd
import pytest

from analysis.figures import accuracy_vs_factor, study_figure
from analysis.loader import read_results_csv
from analysis.tables import largest_gap_student, results_table, to_markdown
from kdray.errors import KdrayError


def tidy(rows):
    base = {
        "study": "t", "teacher": "big", "teacher_params_b": 1e-3, "noise_sigma": 0.0,
        "teacher_kind": "task-aware", "domain": "math", "task": "math", "agreement": 50.0,
        "fidelity": 20.0, "role": "student",
    }  # fmt: skip
    return pd.DataFrame([{**base, **row} for row in rows])


def row(student, size, method, temperature, accuracy, role="student"):
    return {
        "student": student, "student_params_b": size, "method": method,
        "temperature": temperature, "accuracy": accuracy, "role": role,
    }  # fmt: skip


ROWS = [
    row("a", 1e-5, "sft", None, 10),
    row("a", 1e-5, "kd", 1.0, 14),
    row("a", 1e-5, "kd", 2.0, 16),
    row("a", 1e-5, "kd", 2.0, 18),
    row("b", 1e-4, "sft", None, 40),
    row("b", 1e-4, "revkd", 1.0, 35),
    row("big", 1e-3, "sft", None, 90, role="teacher"),
]


def test_improvement_is_relative_to_the_same_students_sft_and_seeds_are_averaged():
    table = results_table(tidy(ROWS))
    assert list(table["student"]) == ["b", "b", "a", "a", "a"]  # larger student first
    row = table[(table["student"] == "a") & (table["temperature"] == 2.0)].iloc[0]
    assert row["accuracy"] == 17 and row["improvement"] == 7 and row["runs"] == 2
    assert table[table["method"] == "revkd"].iloc[0]["improvement"] == -5
    assert table[(table["student"] == "a") & (table["method"] == "sft")].iloc[0]["improvement"] == 0
    assert "big" not in set(table["student"])  # the teacher's own row is not a student row


def test_largest_gap_student_compares_sft_with_the_teacher():
    assert largest_gap_student(tidy(ROWS)) == "a"


def test_markdown_and_figure(tmp_path):
    frame = tidy(ROWS)
    markdown = to_markdown(results_table(frame))
    assert markdown.splitlines()[0].startswith("| student")
    path = accuracy_vs_factor(frame, "temperature", tmp_path / "fig.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_paired_deltas_pair_each_kd_run_with_the_sft_run_of_its_seed():
    from analysis.figures import paired_deltas

    def row(method, temperature, seed, accuracy):
        return {"method": method, "temperature": temperature, "seed": seed,
                "accuracy": accuracy, "task": "t"}  # fmt: skip

    rows = pd.DataFrame([row("sft", None, 0, 50.0), row("sft", None, 1, 90.0),
                         row("kd", 1.0, 0, 47.0), row("kd", 1.0, 1, 88.0),
                         row("kd", 2.0, 1, 95.0), row("kd", 2.0, 2, 10.0)])  # fmt: skip
    deltas = paired_deltas(rows, "temperature")
    assert deltas.to_dict() == {("kd", 1.0, "0"): -3.0, ("kd", 1.0, "1"): -2.0,
                                ("kd", 2.0, "1"): 5.0}  # seed 2 has no SFT run  # fmt: skip


def test_csv_input_needs_the_required_columns(tmp_path):
    good = tmp_path / "good.csv"
    tidy(ROWS).drop(columns=["agreement", "fidelity"]).to_csv(good, index=False)
    frame = read_results_csv(good)
    assert math.isnan(frame["agreement"].iloc[0])
    bad = tmp_path / "bad.csv"
    tidy(ROWS).drop(columns=["accuracy"]).to_csv(bad, index=False)
    with pytest.raises(KdrayError, match="lacks required columns accuracy"):
        read_results_csv(bad)


def test_the_figure_follows_what_the_study_varies(tmp_path):
    assert study_figure(tidy(ROWS), tmp_path).name == "accuracy_vs_temperature.png"
    noise = tidy(
        [{**r, "temperature": 1.0, "noise_sigma": i % 2 * 5.0} for i, r in enumerate(ROWS)]
    )
    assert study_figure(noise, tmp_path).name == "accuracy_vs_noise_sigma.png"
    flat = tidy([{**r, "temperature": 1.0} for r in ROWS])
    path = study_figure(flat, tmp_path)
    assert path.name == "accuracy_by_method.png" and path.stat().st_size > 5_000


def test_teacher_kinds_are_kept_apart_in_the_table():
    rows = [
        row("a", 1e-5, "sft", None, 10),
        {**row("a", 1e-5, "kd", 1.0, 30), "teacher_kind": "task-aware"},
        {**row("a", 1e-5, "kd", 1.0, 20), "teacher_kind": "task-unaware"},
    ]
    table = results_table(tidy(rows))
    kd = table[table["method"] == "kd"].set_index("teacher_kind")
    assert kd.loc["task-aware", "improvement"] == 20 and kd.loc["task-unaware", "improvement"] == 10
    assert "teacher_kind" in to_markdown(table).splitlines()[0]
    assert "teacher_kind" not in to_markdown(results_table(tidy(ROWS))).splitlines()[0]


def test_bars_per_method_have_an_interval_and_a_dot_per_seed(tmp_path, monkeypatch):
    from analysis import figures

    drawn = {}
    monkeypatch.setattr(figures.plt.Axes, "bar", lambda self, x, heights, **kw: drawn.update(
        heights=list(heights), yerr=list(kw["yerr"])))  # fmt: skip
    seeded = [{**r, "temperature": 1.0, "seed": s, "accuracy": r["accuracy"] + 2 * s}
              for r in ROWS if r["student"] == "a" for s in (0, 1, 2)]  # fmt: skip
    figures.accuracy_by_method(tidy(seeded), tmp_path / "bars.png")
    # sft: 10, 12, 14; kd (T=1 and T=2 runs averaged per seed): 16, 18, 20
    assert drawn["heights"] == [pytest.approx(12.0), pytest.approx(18.0)]
    assert drawn["yerr"] == [pytest.approx(4.302653 * 2 / math.sqrt(3), rel=1e-6)] * 2


def test_the_browse_hint_links_the_runs_view_of_the_study_experiment(tmp_path):
    from mlflow.tracking import MlflowClient

    from analysis.report import browse_hint

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("hint", artifact_location=str(tmp_path / "art"))
    run = client.create_run(experiment)
    hint = browse_hint(uri, run.info.run_id)
    page = f"http://127.0.0.1:5000/#/experiments/{experiment}/runs?workflowType=machine_learning"
    assert f"--backend-store-uri {uri} --host 127.0.0.1" in hint and page in hint
