"""An uploaded zip, once unpacked, can be named again by its ``datasets/<sha256>/`` folder."""

from fixtures.data.zips import classes, make_zip

from core.data import ingest, stored_dataset, stored_images


def test_a_stored_upload_is_ingested_again_by_its_folder() -> None:
    upload = make_zip(classes({"cats": 6, "dogs": 6}))
    first = ingest(upload, name="pets.zip")
    again = ingest(first.root)  # what a worker gets: the folder, not the bytes
    assert again.root == first.root
    assert again.classes == ["cats", "dogs"]
    assert [s.name for s in again.train] == [s.name for s in first.train]
    assert [s.name for s in again.val] == [s.name for s in first.val]
    assert again.report.source["name"] == "pets.zip"


def test_an_ordinary_server_folder_is_still_validated_in_place(tmp_path) -> None:
    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "data" / label / f"{i}.png").write_bytes(classes({label: 3})[f"{label}/{i}.png"])
    dataset = ingest(tmp_path / "data")
    assert dataset.root == (tmp_path / "data").resolve()
    assert dataset.classes == ["a", "b"]


def test_a_folder_is_read_from_its_manifest_only_once_validated_and_again_once_changed(tmp_path) -> None:
    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "data" / label / f"{i}.png").write_bytes(classes({label: 3})[f"{label}/{i}.png"])
    assert stored_dataset(tmp_path / "data") is None and stored_images(tmp_path / "data") == {}
    validated = ingest(tmp_path / "data")  # what the validation job does
    read = stored_dataset(tmp_path / "data")
    assert [s.path for s in read.train] == [s.path for s in validated.train] and read.report.held_out_val
    assert stored_images(tmp_path / "data")["a/0.png"] == (tmp_path / "data" / "a" / "0.png").resolve()
    (tmp_path / "data" / "a" / "3.png").write_bytes(classes({"a": 1})["a/0.png"])
    assert stored_dataset(tmp_path / "data") is None  # a changed folder is checked again, by a job
