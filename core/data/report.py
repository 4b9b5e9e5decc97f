"""What a user should know about their data before training on it.

Counts per class and split, what was skipped and why, image sizes, exact duplicates (harmless
within a class, a label conflict across classes, leakage across splits), class imbalance, and
plain-language warnings drawn from those numbers.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from core.data.layout import NESTED_ARCHIVE
from core.data.manifest import Manifest, Record

SPLITS = ("train", "val", "test")
FEW_IMAGES = 10  # per class: below this, one image moves a class's accuracy by 10% or more
FEW_VAL_IMAGES = 20
IMBALANCE_WARNING = 3.0  # largest class / smallest class
SMALL_SIDE = 32  # pixels: smaller images are mostly upscaling blur at a backbone's input size
LISTED = 5  # names shown in one warning; past that, a count (50,000 classes must not be 50,000 lines)


@dataclass
class DatasetReport:
    source: dict[str, str]  # kind ("zip" | "folder"), name, sha256
    layout: str  # "class folders" | "splits"
    wrapper: str  # folders stripped from the front of every path
    split: str  # how train and val were made, in words
    held_out_val: bool  # we held out the validation images (the data brought no val/ folder)
    classes: list[str]
    counts: dict[str, dict[str, int]]  # split -> class -> images
    num_images: int
    skipped: list[dict[str, str]]  # file, reason
    ignored: dict[str, int]  # reason -> files
    image_sizes: dict[str, Any]
    duplicates: dict[str, list[dict[str, Any]]]  # within_class, across_classes, across_splits
    imbalance: dict[str, Any]
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: plain containers, strings and finite numbers only."""
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False)


def build_report(
    manifest: Manifest, splits: dict[str, list[Record]], classes: list[str], how: str, held_out_val: bool
) -> DatasetReport:
    """The report for ``manifest`` once its images are assigned to ``splits`` (``how``, in words;
    ``held_out_val``: by holding out validation images ourselves)."""
    counts = {
        split: {label: 0 for label in classes} | dict(Counter(r.label for r in records))
        for split, records in splits.items()
    }
    split_of = {id(record): split for split, records in splits.items() for record in records}
    records = [record for group in splits.values() for record in group]
    duplicates = _duplicates(records, split_of)
    imbalance = _imbalance(counts)
    sizes = _sizes(records)
    report = DatasetReport(
        source=dict(manifest.source),
        layout=manifest.layout,
        wrapper=manifest.wrapper,
        split=how,
        held_out_val=held_out_val,
        classes=list(classes),
        counts=counts,
        num_images=len(records),
        skipped=[{"file": name, "reason": reason} for name, reason in manifest.skipped],
        ignored=dict(manifest.ignored),
        image_sizes=sizes,
        duplicates=duplicates,
        imbalance=imbalance,
        warnings=[],
    )
    report.warnings = _warnings(report)
    return report


def _duplicates(records: list[Record], split_of: dict[int, str]) -> dict[str, list[dict[str, Any]]]:
    groups: defaultdict[str, list[Record]] = defaultdict(list)
    for record in records:
        groups[record.sha256].append(record)
    found: dict[str, list[dict[str, Any]]] = {"within_class": [], "across_classes": [], "across_splits": []}
    for group in groups.values():
        if len(group) < 2:
            continue
        files = sorted(r.name for r in group)
        labels = sorted({r.label for r in group})
        if len(labels) > 1:
            found["across_classes"].append({"classes": labels, "files": files})
        else:
            found["within_class"].append({"class": labels[0], "files": files})
        in_splits = [s for s in SPLITS if any(split_of[id(r)] == s for r in group)]
        if len(in_splits) > 1:
            found["across_splits"].append({"splits": in_splits, "files": files})
    for kind in found.values():
        kind.sort(key=lambda item: item["files"])
    return found


def _imbalance(counts: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Largest against smallest class over the images used for training and validation."""
    pool = Counter(counts.get("train", {})) + Counter(counts.get("val", {}))
    (largest, most), *_ = sorted(pool.items(), key=lambda item: (-item[1], item[0]))
    (smallest, least), *_ = sorted(pool.items(), key=lambda item: (item[1], item[0]))
    return {
        "largest": {"class": largest, "images": most},
        "smallest": {"class": smallest, "images": least},
        "ratio": round(most / least, 2),
    }


def _sizes(records: list[Record]) -> dict[str, Any]:
    def summary(values: list[int]) -> dict[str, float]:
        return {"min": min(values), "median": statistics.median(values), "max": max(values)}

    return {
        "width": summary([r.width for r in records]),
        "height": summary([r.height for r in records]),
        "modes": dict(Counter(r.mode for r in records).most_common()),
        "formats": dict(Counter(r.format for r in records).most_common()),
    }


def _warnings(report: DatasetReport) -> list[str]:
    warnings = []
    pool = Counter(report.counts["train"]) + Counter(report.counts["val"])
    few = [label for label in report.classes if pool[label] < FEW_IMAGES]
    if len(few) > LISTED:
        warnings.append(
            f"{len(few):,} classes have fewer than {FEW_IMAGES} images each (e.g. "
            f"{', '.join(map(repr, few[:LISTED]))}): expect unstable validation accuracy"
        )
    else:
        warnings.extend(
            f"fewer than {FEW_IMAGES} images in class {label!r} ({pool[label]}): expect unstable "
            "validation accuracy"
            for label in few
        )
    same = _differing_only_in_case(report.classes)
    if same:
        shown = "; ".join(" and ".join(map(repr, group)) for group in same[:LISTED])
        warnings.append(
            f"{_count(len(same), 'group')} of classes differ only in case ({shown}): they train as "
            "separate classes; rename the folders if they are the same thing"
        )
    val_total = sum(report.counts["val"].values())
    missing_val = [label for label in report.classes if report.counts["val"][label] == 0]
    if missing_val:
        more = f" and {len(missing_val) - LISTED:,} more" if len(missing_val) > LISTED else ""
        warnings.append(f"no validation images for class {', '.join(map(repr, missing_val[:LISTED]))}{more}")
    if 0 < val_total < FEW_VAL_IMAGES:
        warnings.append(
            f"only {val_total} validation images: each one moves validation accuracy by "
            f"{100 / val_total:.0f} points"
        )
    ratio = report.imbalance["ratio"]
    if ratio >= IMBALANCE_WARNING:
        big, small = report.imbalance["largest"]["class"], report.imbalance["smallest"]["class"]
        warnings.append(
            f"classes are imbalanced: {big!r} has {ratio:.1f}x the images of {small!r}; "
            "accuracy will flatter the larger classes, so read per-class recall"
        )
    dupes = report.duplicates
    if dupes["across_classes"]:
        warnings.append(
            f"{len(dupes['across_classes'])} identical images carry different classes (label conflict)"
        )
    if dupes["across_splits"]:
        warnings.append(
            f"{len(dupes['across_splits'])} identical images sit in more than one split (leakage): "
            "validation accuracy will look better than it is"
        )
    if dupes["within_class"]:
        copies = sum(len(group["files"]) - 1 for group in dupes["within_class"])
        warnings.append(f"{_count(copies, 'exact duplicate')} within classes: they add no information")
    side = min(report.image_sizes["width"]["median"], report.image_sizes["height"]["median"])
    if side < SMALL_SIDE:
        warnings.append(
            f"images are small (median shorter side {side:g} px): they are upscaled to the "
            "backbone's input size"
        )
    if report.skipped:
        warnings.append(f"{_count(len(report.skipped), 'file')} skipped (listed with reasons)")
    nested = report.ignored.get(NESTED_ARCHIVE, 0)
    if nested:
        warnings.append(f"{_count(nested, 'archive')} inside the upload ignored: unpack into class folders")
    return warnings


def _differing_only_in_case(classes: list[str]) -> list[list[str]]:
    groups: defaultdict[str, list[str]] = defaultdict(list)
    for label in classes:
        groups[label.casefold()].append(label)
    return [sorted(group) for group in groups.values() if len(group) > 1]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
