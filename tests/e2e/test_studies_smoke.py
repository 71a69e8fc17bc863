"""Every study script in --smoke mode, end to end (the temperature and optimal studies run in
the default suite; these run with `python -m pytest -m slow tests/e2e/test_studies_smoke.py`)."""

import pytest
from mlflow.tracking import MlflowClient

from analysis.loader import load_mlflow_results
from conftest import run_study_script

# study -> (extra flags, trials it must run, what distinguishes its runs)
STUDIES = {
    "noise": ((), 2 * (1 + 2), "noise_sigma"),  # 2 students x (sft + kd at sigma 0, 5)
    "methods": ((), 1 + 6, "method"),  # one student x (sft + 6 KD methods)
    "student_size": ((), 2 * 2, "student"),  # sft + kd for xs and s
    "teacher_domain": ((), 2 * (1 + 2), "teacher_kind"),  # sft + kd per teacher kind
    "paper": (("--preset", "tiny"), 2 * (1 + 2), "method"),  # sft + kd, seqkd
}


@pytest.mark.slow
@pytest.mark.parametrize("study", sorted(STUDIES))
def test_study_smoke(study, tmp_path, shared_cache):
    flags, trials, varied = STUDIES[study]
    result = run_study_script(
        "--smoke", *flags, "--cache-dir", str(shared_cache), cwd=tmp_path, script=study
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    print(result.stdout[-2500:])
    assert f"{trials} trials finished, 0 failed" in result.stdout
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(f"kdray-{study}-smoke")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`kdray.role` = 'study'")
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials"] == trials
    frame = load_mlflow_results(uri, parent.info.run_id)
    students = frame[frame["role"] == "student"]
    assert students["run_id"].nunique() == trials
    assert students[varied].nunique() >= 2  # the study's factor really varies
