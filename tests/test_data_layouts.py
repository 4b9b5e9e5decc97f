"""The layouts an upload may have, the splits made from it, and the report a user reads."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
from fixtures.data.zips import classes, make_zip, png

from core.data import Dataset, ingest
from core.data import ingestion as ingest_module

CLUTTER = {
    "__MACOSX/cat/._0.png": b"resource fork",
    "cat/.DS_Store": b"x",
    "dog/Thumbs.db": b"x",
    "cat/.hidden.png": png(90),
    "dog/notes.txt": b"x",
}


def names(dataset: Dataset) -> dict[str, set[str]]:
    return {split: {s.name for s in getattr(dataset, split)} for split in ("train", "val", "test")}


def labels(dataset: Dataset, split: str = "train") -> set[str]:
    return {dataset.classes[s.label] for s in getattr(dataset, split)}


@pytest.mark.parametrize(
    "prefix", ["", "my photos/", "Users/me/pets/"], ids=["root", "wrapper", "deep-wrapper"]
)
def test_class_folders_at_the_root_or_under_wrappers(lab_home: Path, prefix: str) -> None:
    dataset = ingest(make_zip(classes({"dog": 5, "cat": 5}, prefix=prefix)))
    assert dataset.classes == ["cat", "dog"]
    assert dataset.report.layout == "class folders"
    assert dataset.report.wrapper == prefix.rstrip("/")
    assert len(dataset.train) == 8 and len(dataset.val) == 2 and dataset.test == []
    assert all(s.path.is_file() and s.path.is_relative_to(lab_home / "datasets") for s in dataset.train)


@pytest.mark.parametrize("val_name", ["val", "valid", "validation", "Val"])
def test_train_and_val_folders_are_used_as_given(lab_home: Path, val_name: str) -> None:
    files = classes({"cat": 4, "dog": 4}, prefix="data/train/") | classes(
        {"cat": 2, "dog": 2}, prefix=f"data/{val_name}/", start=20
    )
    dataset = ingest(make_zip(files))
    assert dataset.report.layout == "splits"
    assert dataset.report.split == "the upload's own train/ and val/ folders"
    assert all(name.startswith("data/train/") for name in names(dataset)["train"])
    assert all(name.startswith(f"data/{val_name}/") for name in names(dataset)["val"])
    assert dataset.report.counts["val"] == {"cat": 2, "dog": 2}


def test_a_test_split_is_kept_apart_and_val_is_made_from_train(lab_home: Path) -> None:
    files = classes({"cat": 10, "dog": 10}, prefix="train/") | classes(
        {"cat": 3, "dog": 2}, prefix="test/", start=50
    )
    dataset = ingest(make_zip(files))
    assert names(dataset)["test"] == {f"test/cat/{i}.png" for i in range(3)} | {
        "test/dog/0.png",
        "test/dog/1.png",
    }
    assert dataset.report.counts["val"] == {"cat": 2, "dog": 2}
    assert not names(dataset)["val"] & names(dataset)["test"]


def test_clutter_is_ignored_and_counted(lab_home: Path) -> None:
    report = ingest(make_zip(classes({"cat": 3, "dog": 3}) | CLUTTER)).report
    assert report.ignored == {
        "__MACOSX": 1,
        ".DS_Store": 1,
        "Thumbs.db": 1,
        "hidden file": 1,
        "not an image": 1,
    }
    assert report.skipped == [] and report.num_images == 6


def test_images_outside_class_folders_are_skipped_by_name(lab_home: Path) -> None:
    report = ingest(make_zip(classes({"cat": 3, "dog": 3}) | {"cover.png": png(70)})).report
    assert report.skipped == [{"file": "cover.png", "reason": "not inside a class folder"}]


def test_decomposed_accents_make_one_class(lab_home: Path) -> None:
    composed, decomposed = "café", unicodedata.normalize("NFD", "café")
    files = {
        f"{composed}/a.png": png(1),
        f"{decomposed}/b.png": png(2),
        "tea/a.png": png(3),
        "tea/b.png": png(4),
    }
    assert ingest(make_zip(files)).classes == ["café", "tea"]


def test_the_split_is_stratified_and_seeded(lab_home: Path) -> None:
    data = make_zip(classes({"cat": 20, "dog": 5}))
    first, again, other = ingest(data, seed=1), ingest(data, seed=1), ingest(data, seed=2)
    assert first.report.counts["val"] == {"cat": 4, "dog": 1}
    assert names(first) == names(again)
    assert names(first)["val"] != names(other)["val"]
    assert "seed 1" in first.report.split


def test_val_fraction_sets_the_held_out_share(lab_home: Path) -> None:
    dataset = ingest(make_zip(classes({"cat": 10, "dog": 10})), val_fraction=0.5)
    assert dataset.report.counts["val"] == {"cat": 5, "dog": 5}
    with pytest.raises(ValueError, match="val_fraction"):
        ingest(make_zip(classes({"cat": 10, "dog": 10})), val_fraction=1.0)


def test_identical_files_stay_on_one_side_of_our_split(lab_home: Path) -> None:
    files = classes({"cat": 6, "dog": 6}) | {
        f"cat/copy{i}.png": png(0) for i in range(4)
    }  # png(0) is cat/0.png
    for seed in range(5):
        dataset = ingest(make_zip(files), seed=seed)
        assert dataset.report.duplicates["across_splits"] == []


def test_duplicates_within_across_classes_and_across_splits_are_reported(lab_home: Path) -> None:
    files = classes({"cat": 4, "dog": 4}, prefix="train/") | classes(
        {"cat": 2, "dog": 2}, prefix="val/", start=20
    )
    files |= {"train/cat/again.png": files["train/cat/1.png"]}  # within a class
    files |= {"train/dog/cat-in-disguise.png": files["train/cat/2.png"]}  # label conflict
    files |= {"val/dog/leaked.png": files["train/dog/3.png"]}  # leakage
    report = ingest(make_zip(files)).report
    dupes = report.duplicates
    assert {"class": "cat", "files": ["train/cat/1.png", "train/cat/again.png"]} in dupes["within_class"]
    assert dupes["across_classes"] == [
        {"classes": ["cat", "dog"], "files": ["train/cat/2.png", "train/dog/cat-in-disguise.png"]}
    ]
    assert dupes["across_splits"] == [
        {"splits": ["train", "val"], "files": ["train/dog/3.png", "val/dog/leaked.png"]}
    ]
    text = " | ".join(report.warnings)
    assert (
        "label conflict" in text and "leakage" in text and "2 exact duplicates within classes" in text
    )  # the leaked copy too


def test_the_report_warns_about_small_classes_and_imbalance(lab_home: Path) -> None:
    report = ingest(make_zip(classes({"cat": 40, "dog": 4}))).report
    assert report.imbalance == {
        "largest": {"class": "cat", "images": 40},
        "smallest": {"class": "dog", "images": 4},
        "ratio": 10.0,
    }
    assert "fewer than 10 images in class 'dog' (4): expect unstable validation accuracy" in report.warnings
    assert any(
        w.startswith("classes are imbalanced: 'cat' has 10.0x the images of 'dog'") for w in report.warnings
    )
    assert not any("'cat' (" in w for w in report.warnings)


def test_the_report_is_json_and_saved_beside_the_images(lab_home: Path) -> None:
    dataset = ingest(make_zip(classes({"cat": 3, "dog": 3}) | CLUTTER), name="pets.zip")
    data = json.loads(json.dumps(dataset.report.to_dict(), allow_nan=False))
    assert data["source"]["name"] == "pets.zip" and data["num_images"] == 6
    assert data["image_sizes"]["width"] == {"min": 8, "median": 8, "max": 8}
    assert data["image_sizes"]["modes"] == {"RGB": 6} and data["image_sizes"]["formats"] == {"PNG": 6}
    assert json.loads((dataset.root / "report.json").read_text()) == data
    assert dataset.root == lab_home / "datasets" / data["source"]["sha256"]


def test_the_same_upload_is_not_unpacked_twice(lab_home: Path, tmp_path: Path, monkeypatch) -> None:
    data = make_zip(classes({"cat": 3, "dog": 3}))
    first = ingest(data)
    path = tmp_path / "same.zip"
    path.write_bytes(data)

    def unpack_again(*args, **kwargs):
        raise AssertionError("unpacked a second time")

    monkeypatch.setattr(ingest_module, "_unpack", unpack_again)
    second = ingest(path, seed=3)
    assert second.root == first.root
    assert [s.path for s in second.train + second.val] != [] and second.report.source == first.report.source


def test_a_server_folder_is_validated_in_place_without_writing_to_it(lab_home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "server data"
    for name, data in (classes({"cat": 3, "dog": 3}) | CLUTTER | {"dog/bad.png": b"nope"}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    (folder / "cat" / "link.png").symlink_to(folder / "dog" / "0.png")
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    dataset = ingest(folder)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    assert dataset.root == folder and dataset.classes == ["cat", "dog"]
    assert all(s.path.is_relative_to(folder) for s in dataset.train + dataset.val)
    skipped = {item["file"]: item["reason"] for item in dataset.report.skipped}
    assert skipped == {"dog/bad.png": skipped["dog/bad.png"], "cat/link.png": "symbolic link (not followed)"}
    assert dataset.report.source["kind"] == "folder"
    assert (lab_home / "datasets" / dataset.report.source["sha256"] / "report.json").is_file()


def test_a_changed_server_folder_is_validated_again(lab_home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    for name, data in classes({"cat": 3, "dog": 3}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    assert ingest(folder).report.num_images == 6
    (folder / "dog" / "new.png").write_bytes(png(77))
    assert ingest(folder).report.num_images == 7


def test_progress_is_reported_per_image(lab_home: Path) -> None:
    calls: list[tuple[int, int]] = []
    ingest(make_zip(classes({"cat": 2, "dog": 2})), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
