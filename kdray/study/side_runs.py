"""The MLflow runs of a study's shared preparation (pretrained bases, teachers): beside the
trials, linked to the study's parent run by tag, with their recipe as params."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlflow.tracking import MlflowClient

from kdray.study.config import StudyConfig
from kdray.tracking.runs import ROLE_TAG, RunLogger, run_tags


@dataclass(frozen=True)
class TeacherRuns:
    """Where a preparation's own MLflow run goes when it is built now (not reused)."""

    client: MlflowClient
    experiment_id: str
    tracking_uri: str
    parent_id: str

    def open(self, config: StudyConfig, role: str, run_name: str, params: dict[str, Any]) -> str:
        """A new run of `role` (`pretrain`, `teacher`) with `params`; returns its id."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=run_name,
            tags={
                **run_tags(config.preset, config.domain, config.name),
                ROLE_TAG: role,
                "kdray.study_parent": self.parent_id,
            },
        )
        RunLogger(self.tracking_uri, run.info.run_id).log_params(params)
        return run.info.run_id
