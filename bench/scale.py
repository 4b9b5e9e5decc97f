"""How Transfer Lab's data path scales with the number of images: inspect, cache, one run.

    .venv/bin/python bench/scale.py                      # 2,000, 8,000 and 32,000 images
    .venv/bin/python bench/scale.py --sizes 2000,100000  # other sizes
    .venv/bin/python bench/scale.py --quick              # 200 and 400 images: checks the script
    .venv/bin/python bench/scale.py --json               # the results as one JSON object, last

For each size it builds (once, then reuses) a zip of deterministic JPEGs of 256 to 400 pixels a
side in four classes, then measures, each in a process of its own from spawn to exit:

- ``python -m core inspect`` on a fresh home, decoding in one process and over all usable cores;
- the image cache of the training and validation images, built with one decoding process and
  with all of them (and that both hold the same pixels);
- a case-1 run of EfficientNet-Lite0 at a small image size (``python -m core train``),

with peak resident memory (the largest process's) and the disk the data took. The ratios
compare runs made minutes apart on the same machine; see bench/README.md for figures.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.data import decode  # torch-free: the children that draw the images carry no torch

DATA_VERSION = 1  # bump when the images change, so that cached zips are made again
CLASSES = ("red", "green", "blue", "grey")
# Low-amplitude grain shared by every image (a crop of it each), so JPEGs weigh what photos of
# this size do (~23 KB) without paying for fresh noise per image.
GRAIN = np.random.default_rng(0).integers(0, 24, (480, 480, 3), dtype=np.uint8)
CACHE_BUILD = """
import json, sys, time
from pathlib import Path
import numpy as np
from core.data import ImageCache, decode, ingest
dataset = ingest(sys.argv[1])
samples = dataset.train + dataset.val
started = time.perf_counter()
cache = ImageCache(samples, int(sys.argv[2]), cache_dir=Path(sys.argv[3]))
seconds = time.perf_counter() - started
pixels = cache.images.numpy()
checksum = sum(int(pixels[i : i + 512].sum(dtype=np.int64)) for i in range(0, len(pixels), 512))
print(json.dumps({"seconds": seconds, "images": len(cache), "on_disk": cache.on_disk, "checksum": checksum,
                  "workers": decode.workers_for(len(samples), decode.Squares.item_s(int(sys.argv[2])))}))
"""


def note(text: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------- the data


def picture(index: int) -> tuple[str, bytes]:
    """Image ``index``: its name in the zip and its JPEG bytes, the same on every machine."""
    rng = np.random.default_rng(index)
    label = index % len(CLASSES)
    width, height = (int(side) for side in rng.integers(256, 401, 2))
    blotches = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    if label < 3:  # the class is a colour cast, learnable but not trivial through the blotches
        blotches[..., label] = np.maximum(blotches[..., label], 150)
    else:
        blotches[:] = blotches.mean(axis=2, keepdims=True).astype(np.uint8)
    pixels = np.asarray(Image.fromarray(blotches).resize((width, height), Image.Resampling.BILINEAR)).copy()
    x, y = (int(offset) for offset in rng.integers(0, 80, 2))
    pixels += GRAIN[y : y + height, x : x + width]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
    return f"{CLASSES[label]}/{index:06d}.jpg", buffer.getvalue()


def data_zip(count: int, folder: Path) -> Path:
    """The zip of ``count`` images, made once under ``folder`` (in parallel) and then reused."""
    path = folder / f"images-v{DATA_VERSION}-{count}.zip"
    if path.exists():
        return path
    note(f"{count:,} images: generating {path}")
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    partial = path.with_suffix(".partial")
    # fork: this process holds no threads and no torch; the children only draw and encode
    with (
        multiprocessing.get_context("fork").Pool(decode.usable_cores()) as pool,
        zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as archive,  # JPEGs do not deflate
    ):
        for name, data in pool.imap(picture, range(count), chunksize=64):
            archive.writestr(name, data)
        pool.close()  # the workers end on their own: leaving the block would stop them by SIGTERM
        pool.join()
    partial.replace(path)
    note(f"{count:,} images: generated in {time.perf_counter() - started:.1f} s")
    return path


# ------------------------------------------------------------------------------ the measurements


def spawn(command: list[str], home: Path, workers: int | None = None) -> dict:
    """Run ``command`` to its end in its own process: wall seconds, peak RSS (MiB, the largest
    process of its tree, workers included) and its stdout."""
    env = {**os.environ, "TRANSFER_LAB_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop(decode.WORKERS_ENV, None)
    if workers is not None:
        env[decode.WORKERS_ENV] = str(workers)
    with tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        out = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)  # before Popen reaps it: its rusage comes with it
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        process.stdout.close()
        if process.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(command[:5])} failed ({process.returncode}): {err.read()[-2000:]}")
    cpu = usage.ru_utime + usage.ru_stime  # its own and its reaped children's: the workers too
    return {"wall_s": wall, "cpu_s": cpu, "peak_mib": usage.ru_maxrss / 1024, "stdout": out}


def inspect(data: Path, home: Path, workers: int | None) -> dict:
    shutil.rmtree(home, ignore_errors=True)
    run = spawn([sys.executable, "-m", "core", "inspect", str(data), "--json"], home, workers)
    report = json.loads(run["stdout"])
    return {
        "seconds": run["wall_s"],
        "cpu_s": run["cpu_s"],
        "peak_mib": run["peak_mib"],
        "images": report["num_images"],
    }


def cache_build(data: Path, home: Path, size: int, workers: int | None, scratch: Path) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="cache-", dir=scratch))
    try:
        run = spawn([sys.executable, "-c", CACHE_BUILD, str(data), str(size), str(folder)], home, workers)
        built = json.loads(run["stdout"])
        return {**built, "cpu_s": run["cpu_s"], "peak_mib": run["peak_mib"], "disk_mib": disk_mib(folder)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def case1(data: Path, home: Path, size: int, epochs: int) -> dict:
    out = home / "runs" / f"scale-{time.time_ns()}"
    command = [sys.executable, "-m", "core", "train", str(data), "--backbone", "efficientnet_lite0",
               "--case", "1", "--epochs", str(epochs), "--image-size", str(size), "--out", str(out), "--json"]  # fmt: skip
    run = spawn(command, home)
    metrics = json.loads(run["stdout"][run["stdout"].index("{") :])
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    decoding = [e for e in events if e.get("type") == "progress" and e.get("phase") == "decoding"]
    return {"seconds": run["wall_s"], "peak_mib": run["peak_mib"], "accuracy": metrics["best_val_accuracy"],
            "decode_images_per_s": decoding[-1]["images_per_s"] if decoding else None}  # fmt: skip


def disk_mib(path: Path) -> float:
    """What ``path`` occupies on disk (allocated blocks, like ``du``)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except OSError:
                continue
    return total / (1 << 20)


def measure(count: int, args: argparse.Namespace, scratch: Path) -> dict:
    data = data_zip(count, args.data_dir)
    home = scratch / f"home-{count}"

    def step(label: str, run: Callable[[], dict], repeats: int = args.repeats) -> dict:
        """The fastest of ``repeats`` runs: the machine's noise out, the work in."""
        note(f"{count:,} images: {label}...")
        result = min((run() for _ in range(repeats)), key=lambda done: done["seconds"])
        cpu = f", {result['cpu_s']:.1f} s of CPU" if "cpu_s" in result else ""
        note(f"{count:,} images: {label}: {result['seconds']:.1f} s{cpu}")
        return result

    one = step("inspect, one process", lambda: inspect(data, home, 1))
    every = step("inspect, all cores", lambda: inspect(data, home, None))  # leaves the data set stored
    alone = step("cache build, one process", lambda: cache_build(data, home, args.image_size, 1, scratch))
    parallel = step("cache build, all cores", lambda: cache_build(data, home, args.image_size, None, scratch))
    if parallel["checksum"] != alone["checksum"]:
        raise RuntimeError(
            f"{count} images: the caches differ ({parallel['checksum']} != {alone['checksum']})"
        )
    run = step(
        f"case-1 run, {args.epochs} epoch(s)", lambda: case1(data, home, args.image_size, args.epochs), 1
    )
    return {
        "images": count,
        "zip_mib": data.stat().st_size / (1 << 20),
        "inspect_1_s": one["seconds"],
        "inspect_s": every["seconds"],
        "inspect_ratio": one["seconds"] / every["seconds"],
        "inspect_1_cpu_s": one["cpu_s"],
        "inspect_cpu_s": every["cpu_s"],
        "inspect_peak_mib": max(one["peak_mib"], every["peak_mib"]),
        "cache_1_s": alone["seconds"],
        "cache_s": parallel["seconds"],
        "cache_ratio": alone["seconds"] / parallel["seconds"],
        "cache_1_cpu_s": alone["cpu_s"],
        "cache_cpu_s": parallel["cpu_s"],
        "cache_workers": parallel["workers"],
        "cache_on_disk": parallel["on_disk"],
        "cache_images_per_s": parallel["images"] / parallel["seconds"],
        "cache_peak_mib": parallel["peak_mib"],
        "same_pixels": True,
        "case1_s": run["seconds"],
        "case1_accuracy": run["accuracy"],
        "case1_decode_images_per_s": run["decode_images_per_s"],
        "case1_peak_mib": run["peak_mib"],
        "disk_mib": disk_mib(home) + parallel["disk_mib"],
    }


# ----------------------------------------------------------------------------------- the report


def table(rows: list[dict]) -> str:
    lines = [
        (
            "| images | zip | inspect 1 proc / all | ratio | cache 1 proc / all (procs) | ratio "
            "| cache images/s | case-1 run | accuracy | peak MiB inspect / cache / run | disk |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        where = "disk" if row["cache_on_disk"] else "RAM"
        lines.append(
            f"| {row['images']:,} | {row['zip_mib']:.0f} MiB | {row['inspect_1_s']:.1f} / {row['inspect_s']:.1f} s "
            f"| {row['inspect_ratio']:.2f}x | {row['cache_1_s']:.1f} / {row['cache_s']:.1f} s "
            f"({row['cache_workers']}, {where}) | {row['cache_ratio']:.2f}x | {row['cache_images_per_s']:.0f} "
            f"| {row['case1_s']:.1f} s | {row['case1_accuracy']:.1%} "
            f"| {row['inspect_peak_mib']:.0f} / {row['cache_peak_mib']:.0f} / {row['case1_peak_mib']:.0f} "
            f"| {row['disk_mib']:.0f} MiB |"
        )
    return "\n".join(lines)


def machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            model = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": model, "usable_cores": decode.usable_cores(), "load_before": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", help="numbers of images, comma-separated (default 2000,8000,32000)")
    parser.add_argument(
        "--quick", action="store_true", help="200 and 400 images, 1 epoch at 64 px: checks the script"
    )
    parser.add_argument(
        "--image-size", type=int, help="the cache's and the run's image size (default 128; quick 64)"
    )
    parser.add_argument("--epochs", type=int, help="epochs of the case-1 run (default 3; quick 1)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object, last")
    parser.add_argument(
        "--repeats", type=int, default=1, help="inspect and cache builds: the fastest of this many"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "transfer-lab-scale",
        help="where the generated zips are kept between runs",
    )  # fmt: skip
    args = parser.parse_args()
    sizes = args.sizes or ("200,400" if args.quick else "2000,8000,32000")
    counts = [int(size) for size in sizes.split(",")]
    args.image_size = args.image_size or (64 if args.quick else 128)
    args.epochs = args.epochs or (1 if args.quick else 3)
    about = machine()
    note(f"{about['cpu']}, {about['usable_cores']} usable cores, load {about['load_before'][0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="transfer-lab-scale-") as scratch:
        rows = [measure(count, args, Path(scratch)) for count in counts]
    about["load_after"] = os.getloadavg()
    print(table(rows), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        result = {"quick": args.quick, "image_size": args.image_size, "epochs": args.epochs, "repeats": args.repeats,
                  "machine": about,
                  "sizes": [{key: round(value, 4) if isinstance(value, float) else value
                             for key, value in row.items()} for row in rows]}  # fmt: skip
        print(json.dumps(result))


if __name__ == "__main__":
    main()
