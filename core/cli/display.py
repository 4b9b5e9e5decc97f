"""A run's events drawn on a terminal: what ``python -m core train`` shows while it works.

On a terminal, the phase under way is a tqdm bar (done / total, rate, time left): decoding
images, computing features, each epoch's steps. Everywhere, each epoch and each warning is one
plain line, so logs and pipes get readable text without carriage returns. tqdm draws the bars
because it already handles terminal widths, rates and ETAs better than hand-drawn ones.
"""

from __future__ import annotations

from typing import TextIO

from tqdm import tqdm

from core import inert
from core.training.events import (
    BatchEnd,
    EpochEnd,
    Event,
    PhaseStarted,
    Progress,
    RuntimeChosen,
    RunWarning,
    Tracked,
)

PHASE_LABELS = {"decoding": "decoding images", "features": "computing features"}
PHASE_LINES = {
    "tuning": "fitting the new layer: its weight decay by cross-validation, then L-BFGS",
    "exporting": "exporting the model",
    "scoring": "scoring backbones and stages: LogME and k-NN on the pooled features",
}


class RunDisplay:
    """An event subscriber that draws bars on a terminal and lines everywhere."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self._bar: tqdm | None = None
        self._bar_for: object = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, Progress):
            label = PHASE_LABELS.get(event.phase, event.phase)
            self._advance(event.phase, label, event.done, event.total, "img")
            if event.done == event.total:  # the phase is complete: a line that stays
                self._close()
                seconds = event.total / max(event.images_per_s, 1e-9)
                self._line(
                    f"{label}: {event.total:,} images in {seconds:.1f} s ({event.images_per_s:,.0f}/s)"
                )
        elif isinstance(event, BatchEnd):
            loss = {"loss": f"{event.loss:.3f}"}
            self._advance(
                ("epoch", event.epoch), f"epoch {event.epoch}", event.step, event.steps, "step", loss
            )
        elif isinstance(event, EpochEnd):
            self._close()
            self._line(
                f"epoch {event.epoch}/{event.epochs}: train loss {event.train_loss:.3f} "
                f"acc {event.train_accuracy:.1%} | val loss {event.val_loss:.3f} acc {event.val_accuracy:.1%} "
                + (f"| lr {event.lr:.2g} " if event.lr else "")  # cases 1, 2: L-BFGS picks its steps
                + f"| {event.seconds:.1f} s"
            )
        elif isinstance(event, RunWarning):
            self._line(f"warning: {event.message}")
        elif isinstance(event, RuntimeChosen):
            self._line(f"the {event.phase} pass ran on {event.summary()}")
        elif isinstance(event, Tracked):
            self._line(f"mirrored to {event.tracker}: {event.url or event.run_id}")
        elif isinstance(event, PhaseStarted) and event.phase in PHASE_LINES:
            self._close()
            self._line(PHASE_LINES[event.phase])

    def close(self) -> None:
        self._close()

    def _advance(
        self, key: object, label: str, done: int, total: int, unit: str, postfix: dict | None = None
    ) -> None:
        if not self.live:
            return
        if self._bar_for != key:
            self._close()
            self._bar = tqdm(
                total=total,
                desc=label,
                unit=unit,
                file=self.stream,
                leave=False,
                dynamic_ncols=True,
                mininterval=0,  # the events come at most four a second already: draw each one
            )
            self._bar_for = key
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(done - self._bar.n)

    def _line(self, text: str) -> None:
        """A line above the bar, which tqdm then redraws below it."""
        tqdm.write(inert.terminal(text), file=self.stream)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar, self._bar_for = None, None
