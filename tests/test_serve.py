"""The prediction service: ``python -m core serve`` started on 127.0.0.1 and called over HTTP,
answering as ``python -m core predict`` does, refusing bad requests in JSON, batching concurrent ones."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import torch
from helpers_exported import LABELS, PRE, colour_net
from helpers_server import ROOT, free_port, stop_server, wait_healthy
from helpers_serving import predict_in_process, run_apart
from PIL import Image

from core.artifacts.export import export_model
from core.cli import main
from core.serving import app as app_module
from core.serving.batcher import MicroBatcher

COLOURS = {"red": (220, 30, 20), "green": (10, 200, 40), "blue": (20, 40, 230)}
MAX_UPLOAD_MB = 1  # the service under test refuses larger requests


def png(colour: tuple[int, int, int], size: tuple[int, int] = (60, 45)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("served") / "run"
    export_model(colour_net(), PRE, LABELS, run / "model")
    return run


@pytest.fixture(scope="module")
def url(run_dir: Path) -> Iterator[str]:
    """``python -m core serve`` on a free port of 127.0.0.1, for the module's tests."""
    port = free_port()
    log = open(run_dir.parent / "serve.log", "a")  # noqa: SIM115 - closed by stop_server
    env = {
        "TRANSFER_LAB_HOME": str(run_dir.parent / "home"),
        "TRANSFER_LAB_MAX_UPLOAD_MB": str(MAX_UPLOAD_MB),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "core", "serve", str(run_dir), "--port", str(port)],
        cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process, timeout=180, path="/health")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(process, log)


def predict(url: str, *images: tuple[str, bytes], **params: object) -> httpx.Response:
    return httpx.post(
        f"{url}/predict", files=[("images", image) for image in images], params=params, timeout=60
    )


def test_each_image_gets_its_colour_most_probable_first(url: str) -> None:
    response = predict(url, *((f"{name}.png", png(rgb)) for name, rgb in COLOURS.items()), top=2)
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert [p["file"] for p in predictions] == ["red.png", "green.png", "blue.png"]
    assert [p["top"][0]["label"] for p in predictions] == list(COLOURS)
    for p in predictions:
        first, second = p["top"]
        assert first["probability"] > second["probability"] > 0


def test_answers_equal_the_predict_command(url: str, run_dir: Path, tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    noise = Image.fromarray((torch.rand(48, 64, 3) * 255).to(torch.uint8).numpy())
    noise.save(tmp_path / "noise.png")
    Image.new("RGB", (90, 50), (120, 140, 100)).save(tmp_path / "olive.jpg", quality=90)
    paths = [tmp_path / "noise.png", tmp_path / "olive.jpg"]
    assert main(["predict", str(run_dir), *map(str, paths), "--json", "--top", "3"]) == 0
    expected = [row["top"] for row in json.loads(capsys.readouterr().out)]
    served = predict(url, *((p.name, p.read_bytes()) for p in paths), top=3).json()["predictions"]
    for row, wanted in zip(served, expected, strict=True):
        assert [t["label"] for t in row["top"]] == [t["label"] for t in wanted]
        assert [t["probability"] for t in row["top"]] == pytest.approx(
            [t["probability"] for t in wanted], abs=1e-5
        )


def test_metadata_says_the_labels_the_input_and_its_preparation(url: str) -> None:
    metadata = httpx.get(f"{url}/metadata").json()
    assert metadata["labels"] == LABELS
    assert metadata["input_size"] == [3, PRE.crop, PRE.crop]
    assert metadata["preprocess"] == json.loads(json.dumps(PRE.to_dict()))
    assert "3 classes (red, green, blue)" in metadata["summary"]
    assert metadata["max_request_bytes"] == MAX_UPLOAD_MB << 20


def flat_png(side: int) -> bytes:
    """A few kilobytes that decode to ``side`` x ``side`` pixels."""
    return png((0, 0, 0), (side, side))


@pytest.mark.parametrize(
    ("files", "params", "status", "says"),
    [
        ([("notes.txt", b"not an image at all")], {}, 422, "cannot read image 'notes.txt': not an image"),
        ([("cut.png", png((1, 2, 3))[:60])], {}, 422, "cannot read image 'cut.png'"),
        ([("empty.png", b"")], {}, 422, "cannot read image 'empty.png'"),
        ([("flat.png", flat_png(4000))], {}, 413, "('flat.png' passes the mark)"),
        ([("huge.bmp", b"BM" + bytes(2 << 20))], {}, 413, "requests are limited to 1.0 MiB"),
        ([("red.png", png(COLOURS["red"]))] * 33, {}, 413, "33 images in one request; the limit is 32"),
        ([], {}, 400, "no images"),
        (
            [("red.png", png(COLOURS["red"]))],
            {"top": 0},
            422,
            "top: Input should be greater than or equal to 1",
        ),
    ],
    ids=["not-an-image", "truncated", "empty", "pixel-bomb", "too-large", "too-many", "none", "top-0"],
)
def test_a_bad_request_gets_a_4xx_and_one_line_of_json(
    url: str, files: list[tuple[str, bytes]], params: dict[str, object], status: int, says: str
) -> None:
    response = predict(url, *files, **params) if files else httpx.post(f"{url}/predict", params=params)
    assert response.status_code == status
    assert says in response.json()["error"] and "Traceback" not in response.text
    assert httpx.get(f"{url}/health").status_code == 200  # and the service goes on


def test_twenty_concurrent_requests_are_all_answered(url: str) -> None:
    colours = [list(COLOURS)[i % 3] for i in range(20)]
    before = httpx.get(f"{url}/health").json()

    async def all_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            return await asyncio.gather(
                *(client.post("/predict", files={"images": (f"{c}.png", png(COLOURS[c]))}) for c in colours)
            )

    responses = run_apart(all_at_once())
    assert [r.status_code for r in responses] == [200] * 20
    assert [r.json()["predictions"][0]["top"][0]["label"] for r in responses] == colours
    after = httpx.get(f"{url}/health").json()
    assert after["inputs"] - before["inputs"] == 20


def test_waiting_requests_share_one_forward_pass_up_to_the_batch_size() -> None:
    passes: list[int] = []

    def doubled(x: torch.Tensor) -> torch.Tensor:
        passes.append(len(x))
        return x * 2

    async def requests(sizes: list[int]) -> list[torch.Tensor]:
        batcher = MicroBatcher(doubled, max_batch=4, max_wait_s=0.05)
        async with batcher.running():
            return await asyncio.gather(*(batcher(torch.full((n, 1), float(i))) for i, n in enumerate(sizes)))

    answers = run_apart(requests([1, 1, 1, 3, 6]))
    assert passes == [3, 3, 6]  # 1+1+1 together, 3 would overflow them, 6 runs whole and alone
    for i, (n, answer) in enumerate(zip([1, 1, 1, 3, 6], answers, strict=True)):
        assert answer.tolist() == [[2.0 * i]] * n  # each request gets its own rows back


def test_a_failure_of_ours_is_a_500_in_json_without_its_traceback(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(predictor: object) -> Callable[[torch.Tensor], torch.Tensor]:
        def forward(inputs: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("the kernel fell over")

        return forward

    monkeypatch.setattr(app_module, "torch_forward", broken)
    app = app_module.create_app(run_dir / "model")
    response = run_apart(predict_in_process(app, {"images": ("red.png", png(COLOURS["red"]))}))
    assert response.status_code == 500
    assert response.json() == {"error": "the prediction failed; the server's log says why"}


def test_serving_a_model_loads_no_training_code(run_dir: Path) -> None:
    code = (
        "import asyncio, sys\n"
        "sys.path.insert(0, 'tests')\n"
        "from helpers_serving import predict_in_process\n"
        "from core.serving.app import create_app\n"
        f"app = create_app({str(run_dir / 'model')!r})\n"
        f"response = asyncio.run(predict_in_process(app, {{'images': ('red.png', {png(COLOURS['red'])!r})}}))\n"
        "assert response.json()['predictions'][0]['top'][0]['label'] == 'red', response.text\n"
        "print(sorted(m for m in sys.modules if m.startswith('core.training')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
