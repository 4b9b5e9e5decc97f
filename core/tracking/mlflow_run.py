"""A run in MLflow: its plan as parameters, each epoch's metrics as they come, the final
metrics, the model folder (card included) with the bundle's README as artifacts, and tags that
find it again (case, backbone, data sha256, owner).

The client speaks to the tracking server through MLflow's own HTTP settings, which by default
retry for minutes; while a run is mirrored they are bounded here (unless set already), so that a
dead or hanging server costs seconds before the mirror gives up.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from core.artifacts.bundle import readme
from core.tracking.mirror import EPOCH_METRICS, Mirror, Outcome, TrackedRun
from core.training.events import DataReady, EpochEnd, Event, Tracked

EXPERIMENT = "transfer-lab"  # unless MLFLOW_EXPERIMENT_NAME names another
HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",  # seconds per request
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}


class MlflowMirror(Mirror):
    title = "MLflow"

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.run_id = ""

    def environment(self) -> dict[str, str]:
        return HTTP_BOUNDS

    def start(self, run: TrackedRun) -> Tracked:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.client = MlflowClient(tracking_uri=self.uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
        found = self.client.get_experiment_by_name(name)
        experiment = found.experiment_id if found else self.client.create_experiment(name)
        plan = run.plan()
        tags = {
            "case": str(plan.get("case", "")),
            "backbone": str(plan.get("backbone", "")),
            "owner": run.owner,
            "mlflow.user": run.owner,
        }
        self.run_id = self.client.create_run(experiment, run_name=run.name, tags=tags).info.run_id
        params = [Param(key, _text(value)) for key, value in plan.items()]
        self.client.log_batch(self.run_id, params=params)
        return Tracked(tracker="mlflow", run_id=self.run_id, url=self._page(experiment))

    def observe(self, event: Event) -> None:
        from mlflow.entities import Metric

        if isinstance(event, EpochEnd):
            stamp = int(event.time * 1000)
            metrics = [Metric(key, float(getattr(event, key)), stamp, event.epoch) for key in EPOCH_METRICS]
            self.client.log_batch(self.run_id, metrics=metrics)
        elif isinstance(event, DataReady):
            self.client.set_tag(self.run_id, "data_sha256", event.sha256)
            self.client.set_tag(self.run_id, "data", event.name)

    def finish(self, run: TrackedRun, outcome: Outcome) -> None:
        if outcome is Outcome.FINISHED:
            self._log_results(run)
        self.client.set_terminated(self.run_id, outcome.value)

    def _log_results(self, run: TrackedRun) -> None:
        from mlflow.entities import Metric

        final = run.metrics()
        stamp, step = int(time.time() * 1000), int(final["epochs_run"])
        self.client.log_batch(
            self.run_id, metrics=[Metric(key, float(value), stamp, step) for key, value in final.items()]
        )
        files = run.files
        # The model folder as the bundle holds it: the exported program, its labels and
        # preprocessing, the model card where the run wrote one, and the README that runs it.
        self.client.log_artifacts(self.run_id, str(files.model_dir), "model")
        self.client.log_text(self.run_id, readme(run.directory), "model/README.md")
        for path in (files.plan_file, files.metrics_file):
            self.client.log_artifact(self.run_id, str(path))

    def _page(self, experiment: str) -> str:
        """The run's page in the MLflow UI, where the tracking URI is a server's."""
        if not self.uri.startswith(("http://", "https://")):
            return ""
        return f"{self.uri.rstrip('/')}/#/experiments/{experiment}/runs/{self.run_id}"


def _text(value: Any) -> str:
    """A plan value as MLflow keeps parameters: text; a path as written; none as ``None``."""
    return str(value) if not isinstance(value, Path) else value.as_posix()
