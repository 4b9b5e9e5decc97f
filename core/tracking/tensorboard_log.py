"""A run as TensorBoard event files: each epoch's metrics as scalars while it trains, the final
metrics at the end, and the plan as text, in ``DIR/<run id>`` so that one ``tensorboard
--logdir DIR`` compares every run written there."""

from __future__ import annotations

import json
from pathlib import Path

from core.tracking.mirror import EPOCH_METRICS, Mirror, Outcome, TrackedRun
from core.training.events import EpochEnd, Event, Tracked


class TensorBoardMirror(Mirror):
    title = "TensorBoard"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def start(self, run: TrackedRun) -> Tracked:
        from torch.utils.tensorboard import SummaryWriter

        folder = (self.root / run.name).resolve()
        self.writer = SummaryWriter(log_dir=str(folder))
        self.writer.add_text("plan", f"```json\n{json.dumps(run.plan(), indent=2)}\n```")
        return Tracked(tracker="tensorboard", run_id=run.name, url=str(folder))

    def observe(self, event: Event) -> None:
        if isinstance(event, EpochEnd):
            for key in EPOCH_METRICS:
                self.writer.add_scalar(key, getattr(event, key), event.epoch, walltime=event.time)
            self.writer.flush()  # a live tensorboard shows the epoch now, not in two minutes

    def finish(self, run: TrackedRun, outcome: Outcome) -> None:
        if outcome is Outcome.FINISHED:
            final = run.metrics()
            for key, value in final.items():
                self.writer.add_scalar(key, value, final["epochs_run"])
        self.writer.close()
