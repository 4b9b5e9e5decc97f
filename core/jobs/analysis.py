"""Analysing a data set in a job of its own, beside any training, and reading its result.

Heavy imports wait until the job runs: the server imports this package.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from core import access, jobs
from core.access import LOCAL, Viewer
from core.analysis.record import AnalysisRecord, read_analysis
from core.jobs.kinds import ANALYSE
from core.jobs.run import Run
from core.limits import Limits
from core.storage import Damaged, write_json
from core.training.events import Emit


def submit_analysis(
    data: str | Path,
    name: str,
    options: dict[str, Any] | None = None,
    owner: str = access.LOCAL_OWNER,
    limits: Limits | None = None,
) -> str:
    """Start analysing the data set at ``data`` (a validated upload's folder, a sample, a server
    folder) in a job of its own, beside any training; returns the job's id. With ``limits``, it
    is admitted as every job is (``LimitExceeded``)."""
    plan = {"data": str(data), "name": name, **(options or {})}
    return jobs.submit(plan, ANALYSE, dataset_name=name, owner=owner, limits=limits)


def analysis_result(job_id: str, viewer: Viewer = LOCAL) -> AnalysisRecord | Damaged | None:
    """A finished analysis's result (``python -m core analyze --json``'s object), None until there
    is one, ``Damaged`` when it cannot be read; ``RunNotFound`` for an id that names no job
    ``viewer`` may see."""
    return read_analysis(Run.open(job_id, viewer).result_file)


def analyse_data(run_dir: Path, emit: Emit) -> AnalysisRecord:
    """Analyse the data set the job's plan names and write the result to ``result.json``."""
    from core.analysis.analyse import AnalysisPlan, analyse
    from core.data import ingest

    run = Run(Path(run_dir))
    fields = run.plan_fields()
    options = {key: fields[key] for key in ("sample", "seed", "budget_s") if key in fields}
    plan = AnalysisPlan(backbones=tuple(fields.get("backbones") or ()), **options)
    dataset = ingest(Path(fields["data"]), name=fields.get("name"), seed=plan.seed)
    result = replace(analyse(dataset, plan, emit).to_record(), data=str(dataset.root))
    write_json(run.result_file, result.to_dict())
    return result
