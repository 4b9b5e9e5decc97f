"""The prediction service's speed: requests/s and p50/p95 latency, one client at a time and eight.

    .venv/bin/python bench/serve.py [--model efficientnet_lite0] [--requests 200] [--quick]

Exports the backbone with a 4-class head (random weights: speed does not depend on them) and
starts ``python -m core serve`` on it, as a user would, on 127.0.0.1. Each request sends one
320x240 JPEG. "batch 1" is one client sending its requests one after another, so each forward
pass holds one image; "concurrency 8" is eight such clients at once, whose requests the service
batches (the mean batch it ran is reported from ``/health``). Client and server share the
machine's cores, as they would behind a proxy on one host: the figures are what a caller on the
same machine sees, the client's own cost included. The first line names the CPU; the last is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import hostinfo

from core.artifacts.export import export_model
from core.models.adapt import build_model
from core.models.backbones import resolve

LABELS = ["a", "b", "c", "d"]
WARM_UP = 8  # requests before timing: the first forwards build their kernels


def exported(model: str, folder: Path) -> Path:
    backbone = resolve(model)
    network = build_model(backbone, case=1, num_classes=len(LABELS), weights="none").eval()
    export_model(network, backbone.preprocess, LABELS, folder / "model")
    return folder


def photo() -> bytes:
    """A 320x240 JPEG of smooth colour, about the size and cost to decode of a phone thumbnail."""
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize(
        (320, 240), Image.BILINEAR
    )
    out = io.BytesIO()
    small.save(out, "JPEG", quality=90)
    return out.getvalue()


def started_service(run: Path, port: int, max_wait_ms: float, log: io.TextIOBase) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "core", "serve", str(run), "--port", str(port), "--max-wait-ms", str(max_wait_ms)],
        cwd=ROOT, env={**os.environ, "TRANSFER_LAB_HOME": str(run.parent / "home")}, stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with code {process.returncode}; see {log.name}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise TimeoutError("the service did not answer /health in 300 s")


def cpu_seconds(pid: int) -> float:
    """The CPU time process ``pid`` has used (user and system): unlike wall time, barely moved
    by other work on a shared machine, unless that work starves it of cache."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(url: str, pid: int, image: bytes, clients: int, requests: int) -> dict[str, float]:
    """``clients`` sending ``requests`` in all, each waiting for its answer before the next."""
    latencies: list[float] = []

    async def client(http: httpx.AsyncClient, count: int) -> None:
        for _ in range(count):
            started = time.perf_counter()
            response = await http.post("/predict", files={"images": ("photo.jpg", image)})
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)

    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        await asyncio.gather(*(client(http, WARM_UP // clients or 1) for _ in range(clients)))
        latencies.clear()
        before, cpu = (await http.get("/health")).json(), cpu_seconds(pid)
        started = time.perf_counter()
        await asyncio.gather(*(client(http, requests // clients) for _ in range(clients)))
        wall = time.perf_counter() - started
        after, cpu = (await http.get("/health")).json(), cpu_seconds(pid) - cpu
    cuts = statistics.quantiles(latencies, n=20)
    return {
        "clients": clients,
        "requests_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p95_ms": round(cuts[18] * 1000, 1),
        "server_cpu_ms": round(cpu / len(latencies) * 1000, 1),
        "mean_batch": round(
            (after["inputs"] - before["inputs"]) / max(after["batches"] - before["batches"], 1), 2
        ),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0", help="backbone (default efficientnet_lite0)")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per setting (default 200)")
    parser.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="the service's batching wait (default 5)"
    )
    parser.add_argument("--quick", action="store_true", help="40 requests per setting: checks the script")
    args = parser.parse_args()
    requests = 40 if args.quick else args.requests
    print(hostinfo.describe(), file=sys.stderr)
    with tempfile.TemporaryDirectory() as folder:
        run = exported(args.model, Path(folder) / "run")
        port = free_port()
        with open(Path(folder) / "serve.log", "w") as log:
            service = started_service(run, port, args.max_wait_ms, log)
            try:
                url = f"http://127.0.0.1:{port}"
                rows = [
                    asyncio.run(measure(url, service.pid, photo(), clients, requests)) for clients in (1, 8)
                ]
            finally:
                service.terminate()
                service.wait(timeout=30)
    print(f"{args.model}, max wait {args.max_wait_ms:g} ms, {requests} requests per setting", file=sys.stderr)
    print(
        "| clients | requests/s | p50 ms | p95 ms | server CPU ms / request | mean batch |\n|---|---|---|---|---|---|",
        file=sys.stderr,
    )
    for row in rows:
        print(
            f"| {row['clients']} | {row['requests_per_s']} | {row['p50_ms']} | {row['p95_ms']} "
            f"| {row['server_cpu_ms']} | {row['mean_batch']} |",
            file=sys.stderr,
        )
    print(
        json.dumps({"machine": hostinfo.describe(), "model": args.model, "quick": args.quick, "rows": rows})
    )


if __name__ == "__main__":
    main()
