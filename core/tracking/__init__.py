"""The team's trackers: a run mirrored to MLflow and TensorBoard as it happens, from its events.

Training emits events and knows nothing of trackers; whoever starts a run (the worker, the CLI,
rank 0 of a multi-process run) wraps its ``emit`` in ``mirrored``, which passes every event on
and copies what a tracker keeps. A tracker that is missing, down, slow or refusing costs one
warning event and a few seconds, never the run.
"""

from core.tracking.mirror import MLFLOW_URI_ENV, Mirror, Outcome, TrackedRun, Tracking, mirrored

__all__ = ["MLFLOW_URI_ENV", "Mirror", "Outcome", "TrackedRun", "Tracking", "mirrored"]
