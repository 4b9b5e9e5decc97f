"""Heatmaps of a finished run's model, drawn in a job: Grad-CAM needs torch and a backward pass
per image (seconds on a small CPU), which the web server never runs.

Results asks for its gallery of confident mistakes and a sample of each class of the validation
split (names of the run's own data set, found by the worker); Predict hands over its uploads,
written into the job's folder. The job explains each image's predicted class, or one class
asked for, writes an overlay PNG per image under ``heatmaps/`` and lists them in
``result.json``, reporting each image as it goes. Torch is imported only where the heatmaps are
drawn: the web server imports this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import jobs, storage
from core.access import LOCAL, Viewer
from core.jobs.kinds import EXPLAIN
from core.jobs.run import Run
from core.limits import Limits
from core.training.events import Emit, phase_progress

if TYPE_CHECKING:
    from core.explain.heatmap import Explainer

EXPLAINING = "explaining"  # the job's one phase, as its progress events name it
HEATMAPS_DIR = "heatmaps"  # the overlay PNGs, in the job's folder
UPLOAD_FILE = "upload-{:04d}"  # Predict's images, in the job's folder until the job has read them
MISTAKE, CLASS_SAMPLE, UPLOAD = "mistake", "class sample", "upload"  # where an image came from


@dataclass(frozen=True)
class _Image:
    """An image the job explains: its name, where it came from and, in a data set, its class."""

    name: str
    source: str
    path: Path
    truth: str = ""


@dataclass(frozen=True)
class Explained:
    """One image's heatmap as ``result.json`` lists it; ``error`` says why there is none."""

    file: str  # the image's name as people see it
    source: str  # MISTAKE, CLASS_SAMPLE or UPLOAD
    label: str = ""  # the class explained
    probability: float = 0.0  # of that class
    predicted: str = ""  # the class the model answers
    truth: str = ""  # the true class, for images of the run's data set
    overlay: str = ""  # the PNG, relative to the job's folder
    error: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Explained:
        """Read a row back, tolerating fields a later version adds."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def submit_explanations(
    model_run: str,
    *,
    mistakes: Sequence[str] = (),
    per_class: int = 0,
    uploads: Sequence[tuple[str, bytes]] = (),
    label: str | None = None,
    viewer: Viewer = LOCAL,
    limits: Limits | None = None,
) -> str:
    """Start drawing heatmaps with the model of ``model_run`` (a finished run ``viewer`` may see:
    ``RunNotFound`` otherwise), in a job of ``viewer``'s admitted as every job is: for the images
    of its data set named in ``mistakes``, ``per_class`` validation images of each class, and
    ``uploads`` (``(name, bytes)``, charged to the quota as one upload). ``label``: the class to
    explain (None: each image's predicted class). Returns the job's id."""
    data_name = Run.open(model_run, viewer).record().dataset_name
    if limits is not None:
        limits.check_upload(sum(len(data) for _, data in uploads))
    plan = {
        "model_run": model_run,
        "mistakes": list(mistakes),
        "per_class": per_class,
        "uploads": [name for name, _ in uploads],
        "label": label,
    }
    files = {UPLOAD_FILE.format(i): data for i, (_, data) in enumerate(uploads)}
    return jobs.submit(plan, EXPLAIN, dataset_name=data_name, owner=viewer.owner, limits=limits, files=files)


def explanations(job_id: str, viewer: Viewer = LOCAL) -> list[tuple[Explained, Path | None]] | None:
    """A finished job's heatmaps, each with its overlay's path (None for an image it could not
    read), else None; ``RunNotFound`` for an id that names no job ``viewer`` may see."""
    run = Run.open(job_id, viewer)
    rows = storage.read_json(run.result_file)
    if not isinstance(rows, list):
        return None
    read = [Explained.from_dict(row) for row in rows]
    return [(row, run.directory / row.overlay if row.overlay else None) for row in read]


def explain_images(run_dir: Path, emit: Emit) -> dict[str, Any]:
    """The job's target: a heatmap per image the plan names, one at a time, each reported; the
    uploads go afterwards, whatever happened."""
    from core.explain.heatmap import Explainer

    run = Run(Path(run_dir))
    plan = run.plan_fields()
    model_run = Run(storage.runs_dir() / plan["model_run"])
    uploads = [run.directory / UPLOAD_FILE.format(i) for i in range(len(plan["uploads"]))]
    try:
        explainer = Explainer.of_run(model_run.directory)
        images = [
            *_from_data_set(model_run.plan_fields(), plan["mistakes"], plan["per_class"]),
            *(_Image(name, UPLOAD, path) for name, path in zip(plan["uploads"], uploads)),
        ]
        progress = phase_progress(emit, EXPLAINING)
        rows = []
        for i, image in enumerate(images):
            rows.append(_explain(explainer, image, plan.get("label"), run.directory, i))
            progress(i + 1, len(images))
    finally:
        for path in uploads:
            path.unlink(missing_ok=True)
    storage.write_json(run.result_file, [asdict(row) for row in rows])
    return {"images": len(rows)}


def _from_data_set(stored: Mapping[str, Any], mistakes: Sequence[str], per_class: int) -> list[_Image]:
    """The named mistakes and ``per_class`` validation images per class, from the model run's own
    data set (its plan ``stored``) split as training split it."""
    from core.data import stored_dataset
    from core.training.plan import Plan

    if not mistakes and not per_class:
        return []
    plan = Plan.from_stored(stored)
    dataset = stored_dataset(plan.data, val_fraction=plan.val_fraction, seed=plan.seed)
    if dataset is None:
        return []
    by_name = {sample.name: sample for sample in dataset.val}
    chosen = [(by_name[name], MISTAKE) for name in mistakes if name in by_name]
    for label in range(len(dataset.classes)):
        of_class = sorted((s for s in dataset.val if s.label == label), key=lambda s: s.name)
        chosen += [(sample, CLASS_SAMPLE) for sample in of_class[:per_class]]
    return [_Image(s.name, source, s.path, dataset.classes[s.label]) for s, source in chosen]


def _explain(explainer: Explainer, image: _Image, label: str | None, folder: Path, index: int) -> Explained:
    from core.artifacts.predict import PredictError

    try:
        [heatmap] = explainer.explain([image.path], label)
    except PredictError as exc:
        return Explained(image.name, image.source, truth=image.truth, error=str(exc))
    overlay = f"{HEATMAPS_DIR}/{index:04d}.png"
    (folder / HEATMAPS_DIR).mkdir(exist_ok=True)
    heatmap.overlay.save(folder / overlay)
    return Explained(
        image.name,
        image.source,
        heatmap.label,
        round(heatmap.probability, 4),
        heatmap.predicted,
        image.truth,
        overlay,
    )
