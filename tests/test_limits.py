"""Limits on a shared instance: configured in one place, refused in one line naming the limit, and
never slipped past by people submitting at the same moment."""

from __future__ import annotations

import itertools
import re
import threading
from pathlib import Path

import pytest
from fixtures.data.zips import classes, make_zip
from helpers_jobs import FOREVER, SLEEPY, wait_for
from helpers_pages import APP, TIMEOUT
from helpers_race import analysis_of
from helpers_stored import sha, stored_dataset
from streamlit.testing.v1 import AppTest

from core import jobs, limits, storage
from core.data.samples import sample_path
from core.experiments import race
from core.jobs import analysis, kinds, uploads, usage
from core.jobs.estimate import estimate
from core.limits import GIB, MIB, LimitExceeded, Limits

FACES = sample_path("faces")


# ---------------------------------------------------------------------------- configuration


def test_a_local_run_has_no_instance_limits_and_a_shared_one_has_the_defaults() -> None:
    local = limits.configured({}, env={})
    assert (local.max_active_runs, local.max_epochs, local.disk_quota_bytes, local.keep_runs_days) == (
        None,
    ) * 4
    shared = limits.configured({}, env={}, shared=True)
    assert shared == limits.SHARED_DEFAULTS and shared.max_active_runs == 6  # one race of the cases fits


def test_the_environment_wins_over_the_secrets_and_none_turns_a_limit_off() -> None:
    secrets = {"limits": {"max_active_runs": 2, "disk_quota_gb": 5, "max_upload_mb": 10, "max_epochs": 20}}
    env = {"TRANSFER_LAB_MAX_ACTIVE_RUNS": "4", "TRANSFER_LAB_MAX_EPOCHS": "none"}

    chosen = limits.configured(secrets, env=env, shared=True)

    assert chosen.max_active_runs == 4 and chosen.max_epochs is None
    assert chosen.disk_quota_bytes == 5 * GIB and chosen.max_upload_bytes == 10 * MIB
    assert chosen.max_image_size == limits.SHARED_DEFAULTS.max_image_size  # left unsaid: the default


def test_sizes_read_as_people_read_them() -> None:
    assert [limits.human_bytes(n) for n in (512, 3 * MIB, 20.4 * GIB, 5000 * GIB)] == [
        "512 B", "3.0 MiB", "20.4 GiB", "4.9 TiB"
    ]  # fmt: skip


@pytest.mark.parametrize("value", ["many", "-1", "2.5"])
def test_a_bad_setting_is_refused_naming_it(value: str) -> None:
    with pytest.raises(ValueError, match=r"^TRANSFER_LAB_MAX_ACTIVE_RUNS \(or \[limits\] max_active_runs\)"):
        limits.configured({}, env={"TRANSFER_LAB_MAX_ACTIVE_RUNS": value})


# ---------------------------------------------------------------------------- runs per person


def test_five_people_submitting_at_once_are_each_held_to_their_limit_and_nothing_is_lost(
    lab_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRANSFER_LAB_MAX_RUNS", "1")
    ceiling = Limits(max_active_runs=2)
    blocker = jobs.submit({}, target=FOREVER, owner="admin")  # holds the one slot while all submit
    wait_for(lambda: jobs.status(blocker).state == "running")
    accepted: list[tuple[str, str]] = []
    refused: list[tuple[str, str]] = []
    start = threading.Barrier(15)

    def submit(owner: str) -> None:
        start.wait()
        try:
            run_id = jobs.submit({"seconds": 0.1}, target=SLEEPY, owner=owner, limits=ceiling)
        except LimitExceeded as exc:
            refused.append((owner, str(exc)))
        else:
            accepted.append((owner, run_id))

    people = [f"user{n}" for n in range(5)]
    threads = [threading.Thread(target=submit, args=(owner,)) for owner in people for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(owner for owner, _ in refused) == people  # each person's third is refused
    assert {message for _, message in refused} == {
        "you have 2 jobs queued or running, and the limit here is 2 per person: cancel one, or wait for one to finish"
    }
    assert sorted(owner for owner, _ in accepted) == sorted(people * 2)
    jobs.cancel(blocker)
    finals = [
        wait_for(lambda r=run_id: (s := jobs.reconcile(r)).state == "done" and s) for _, run_id in accepted
    ]
    by_submission = sorted(finals, key=lambda s: s.submitted)
    assert [s.run_id for s in by_submission] == [s.run_id for s in sorted(finals, key=lambda s: s.started)]
    assert all(earlier.finished <= later.started for earlier, later in itertools.pairwise(by_submission))
    assert len(jobs.list_runs(viewer=jobs.LOCAL)) == 10 + 1  # every accepted run, and the blocker


def test_a_run_over_the_epochs_or_image_size_limit_is_refused_before_anything_is_written(
    lab_home: Path,
) -> None:
    ceiling = Limits(max_epochs=20, max_image_size=256)
    with pytest.raises(LimitExceeded, match=r"^50 epochs is over this instance's limit of 20 a run$"):
        jobs.submit({"epochs": 50}, target=SLEEPY, owner="ann", limits=ceiling)
    with pytest.raises(LimitExceeded, match=r"^image size 384 px is over this instance's limit of 256 px$"):
        jobs.submit({"epochs": 5, "image_size": 384}, target=SLEEPY, owner="ann", limits=ceiling)
    assert not storage.runs_dir().exists() or list(storage.runs_dir().iterdir()) == []


def test_a_race_is_admitted_whole_or_not_at_all(lab_home: Path) -> None:
    with pytest.raises(LimitExceeded, match=r"^you have 0 jobs queued or running; this asks for 4 more"):
        race.start_race(
            analysis_of(shift="input"), FACES, epochs=1, owner="ann", limits=Limits(max_active_runs=3)
        )
    assert not storage.runs_dir().exists() or list(storage.runs_dir().iterdir()) == []


def test_a_race_trains_every_lane_within_the_instance_image_size(
    lab_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRANSFER_LAB_MAX_RUNS", "1")
    started = race.start_race(analysis_of(), FACES, epochs=1, owner="ann", limits=Limits(max_image_size=96))
    for lane in started.lanes:
        jobs.cancel(lane.run_id)

    sizes = {jobs.Run.open(lane.run_id).plan_fields()["image_size"] for lane in started.lanes}
    assert sizes == {96}  # the race's own, half the backbone's 224 px, is over the instance's cap


def test_every_kind_of_job_counts_against_the_persons_limit_and_the_instances(
    lab_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRANSFER_LAB_MAX_RUNS", "1")
    ceiling = Limits(max_active_runs=2, max_side_jobs=3)
    for _ in range(2):
        jobs.submit({}, kinds.ANALYSE, target=FOREVER, owner="ann", limits=ceiling)
    said = r"^you have 2 jobs queued or running, and the limit here is 2 per person"
    try:
        with pytest.raises(LimitExceeded, match=said):
            analysis.submit_analysis(FACES, "faces", owner="ann", limits=ceiling)
        with pytest.raises(LimitExceeded, match=said):
            estimate({"data": str(FACES)}, owner="ann", limits=ceiling)
        with pytest.raises(LimitExceeded, match=said):
            jobs.submit({"epochs": 1}, target=SLEEPY, owner="ann", limits=ceiling)
        jobs.submit({}, kinds.ESTIMATE, target=FOREVER, owner="bob", limits=ceiling)
        with pytest.raises(
            LimitExceeded,
            match=r"^this server is already running 3 of the 3 jobs it runs at once besides training",
        ):
            uploads.accept_upload(make_zip(classes({"a": 2, "b": 2})), "pets.zip", owner="cy", limits=ceiling)
        assert jobs.list_runs(kinds.VALIDATE) == []
    finally:
        for kind in (kinds.ANALYSE, kinds.ESTIMATE):
            for row in jobs.list_runs(kind):
                jobs.cancel(row.run_id)


# ---------------------------------------------------------------------------- disk and uploads


def test_over_quota_new_runs_and_uploads_are_refused_with_the_figures(lab_home: Path) -> None:
    ann_run = jobs.submit({"seconds": 0.1}, target=SLEEPY, owner="ann")
    wait_for(lambda: jobs.reconcile(ann_run).state == "done")
    (storage.runs_dir() / ann_run / "model.bin").write_bytes(b"x" * (3 * MIB))
    quota = Limits(disk_quota_bytes=2 * MIB)

    with pytest.raises(
        LimitExceeded,
        match=r"^your runs and data sets take 3\.0 MiB, over your disk quota of 2\.0 MiB: ask an admin",
    ):
        jobs.submit({"seconds": 0.1}, target=SLEEPY, owner="ann", limits=quota)
    small = make_zip(classes({"a": 2, "b": 2}))
    with pytest.raises(
        LimitExceeded, match=r"take 3\.0 MiB and this needs [\d.]+ KiB more, over your disk quota of 2\.0 MiB"
    ):
        uploads.accept_upload(small, "pets.zip", owner="ann", limits=quota)

    assert usage.owner_bytes("ann") >= 3 * MIB and usage.owner_bytes("bob") == 0
    jobs.submit(
        {"seconds": 0.1}, target=SLEEPY, owner="bob", limits=quota
    )  # another owner's quota is their own
    assert not storage.uploads_dir().exists() or list(storage.uploads_dir().iterdir()) == []


def test_uploads_at_the_same_moment_are_charged_to_the_quota_one_after_the_other(lab_home: Path) -> None:
    zips = [make_zip(classes({"a": 3, "b": 3}, start=10 * n)) for n in range(5)]
    quota = Limits(disk_quota_bytes=int(2.5 * max(map(len, zips))))
    accepted, refused = [], []
    start = threading.Barrier(len(zips))

    def upload(data: bytes) -> None:
        start.wait()
        try:
            accepted.append(uploads.accept_upload(data, "pets.zip", owner="ann", limits=quota))
        except LimitExceeded as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=upload, args=(data,)) for data in zips]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(accepted) == 2 and len(refused) == 3
    assert all("over your disk quota" in message for message in refused)
    for row in jobs.list_runs(kinds.VALIDATE):
        wait_for(lambda r=row.run_id: not jobs.reconcile(r).state.active)


def test_an_upload_over_the_size_limit_is_refused_and_nothing_is_kept(lab_home: Path) -> None:
    data = make_zip(classes({"a": 3, "b": 3}))
    with pytest.raises(LimitExceeded, match=r"^the zip is [\d.]+ KiB; uploads are limited to [\d.]+ KiB$"):
        uploads.accept_upload(data, "pets.zip", limits=Limits(max_upload_bytes=len(data) - 1))
    assert not storage.uploads_dir().exists() or list(storage.uploads_dir().iterdir()) == []
    assert jobs.list_runs(kinds.VALIDATE) == []


def test_the_validation_applies_the_configured_images_per_zip(lab_home: Path) -> None:
    digest = uploads.accept_upload(
        make_zip(classes({"a": 3, "b": 3})), "pets.zip", limits=Limits(max_entries=4)
    )

    def refused() -> str | None:
        state = uploads.upload_state(digest)
        if state.job_id:
            jobs.reconcile(state.job_id)
        return uploads.upload_state(digest).refusal

    assert wait_for(refused) == "the zip has 6 entries; the limit is 4"


# ---------------------------------------------------------------------------- the pages


def test_the_train_page_says_why_a_run_over_the_limit_was_not_started(
    lab_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRANSFER_LAB_MAX_RUNS", "1")
    monkeypatch.setenv("TRANSFER_LAB_MAX_ACTIVE_RUNS", "1")
    busy = jobs.submit({}, target=FOREVER)
    try:
        at = AppTest.from_file(APP, default_timeout=TIMEOUT)
        at.run()
        at.switch_page("pages/train.py").run()
        at.button(key="train.start").click().run()

        said = "you have 1 job queued or running, and the limit here is 1 per person: cancel one, or wait for one to finish"
        assert [e.value for e in at.error] == [f"Not started: {said}."]
        assert len(jobs.list_runs()) == 1
    finally:
        jobs.cancel(busy)


def test_the_plan_form_offers_no_more_epochs_than_the_instance_allows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRANSFER_LAB_MAX_EPOCHS", "7")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/train.py").run()
    epochs = at.number_input(key="train.plan_epochs")
    assert epochs.max == 7 and epochs.value == 7  # the sample's case 1 would start at 10


def test_a_shared_data_set_counts_in_full_for_each_owner_and_once_on_disk(lab_home: Path) -> None:
    folder = stored_dataset(sha("a"), {"ann": 1, "bob": 2})
    size = usage.folder_bytes(folder)

    by_owner = usage.disk_by_owner()

    assert by_owner["ann"].dataset_bytes == by_owner["bob"].dataset_bytes == size > 0
    assert usage.stored_bytes() == size


def test_the_sidebar_shows_where_a_person_stands_against_their_limits(
    lab_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def share() -> list[str]:
        at = AppTest.from_file(APP, default_timeout=TIMEOUT)
        at.run()
        return [c.value for c in at.sidebar.caption if "Yours:" in c.value]

    assert share() == []  # a local run sets no limit
    monkeypatch.setenv("TRANSFER_LAB_MAX_RUNS", "1")
    monkeypatch.setenv("TRANSFER_LAB_MAX_ACTIVE_RUNS", "3")
    monkeypatch.setenv("TRANSFER_LAB_DISK_QUOTA_GB", "1")
    busy = jobs.submit({}, target=FOREVER)
    try:
        [line] = share()
        assert re.fullmatch(
            r":material/data_usage: Yours: 1 of 3 jobs in line · [\d.]+ (B|KiB) of 1\.0 GiB disk", line
        )
    finally:
        jobs.cancel(busy)
