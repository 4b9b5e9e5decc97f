"""Access and owners: the team password and the waits after failures, an identity provider's
addresses read strictly, and each owner seeing only their own runs and uploads, in ``core`` and
through the app's pages (AppTest, signed in as a provider's user; the password's form and
cookie are tests/test_gate.py's, against a real server)."""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from helpers_pages import APP, PASSWORD, TIMEOUT, sign_in
from PIL import Image
from streamlit.testing.v1 import AppTest

from core import access, jobs, storage
from core.access import AccessSettings, SignInRefused, Viewer
from core.access import throttle as throttle_module
from core.access.throttle import FailureThrottle, client_address
from core.cli import build_parser
from core.cli import main as cli_main
from core.experiments.race import Contender, Lane, Race
from core.jobs import kinds, uploads, usage
from core.jobs.run import Run, RunNotFound, RunRecord
from core.storage import write_json

ROOT = Path(__file__).resolve().parents[1]
ALICE, BOB = Viewer("alice", sees_all=False), Viewer("bob", sees_all=False)


def stored_run(run_id: str, owner: str, state: str = "done") -> str:
    """A finished run on disk, as a worker leaves it, owned by ``owner``."""
    run = Run(storage.runs_dir() / run_id)
    run.directory.mkdir(parents=True)
    write_json(run.plan_file, {"backbone": "resnet18", "case": 1, "data": "/data/faces", "epochs": 1})
    write_json(run.status_file, {"state": state, "message": "", "submitted": time.time(), "kind": "train"})
    run.write_record(RunRecord(owner=owner, dataset_name="faces"))
    return run_id


@pytest.fixture
def password(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(access.PASSWORD_HASH_ENV, access.hash_password(PASSWORD))
    return PASSWORD


# ------------------------------------------------------------------ settings and the password


def test_access_is_off_without_configuration_and_everyone_is_local() -> None:
    settings = access.settings({}, env={})
    assert settings.mode == access.OFF
    assert settings.viewer("anyone") == access.LOCAL and access.LOCAL.may_see("bob")


def test_the_mode_follows_what_is_configured() -> None:
    auth = {"auth": {"client_id": "lab", "server_metadata_url": "http://127.0.0.1:1/.well-known"}}
    assert access.settings(auth, env={}).mode == access.OIDC
    assert access.settings({"access": {"password_hash": "scrypt$00$00"}}, env={}).mode == access.PASSWORD
    assert access.settings({}, env={access.PASSWORD_HASH_ENV: "scrypt$00$00"}).mode == access.PASSWORD


def test_the_allow_list_takes_domains_and_addresses_and_admins_see_all() -> None:
    settings = access.settings(
        {"access": {"allow": ["example.com", "Guest@Other.org"], "admins": ["boss@example.com"]}},
        env={access.PASSWORD_HASH_ENV: "x"},
    )
    assert settings.allows("ann@example.com") and settings.allows("guest@other.org")
    assert not settings.allows("eve@other.org") and not settings.allows("eve@example.com.evil")
    assert not access.settings({}, env={}).allows("ann@example.com")  # no list: nobody
    assert settings.viewer("boss@example.com").sees_all
    assert not settings.viewer("ann@example.com").sees_all
    assert access.settings({"access": {"allow": "a.org, b.org"}}, env={}).allow == ("a.org", "b.org")
    shared = access.settings({}, env={access.PASSWORD_HASH_ENV: "x", access.SHARE_ENV: "true"})
    assert shared.viewer("ann").sees_all


def test_a_password_matches_its_hash_only() -> None:
    stored = access.hash_password(PASSWORD)
    assert PASSWORD not in stored
    assert access.password_matches(PASSWORD, stored)
    assert not access.password_matches(PASSWORD + " ", stored)
    assert not access.password_matches(PASSWORD, "plain-text")


def test_each_failure_doubles_the_wait_for_a_name_from_an_address_and_a_new_throttle_sees_it() -> None:
    throttle = FailureThrottle()
    assert [throttle.attempt("eve", "10.0.0.1", now=now) for now in (100.0, 102.0, 105.0)] == [1.0, 2.0, 4.0]
    # Another session (or server process) reads the same file: the wait is not per session.
    assert FailureThrottle().wait_s("eve", "10.0.0.1", now=106.0) == pytest.approx(3.0)
    assert FailureThrottle().wait_s("eve", "10.0.0.2", now=106.0) == 0.0
    assert FailureThrottle().wait_s("ann", "10.0.0.1", now=106.0) == 0.0  # a colleague is not kept out
    with pytest.raises(SignInRefused, match="for eve from your address: try again in 3 s"):
        throttle.attempt("eve", "10.0.0.1", now=106.0)
    throttle.succeeded("eve", "10.0.0.1")
    assert throttle.wait_s("eve", "10.0.0.1", now=106.0) == 0.0


def test_the_address_and_the_instance_keep_a_burst_to_a_minute_and_an_admin_unlocks() -> None:
    throttle, start = FailureThrottle(), time.time() - 400
    for i in range(30):  # thirty names tried from one address, and thirty from as many addresses
        for address in ("10.0.0.1", f"10.0.1.{i}"):
            with contextlib.suppress(SignInRefused):  # refused unchecked while a wait lasts
                throttle.attempt(f"guesser {i}", address, now=start + 10 * i)
    now = start + 10 * 29
    assert 0 < throttle.wait_s("ann", "10.0.0.1", now=now) <= throttle_module.ADDRESS.max_wait_s
    assert 0 < throttle.wait_s("ann", "10.0.9.9", now=now) <= throttle_module.INSTANCE.max_wait_s
    assert throttle.unlock("guesser 0") == 2  # that name, from both its addresses
    throttle.unlock()
    assert throttle.entries(now=now) == {} and throttle.wait_s("ann", "10.0.0.1", now=now) == 0.0


def test_a_forwarded_address_is_believed_only_from_a_named_proxy() -> None:
    assert client_address("10.0.0.5", "203.0.113.9", ()) == "10.0.0.5"
    assert client_address("10.0.0.5", "198.51.100.1, 203.0.113.9", ("10.0.0.5",)) == "203.0.113.9"
    # uvicorn took a loopback peer's address from the header: no proxy named, so nobody's own.
    assert client_address("203.0.113.9", "203.0.113.9", ()) == "forwarded"
    assert client_address("203.0.113.9", "203.0.113.9:4444", ()) == "forwarded"
    assert client_address("2001:db8:1:2:3::9", None, ()) == "2001:db8:1:2::/64"


def test_while_the_wait_lasts_even_the_right_password_is_refused() -> None:
    settings = AccessSettings(mode=access.PASSWORD, password_hash=access.hash_password(PASSWORD))
    with pytest.raises(SignInRefused, match="wrong password"):
        access.check_password(settings, "guess", "10.0.0.1", name="eve")
    with pytest.raises(SignInRefused, match="Too many failed sign-ins"):
        access.check_password(settings, PASSWORD, "10.0.0.1", name="eve")
    time.sleep(throttle_module.NAME.wait_after(1))
    access.check_password(settings, PASSWORD, "10.0.0.1", name="eve")


def test_thirty_wrong_passwords_at_once_are_checked_against_the_hash_once() -> None:
    """The wait is read and the failure counted in one locked step: of a burst sent at once,
    one guess is checked, and the others are refused unchecked."""
    settings = AccessSettings(mode=access.PASSWORD, password_hash=access.hash_password(PASSWORD))
    refusals: list[str] = []

    def guess(i: int) -> None:
        try:
            access.check_password(settings, f"guess {i}", "198.51.100.7", name="eve")
        except SignInRefused as exc:
            refusals.append(str(exc))

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(refusals) == 30
    assert sum("wrong password" in refusal for refusal in refusals) == 1, refusals


@pytest.mark.parametrize(
    "email",
    [
        "example.com",
        "eve@other.org@example.com",
        "@example.com",
        "eve@",
        "eve@example.com.",
        "e ve@example.com",
    ],
)
def test_an_address_that_is_not_exactly_one_mailbox_is_refused_by_the_allow_list(email: str) -> None:
    settings = access.settings({"access": {"allow": ["example.com"]}}, env={})
    assert not settings.allows(email)


# ------------------------------------------------------------------ owners in the jobs layer


def test_another_owners_run_is_not_found_exactly_like_a_made_up_id() -> None:
    stored_run("alice-run", "alice")
    with pytest.raises(RunNotFound) as made_up:
        Run.open("no-such-run", BOB)
    with pytest.raises(RunNotFound) as theirs:
        Run.open("alice-run", BOB)
    assert str(theirs.value) == str(made_up.value).replace("no-such-run", "alice-run")
    for call in (jobs.status, jobs.reconcile, jobs.cancel):
        with pytest.raises(RunNotFound):
            call("alice-run", BOB)
    assert jobs.status("alice-run", ALICE).state == "done"


def test_each_owner_lists_their_own_runs_and_admins_all() -> None:
    stored_run("alice-run", "alice")
    stored_run("bob-run", "bob", state="queued")
    stored_run("cli-run", "local")
    assert [r.run_id for r in jobs.list_runs(viewer=ALICE)] == ["alice-run"]
    assert [r.run_id for r in jobs.list_runs(viewer=BOB)] == ["bob-run"]
    assert {r.run_id for r in jobs.list_runs(viewer=Viewer("boss", sees_all=True))} == {
        "alice-run",
        "bob-run",
        "cli-run",
    }
    assert {r.run_id for r in jobs.list_runs()} == {"alice-run", "bob-run", "cli-run"}  # access off
    assert jobs.active_runs(ALICE) == []


def test_an_upload_belongs_to_whoever_uploaded_it() -> None:
    content = b"the bytes of a zip validated earlier"
    digest = hashlib.sha256(content).hexdigest()
    (storage.datasets_dir() / digest).mkdir(parents=True)
    (storage.datasets_dir() / digest / "manifest.json").write_text("{}")
    access.add_owner(usage.dataset_owners_file(digest), "alice")
    assert uploads.upload_state(digest, ALICE).dataset is not None
    assert uploads.upload_state(digest, BOB).refusal == "no such upload"
    assert uploads.upload_state("b" * 64, BOB).refusal == "no such upload"
    # The same content uploaded by another person is theirs too, without validating it again.
    assert uploads.accept_upload(content, "mine.zip", owner="bob") == digest
    assert uploads.upload_state(digest, BOB).dataset is not None
    assert jobs.list_runs(kinds.VALIDATE) == []


def test_another_owners_race_is_none() -> None:
    race = Race(
        "r1",
        "/data/faces",
        "case3",
        (Contender("case3", "case 3", {"case": 3}),),
        (Lane("case3", 0, "x"),),
        owner="alice",
    )
    write_json(race.file, asdict(race))
    assert Race.load("r1", ALICE) == race
    assert Race.load("r1", BOB) is None


def test_the_cli_owner_defaults_to_local_and_refuses_a_name_no_sign_in_could_give(lab_home: Path) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "core", "train", "x.zip", "--owner", "<script>"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "--owner" in refused.stderr
    assert refused.stderr.count("\n") == 1
    parser = build_parser()
    assert parser.parse_args(["train", "x.zip", "--owner", " Ann@Example.com"]).owner == "ann@example.com"
    assert parser.parse_args(["analyze", "faces"]).owner == access.LOCAL_OWNER


def test_a_command_line_run_belongs_to_its_owner(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    only = tmp_path / "one_class" / "cats"
    only.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(only / f"{i}.png")
    # The run fails on its data (one class), after it was recorded: what the app lists.
    assert cli_main(["train", str(only.parent), "--backbone", "efficientnet_lite0", "--owner", "Ann"]) == 1
    [row] = jobs.list_runs(viewer=Viewer("ann", sees_all=False))
    assert row.state == "failed" and jobs.list_runs(viewer=BOB) == []
    assert Run.open(row.run_id).record().owner == "ann"


# ------------------------------------------------------------------ the pages, signed in


def test_with_a_password_nothing_shows_without_the_sign_in_cookie(password: str) -> None:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert [t.value for t in at.title] == ["Transfer Lab"]
    assert not at.sidebar.caption and not at.get("plotly_chart")
    assert "/gate/sign-in" in at.markdown[0].value


def test_a_second_owner_can_neither_list_nor_open_the_first_ones_run() -> None:
    theirs = stored_run("aliceRun", "alice@example.com")
    at = sign_in("Bob")
    assert at.title[0].value == "Which transfer-learning approach?"
    assert "bob@example" in at.sidebar.caption[0].value
    at.switch_page("pages/results.py").run()
    assert "No runs yet" in at.info[0].value
    made_up = sign_in("bob", run="madeUp")
    made_up.switch_page("pages/train.py").run()
    at.query_params["run"] = theirs
    at.switch_page("pages/train.py").run()
    assert at.error[0].value == made_up.error[0].value.replace("madeUp", theirs)

    owner = sign_in("alice")
    owner.switch_page("pages/results.py").run()
    assert owner.dataframe[0].value["run_id"].tolist() == [theirs]


def test_hash_password_prints_a_hash_that_the_password_matches() -> None:
    made = subprocess.run(
        [sys.executable, "-m", "core", "hash-password"],
        input=PASSWORD + "\n",
        check=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    printed = made.stdout.strip()
    assert PASSWORD not in printed and access.password_matches(PASSWORD, printed)
