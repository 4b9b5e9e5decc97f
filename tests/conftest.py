"""Fixtures every test shares: app storage in a temp dir, a home for real workers, a Ray head, a live app.

What the suite needs from the hardware: a CPU, any (no GPU: the tests that need one are skipped
without it), and chromium at /usr/bin/chromium for the browser tests. Results must not depend on
the CPU's bf16 units (AVX-512 BF16 or AMX): expectations that depend on precision follow what
``choose_precision`` picks here, the ``no_bf16_cpu`` fixture makes a CPU with the units look as
if it had none, and bf16 asked for is tested where it is emulated. The header of a run says what
this machine is and what ``auto`` picks on it. To run the whole suite as on an AVX2-only CPU
(a 2-core AMD EPYC, say) on one with the units, workers included::

    TRANSFER_LAB_CPU_BF16=off ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python -m pytest -q

(the first is the app's own override, ``core.machine``; the other two keep torch's kernels and
oneDNN to AVX2.) Tests wait for conditions, never for fixed times, with bounds generous enough
for a busy machine: the suite passes beside two CPU-burning processes on 2 cores.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers_browser import new_tab
from helpers_jobs import kill_workers, ray_head, ray_job
from helpers_server import module_server, serve_app

BROWSER = os.environ.get("TRANSFER_LAB_BROWSER", "/usr/bin/chromium")
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def pytest_report_header() -> list[str]:
    """The machine the results came from: its CPU, its bf16 units, and what auto picks on it."""
    import torch

    from core import machine
    from core.training.device import choose_precision

    cpu = machine.cpu()
    capability = torch.backends.cpu.get_cpu_capability()
    return [
        f"cpu: {cpu.name}, bf16 units: {'yes' if cpu.has_bf16_units else 'no'}, torch kernels: {capability}",
        f"{machine.BF16_ENV}={machine.bf16_setting()}: auto precision on the CPU is "
        + choose_precision(torch.device("cpu")),
    ]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests on the Ray cluster run last, together: its head (a dozen processes that take
    about 7% of a core while idle) then lives beside those tests only, not the whole suite."""
    items.sort(key=lambda item: item.get_closest_marker("ray") is not None)


@pytest.fixture
def no_bf16_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """This CPU as one without bf16 units (an AVX2-only AMD EPYC): ``auto`` precision is fp32,
    here and in the workers the test starts."""
    from core import machine

    monkeypatch.setenv(machine.BF16_ENV, "off")


@pytest.fixture(scope="session")
def shared_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's one backbone catalog folder (``core.models.catalog``), filled by the first
    test that reads it: computing it takes half a minute on 2 cores, and it depends only on the
    libraries and the code, which a session does not change."""
    return tmp_path_factory.mktemp("backbone_catalog")


def share_catalog(home: Path, catalog_dir: Path) -> None:
    """Let the app storage in ``home`` read and write its backbone catalog in ``catalog_dir``."""
    (home / "cache").mkdir(parents=True, exist_ok=True)
    (home / "cache" / "backbones").symlink_to(catalog_dir, target_is_directory=True)


@pytest.fixture(autouse=True)
def lab_home(tmp_path: Path, shared_catalog: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test writes app storage into its own temp dir, never the user's home; all share
    the session's backbone catalog."""
    home = tmp_path / "lab_home"
    monkeypatch.setenv("TRANSFER_LAB_HOME", str(home))
    share_catalog(home, shared_catalog)
    return home


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """torch on one thread in this process for the test, then as it was: for modules of many
    small passes, where a second thread costs more than it brings. Left at one, every later test
    in the session would run on one thread (12% slower for test_head and test_train, quiet)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY_PLAN = {
    "backbone": "efficientnet_lite0",
    "case": 1,
    "epochs": 2,
    "batch_size": 16,
    "image_size": 64,
    "augment": "none",
    "device": "cpu",
}


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """One Ray head for the whole test session (``helpers_jobs.ray_head``)."""
    with ray_head() as cluster:
        yield cluster


@pytest.fixture
def on_ray(lab_home: Path, ray_cluster: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """This test's jobs go to the session's Ray cluster; none is left running after it."""
    from core.jobs import backend, ray_backend

    monkeypatch.setenv(backend.BACKEND_ENV, "ray")
    monkeypatch.setenv(ray_backend.ADDRESS_ENV, ray_cluster.address_for_jobs)
    monkeypatch.delenv(ray_backend.RESOURCES_ENV, raising=False)
    yield ray_cluster
    for run in lab_home.glob("runs/*/status.json"):
        status = json.loads(run.read_text())
        if status.get("backend") == "ray" and status.get("state") in ("queued", "running"):
            ray_job(run.parent.name, stop=True)


@pytest.fixture
def home(lab_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The test's home for real workers: one run at a time, no GPU (the same on every machine),
    and no worker left behind."""
    monkeypatch.setenv("TRANSFER_LAB_MAX_RUNS", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    yield lab_home
    kill_workers(lab_home)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny) case-1 run on the faces sample, trained once for the whole session."""
    from core import storage
    from core.data.samples import sample_path
    from core.jobs.run import Run, RunState, StatusKeeper, new_run_id
    from core.training import train
    from core.training.events import EventLog

    home = tmp_path_factory.mktemp("trained_home")
    old = os.environ.get("TRANSFER_LAB_HOME")
    os.environ["TRANSFER_LAB_HOME"] = str(home)
    try:
        run = Run(storage.runs_dir() / new_run_id())
        run.directory.mkdir(parents=True)
        storage.write_json(run.plan_file, {**TINY_PLAN, "data": str(sample_path("faces"))})
        with StatusKeeper.take(run) as keeper:
            keeper.set_state(RunState.RUNNING, pid=None, submitted=0.0, started=0.0)
            train.run(run.directory, EventLog(run.directory))
            keeper.set_state(RunState.DONE)
    finally:
        if old is None:
            os.environ.pop("TRANSFER_LAB_HOME")
        else:
            os.environ["TRANSFER_LAB_HOME"] = old
    return run.directory


@pytest.fixture(scope="session")
def app_url(tmp_path_factory: pytest.TempPathFactory, shared_catalog: Path) -> Iterator[str]:
    """A real Streamlit server on 127.0.0.1 with its own storage, for the whole session."""
    # Workers sleep after each batch so that a tiny run lasts long enough to watch it live.
    from core.models import catalog

    home = tmp_path_factory.mktemp("browser_home")
    share_catalog(home, shared_catalog)
    with pytest.MonkeyPatch.context() as patch:  # written before the server starts, as an image build does
        patch.setenv("TRANSFER_LAB_HOME", str(home))
        catalog.cards()
    with serve_app(home, env={"TRANSFER_LAB_STEP_DELAY": "0.3"}) as url:
        yield url


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Debian's chromium driven by Playwright. Missing: a failure under CI, a skip elsewhere."""
    if not os.access(BROWSER, os.X_OK):
        message = f"no browser at {BROWSER}: run scripts/ensure-browser.sh (needs root and apt-get)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=BROWSER, args=BROWSER_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, app_url: str):
    """A tab on the shared app; its waits are bounded by ``helpers_browser.WAIT_MS``."""
    tab = new_tab(browser, accept_downloads=True)
    yield tab
    tab.context.close()


@pytest.fixture
def screenshot_dir() -> Path | None:
    """Where README screenshots go when ``TRANSFER_LAB_SCREENSHOTS`` names a folder."""
    folder = os.environ.get("TRANSFER_LAB_SCREENSHOTS")
    if not folder:
        return None
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def app_server():
    """Starts further app servers, configured differently from ``app_url``'s:
    ``with app_server(home, env={...}, secrets=lambda url: "...") as url``."""
    return serve_app


@pytest.fixture(scope="session")
def identity_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real OpenID Connect provider for tests (``oidc-provider-mock``) on 127.0.0.1: it signs
    in whoever is typed on its page, with that text as the e-mail address. Yields its issuer URL."""
    with module_server(
        ["oidc_provider_mock", "--host", "127.0.0.1", "--port", "{port}"],
        tmp_path_factory.mktemp("identity_provider"),
        health_path="/.well-known/openid-configuration",
    ) as url:
        yield url
