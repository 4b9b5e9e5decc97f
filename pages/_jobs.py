"""What the pages show of a job they follow: its progress card, with the rate, the time left and
a Cancel button; shared by the upload's validation and the data set's analysis."""

from __future__ import annotations

import time

import streamlit as st

from core import jobs
from core.jobs.run import Run
from core.training.events import read_events
from core.training.progress import RunProgress, duration
from pages._access import viewer


def progress_card(job_id: str, *, key: str, phases: dict[str, str], waiting: str) -> None:
    """The job's current phase as a bar (``phases`` names the phases people see; any other
    shows ``waiting``), and a Cancel button that stops the job."""
    progress = RunProgress.of(read_events(Run.open(job_id, viewer()).directory))
    step, label = progress.current, phases.get(progress.phase)
    with st.container(border=True, key=key):
        if step is None or label is None or step.phase != progress.phase:
            st.caption(f"{label or waiting}...")
        else:
            left = duration(progress.eta_s(time.time()))
            st.progress(
                step.done / max(step.total, 1),
                text=f"{label}: {step.done:,} of {step.total:,} · {step.images_per_s:,.0f} images/s · {left} left",
            )
        if st.button("Cancel", key=f"{key}.cancel", icon=":material/stop:"):
            jobs.cancel(job_id, viewer())
            st.rerun()
