"""``MODEL_CARD.md``: the exported model described for people, and for the Hugging Face Hub.

``core.artifacts.card.ModelCard`` is what Predict needs to run a model (classes, input); this is
what a person needs to trust one: what it is for and is not, the data, why this plan, how well
it did and where it fails, what produced it and how to run it. Every figure is read from the
run's ``metrics.json`` (the one record of them), never computed again, so card and Results agree.

The card opens with YAML front matter in the Hub's model card metadata shape (``license``,
``tags``, ``datasets``, ``metrics``, ``model-index`` results), so that the bundle's README, which
is this card, can be pushed to the Hub as it is. The front matter is written as JSON values in
YAML's block layout: valid YAML without a YAML library.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.advice.cases import CASES
from core.artifacts.bundle import PREPARATION, SNIPPET
from core.artifacts.card import MODEL_CARD_FILE
from core.storage import write_text_atomic

WORST_CONFUSIONS = 3
INT8_HEADING = "## The int8 copy"
PROVENANCE_HEADING = "## Provenance"
UNSHOWN = ("schema", "data", "exclude")  # plan fields the card shows elsewhere, or not at all


def write_model_card(
    model_dir: Path, metrics: Mapping[str, Any], data: Mapping[str, Any], provenance: Mapping[str, Any]
) -> Path:
    """Write ``model_dir/MODEL_CARD.md`` from the run's ``metrics``, its data set's report
    (``DatasetReport.to_dict()``) and its ``provenance`` (the run record's); return its path."""
    path = Path(model_dir) / MODEL_CARD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, model_card(metrics, data, provenance))
    return path


def note_int8(model_dir: Path, check: Mapping[str, Any]) -> Path | None:
    """Put the int8 copy's figures (``core.artifacts.quantize.Int8Check.to_dict()``) into the
    card in ``model_dir``, in place of any earlier int8 section; ``None`` for a model exported
    before cards existed. The card is written at the end of a run, the int8 copy only later, when
    someone asks for it."""
    path = Path(model_dir) / MODEL_CARD_FILE
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    start = text.find(INT8_HEADING)
    if start >= 0:
        end = text.find("\n## ", start + len(INT8_HEADING))
        text = text[:start] + (text[end + 1 :] if end >= 0 else "")
    at = text.find(PROVENANCE_HEADING)
    at = len(text) if at < 0 else at
    write_text_atomic(path, text[:at] + _int8(check) + "\n" + text[at:])
    return path


def model_card(metrics: Mapping[str, Any], data: Mapping[str, Any], provenance: Mapping[str, Any]) -> str:
    """The card's text: front matter, then the sections."""
    plan = metrics["plan"]
    sections = (
        _purpose(plan, metrics),
        _data(plan, data),
        _advice(plan, metrics),
        _evaluation(metrics),
        _weaknesses(metrics),
        _provenance(plan, provenance),
        _usage(),
    )
    return "---\n" + _yaml(front_matter(metrics, data)) + "---\n\n" + "\n".join(sections)


def front_matter(metrics: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """The Hub's metadata block: what the model is, and its results as ``model-index`` entries."""
    plan = metrics["plan"]
    dataset = data.get("source", {}).get("name") or Path(str(plan.get("data", "data"))).name
    results = [_result(dataset, "validation", "Validation accuracy", metrics["best_val_accuracy"])]
    if "test" in metrics:
        results.append(_result(dataset, "test", "Test accuracy", metrics["test"]["accuracy"]))
    return {
        "license": "other",  # the user's data and the backbone's weights decide: say so before pushing
        "pipeline_tag": "image-classification",
        "tags": ["image-classification", "transfer-learning", "transfer-lab", plan["backbone"]],
        "datasets": [dataset],
        "metrics": ["accuracy"],
        "model-index": [{"name": _name(plan), "results": results}],
    }


def _result(dataset: str, split: str, name: str, value: float) -> dict[str, Any]:
    return {
        "task": {"type": "image-classification", "name": "Image Classification"},
        "dataset": {"name": dataset, "type": "imagefolder", "split": split},
        "metrics": [{"type": "accuracy", "value": value, "name": name}],
    }


def _name(plan: Mapping[str, Any]) -> str:
    return f"transfer-lab-{plan['backbone']}-case-{plan['case']}"


def _purpose(plan: Mapping[str, Any], metrics: Mapping[str, Any]) -> str:
    labels = ", ".join(metrics["labels"])
    return (
        f"# {_name(plan)}\n\n"
        f"An image classifier for {len(metrics['labels'])} classes ({labels}), made by Transfer Lab from "
        f"`{plan['backbone']}` ({plan['weights']} weights) by transfer-learning case {plan['case']}.\n\n"
        "**For:** telling these classes apart in images like the ones it was trained on.\n\n"
        "**Not for:** images of any other class (it always answers one of its own), images unlike the "
        "training data (other cameras, lighting, subjects), or decisions about people without human review.\n"
    )


def _data(plan: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    counts = data.get("counts", {})
    rows = [
        f"| {_cell(label)} | "
        + " | ".join(str(counts.get(split, {}).get(label, 0)) for split in ("train", "val", "test"))
        + " |"
        for label in data.get("classes", [])
    ]
    source = data.get("source", {})
    excluded = plan.get("exclude") or []
    lines = [
        "## Data\n",
        f"`{source.get('name', plan.get('data', '?'))}`, sha256 `{source.get('sha256', 'not recorded')}`.",
        f"Split: {data.get('split', 'not recorded')}.\n",
        "| class | train | val | test |",
        "|---|---|---|---|",
        *rows,
    ]
    if excluded:
        lines.append(
            f"\n{len(excluded)} file(s) left out by the plan: " + ", ".join(f"`{n}`" for n in excluded) + "."
        )
    return "\n".join(lines) + "\n"


def _advice(plan: Mapping[str, Any], metrics: Mapping[str, Any]) -> str:
    case = CASES[int(plan["case"])]
    lines = [
        "## Why this plan\n",
        f"Case {case.number}, {case.name}: {case.when} {case.reasoning}\n",
        "Plan: "
        + ", ".join(
            f"{key} {value}" for key, value in plan.items() if key not in UNSHOWN and value is not None
        )
        + ".",
    ]
    if "head" in metrics:
        scores = ", ".join(f"{wd}: {acc:.1%}" for wd, acc in metrics["head"]["cv_accuracy"].items())
        lines.append(
            f"\nThe new layer's penalty, {metrics['head']['weight_decay']:g}, was chosen by "
            f"{metrics['head']['folds']}-fold cross-validation on the training images ({scores})."
        )
    return "\n".join(lines) + "\n"


def _evaluation(metrics: Mapping[str, Any]) -> str:
    interval = metrics["val_interval"]
    lines = [
        "## Evaluation\n",
        (
            f"Validation accuracy: {metrics['best_val_accuracy']:.2%} on {interval['images']} images "
            f"({interval['level']:.0%} Wilson interval {interval['low']:.2%} to {interval['high']:.2%})."
        ),
        f"Always answering the most common class would score {metrics['majority_rate']:.2%}.",
    ]
    if "test" in metrics:
        lines.append(f"Test accuracy (held-out test/ split): {metrics['test']['accuracy']:.2%}.")
    lines += ["", "| class | precision | recall | f1 | images |", "|---|---|---|---|---|"]
    for label, row in metrics["per_class"].items():
        lines.append(
            f"| {_cell(label)} | {row['precision']:.2%} | {row['recall']:.2%} | {row['f1']:.2%} | {row['support']} |"
        )
    return "\n".join(lines) + "\n"


def _weaknesses(metrics: Mapping[str, Any]) -> str:
    labels, confusion = metrics["labels"], metrics["confusion_matrix"]
    pairs = sorted(
        (
            (count, labels[t], labels[p])
            for t, row in enumerate(confusion)
            for p, count in enumerate(row)
            if t != p
        ),
        reverse=True,
    )
    worst = [
        f"- {true} taken for {predicted}: {count} validation image(s)"
        for count, true, predicted in pairs
        if count
    ]
    body = (
        "\n".join(worst[:WORST_CONFUSIONS])
        or "No validation image was misclassified; the set may be too small to show the weaknesses."
    )
    return f"## Known weaknesses\n\n{body}\n"


def _provenance(plan: Mapping[str, Any], provenance: Mapping[str, Any]) -> str:
    facts = {"seed": plan.get("seed"), **provenance}
    lines = [f"- {key}: {value}" for key, value in facts.items() if value is not None]
    return PROVENANCE_HEADING + "\n\n" + "\n".join(lines) + "\n"


def _int8(check: Mapping[str, Any]) -> str:
    return (
        f"{INT8_HEADING}\n\n"
        f"`model.int8.onnx` ({check['format']}, calibrated on {check['calibration_images']} training images): "
        f"{check['int8_bytes'] / 2**20:.1f} MB against {check['fp32_bytes'] / 2**20:.1f} MB for `model.onnx`.\n\n"
        "| | float32 | int8 |\n|---|---|---|\n"
        f"| validation accuracy ({check['images']} images) | {check['fp32_accuracy']:.1%} | {check['int8_accuracy']:.1%} |\n"
        f"| latency, one image, {check['threads']} threads of {_cell(check['cpu'])} | "
        f"{check['fp32_latency_ms']:.1f} ms | {check['int8_latency_ms']:.1f} ms |\n\n"
        f"The two agree on {check['agreement']:.1%} of the validation images; the export refuses a drop "
        f"past {check['max_drop']:.1%}.\n"
    )


def _usage() -> str:
    return (
        "## How to run it\n\n"
        "`model.pt2` is a `torch.export` program: float32 images `[N, 3, crop, crop]` in, logits out. "
        "`preprocess.json` says how to prepare an image, `labels.json` names the outputs.\n\n"
        "```python\n" + SNIPPET + "```\n\n" + PREPARATION
    )


def _cell(text: str) -> str:
    """A class name as a table cell: a ``|`` in an upload's folder name would split the row."""
    return text.replace("|", "\\|")


def _yaml(value: Any, indent: str = "") -> str:
    """Block-style YAML whose scalars are JSON (which YAML reads as the same values)."""
    if isinstance(value, Mapping):
        lines = []
        for key, item in value.items():
            if isinstance(item, (Mapping, list)) and item:
                lines.append(f"{indent}{key}:\n{_yaml(item, indent + '  ')}")
            else:
                lines.append(f"{indent}{key}: {json.dumps(item)}\n")
        return "".join(lines)
    lines = []
    for item in value:
        if isinstance(item, (Mapping, list)) and item:
            nested = _yaml(item, indent + "  ")
            lines.append(f"{indent}- {nested[len(indent) + 2 :]}")
        else:
            lines.append(f"{indent}- {json.dumps(item)}\n")
    return "".join(lines)
