"""Decode a data set's images over every core this process may use, without torch.

The image cache and ingestion's validation each decode every image; one Python loop does a few
hundred photos a second on one core, which leaves a 16-core machine waiting minutes on a
100,000-image data set. A :class:`Pool` hands chunks of images to worker processes and hears back
as each chunk is done. Below the break-even (what the items take against :data:`START_S`),
or with one usable core, the parent does the work itself: workers would cost more than they save.

Workers are fresh interpreters (``subprocess``), not forks: forking a process that runs torch's
OpenMP threads is unsafe, and ``multiprocessing``'s spawn would import the parent's ``__main__``
in every worker. This module, Pillow and NumPy start in about 0.15 s; torch would add seconds
and hundreds of megabytes. They speak JSON lines over stdin and stdout, but pixels never travel
through the pipes: :class:`Squares` writes each picture straight into a file that parent and
workers all map (the cache file on disk, or a memory file for a cache held in RAM).

A worker ignores Ctrl-C (the parent hears it and stops them all) and exits when its stdin
closes, so a parent that dies leaves no worker running for longer than one chunk.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import selectors
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

import numpy as np
from PIL import Image

from core.data.errors import IngestError
from core.data.images import read_image

WORKERS_ENV = "TRANSFER_LAB_DECODE_WORKERS"
# Images per message: progress a few times a second, and little time idle between chunks.
CHUNK = 32
# What a pool of workers costs before its first image, measured on 2 idle cores (Xeon, 2026):
# 0.15 s of CPU per worker to start Python, NumPy and Pillow, 0.2 s of wall time in all.
START_S = 0.2
ROOT = Path(__file__).resolve().parents[2]  # the folder holding the ``core`` package
BOOT = (
    "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "from core.data.decode import serve\n"
    "serve()\n"
)
Results = list[tuple[int, Any]]  # (index of the item, what the task made of it)


class Task(Protocol):
    """What a worker does to each item; ``spec()`` is how a worker rebuilds it (``from_spec``)."""

    name: ClassVar[str]

    def __call__(self, index: int, item: str) -> Any: ...
    def spec(self) -> dict[str, Any]: ...
    def fds(self) -> tuple[int, ...]: ...


@dataclass
class Squares:
    """Image ``index`` as uint8 ``[3, size, size]`` into ``array[index]``: the image cache's task.

    ``array`` is ``[N, 3, size, size]``; workers need ``fd``, a file holding it, to map it too.
    """

    name: ClassVar[str] = "squares"

    array: np.ndarray
    resample: int  # a PIL.Image.Resampling value
    fd: int | None = None

    def __call__(self, index: int, item: str) -> None:
        self.array[index] = square_pixels(Path(item), self.array.shape[-1], Image.Resampling(self.resample))

    @staticmethod
    def item_s(size: int) -> float:
        """The seconds one image takes, typically (the 256-400 pixel JPEGs of bench/scale.py):
        0.48 ms to 64 pixels, 0.78 to 128, 1.6 to 224. So at 224 pixels workers pay from ~260
        images on 2 cores (measured: 1.3x faster at 512, 0.8x at 256), ~140 on 16."""
        return 0.45e-3 + 2.4e-8 * size * size

    def spec(self) -> dict[str, Any]:
        if self.fd is None:
            raise ValueError("Squares needs the fd of a file holding its array to run in workers")
        return {"fd": self.fd, "shape": list(self.array.shape), "resample": int(self.resample)}

    def fds(self) -> tuple[int, ...]:
        return () if self.fd is None else (self.fd,)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Squares:
        return cls(mapped(spec["fd"], tuple(spec["shape"])), spec["resample"], spec["fd"])


@dataclass
class Check:
    """Decode each image fully (truncation only shows at the end) at a draft scale, as ingestion
    validates it: ``[width, height, mode, format]``, or the reason it is refused."""

    name: ClassVar[str] = "check"
    # At an eighth of the scale, 0.35 ms a JPEG: workers pay from ~1,100 images on 2 cores
    # (measured: 1.2x faster at 2,000, 0.9x at 1,024), ~600 on 16.
    ITEM_S: ClassVar[float] = 0.35e-3

    max_pixels: int
    draft: tuple[int, int]

    def __call__(self, index: int, item: str) -> list[Any] | str:
        try:
            info = read_image(Path(item), max_pixels=self.max_pixels, draft=self.draft)[1]
        except IngestError as exc:
            return str(exc)
        return [info.width, info.height, info.mode, info.format]

    def spec(self) -> dict[str, Any]:
        return {"max_pixels": self.max_pixels, "draft": list(self.draft)}

    def fds(self) -> tuple[int, ...]:
        return ()

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Check:
        return cls(spec["max_pixels"], tuple(spec["draft"]))


TASKS: dict[str, Any] = {task.name: task for task in (Squares, Check)}


def square_pixels(
    path: Path, size: int, resample: Image.Resampling = Image.Resampling.BILINEAR
) -> np.ndarray:
    """The image at ``path`` as uint8 ``[3, size, size]``: shorter side scaled to ``size``, then
    the centre square, done as one resize of the centre square (the same pixels, less work)."""
    try:
        image, _ = read_image(path, max_pixels=np.iinfo(np.int64).max, draft=(size, size))
    except IngestError as exc:
        raise IngestError(f"{path.name}: {exc} (the file changed after it was validated?)") from None
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = image.resize((size, size), resample, box=(left, top, left + side, top + side), reducing_gap=3.0)
    return np.asarray(square, dtype=np.uint8).transpose(2, 0, 1)


def usable_cores() -> int:
    """The cores this process may run on: its affinity (a container's or ``taskset``'s share),
    which ``os.cpu_count()`` ignores."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on macOS
        return os.cpu_count() or 1


def worker_cap() -> int:
    """At most this many decoding processes: the usable cores, or fewer by ``$TRANSFER_LAB_DECODE_WORKERS``."""
    cores = usable_cores() if sys.executable else 1  # embedded, with no interpreter to start: here
    text = os.environ.get(WORKERS_ENV, "").strip()
    if not text:
        return cores
    try:
        cap = int(text)
    except ValueError:
        cap = 0
    if cap < 1:
        raise ValueError(
            f"{WORKERS_ENV} must be a whole number of processes, 1 or more (1: decode in this "
            f"process alone), got {text!r}"
        )
    return min(cap, cores)


def workers_for(count: int, item_s: float) -> int:
    """How many processes should do ``count`` items of ``item_s`` seconds each: 1 means this one
    alone, which is the answer whenever starting workers would cost more time than they save."""
    workers = min(worker_cap(), math.ceil(count / CHUNK))
    if workers < 2 or count * item_s * (1 - 1 / workers) <= START_S:
        return 1
    return workers


def memory_file(nbytes: int) -> int | None:
    """A file descriptor of ``nbytes`` of RAM that workers can map, or None where the system has
    no memory files. Unlike ``/dev/shm`` (64 MiB in a default container) it is bounded only by
    memory."""
    if not hasattr(os, "memfd_create"):
        return None
    fd = os.memfd_create("transfer-lab-images", os.MFD_CLOEXEC)
    os.ftruncate(fd, nbytes)
    return fd


def mapped(fd: int, shape: tuple[int, ...]) -> np.ndarray:
    """The uint8 array of ``shape`` in file ``fd``, mapped shared: writes reach the file, and every
    process mapping it sees them."""
    nbytes = math.prod(shape)
    if nbytes == 0:
        return np.empty(shape, dtype=np.uint8)
    return np.ndarray(shape, dtype=np.uint8, buffer=mmap.mmap(fd, nbytes))


class Pool:
    """Runs ``task`` on each item :meth:`put`, in ``workers`` processes (1: in this one), and calls
    ``on_done(results)`` in this process as each chunk finishes.

    Use it as a context manager and end with :meth:`join`: leaving the block by an exception
    (Ctrl-C included) kills the workers and waits for them. A refused image raises
    :class:`IngestError` with the task's own message, as it would in this process.
    """

    def __init__(self, task: Task, workers: int, on_done: Callable[[Results], None]) -> None:
        self.task, self.on_done = task, on_done
        self._chunk = CHUNK if workers > 1 else 1
        self._count = 0
        self._pending: list[tuple[int, str]] = []
        self._queue: deque[list[tuple[int, str]]] = deque()
        self._selector = selectors.DefaultSelector()
        self._workers: list[_Worker] = []
        try:
            for _ in range(workers if workers > 1 else 0):
                self._workers.append(_Worker(task))
                self._selector.register(
                    self._workers[-1].process.stdout, selectors.EVENT_READ, self._workers[-1]
                )
        except BaseException:  # out of processes or memory: none of those started may linger
            self.__exit__()
            raise
        self._idle = list(self._workers)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for worker in self._workers:
            worker.kill()
        self._selector.close()

    def put(self, item: str) -> None:
        """Queue ``item`` (a path); it runs when its chunk fills, or at :meth:`join`."""
        self._pending.append((self._count, item))
        self._count += 1
        if len(self._pending) >= self._chunk:
            self._send()

    def join(self) -> None:
        """Wait until every item is done (each chunk's results went to ``on_done``)."""
        self._send()
        while len(self._idle) < len(self._workers):
            self._collect(timeout=None)
        for worker in self._workers:
            worker.finish()

    def _send(self) -> None:
        if not self._pending:
            return
        chunk, self._pending = self._pending, []
        if not self._workers:
            self.on_done([(index, self.task(index, item)) for index, item in chunk])
            return
        self._queue.append(chunk)
        self._dispatch()
        self._collect(timeout=0)

    def _dispatch(self) -> None:
        while self._idle and self._queue:
            self._idle.pop().send(self._queue.popleft())

    def _collect(self, timeout: float | None) -> None:
        for key, _ in self._selector.select(timeout):
            worker: _Worker = key.data
            self.on_done(worker.receive())
            self._idle.append(worker)
        self._dispatch()


class _Worker:
    """One decoding process, given one chunk at a time (so a reply is always one whole line)."""

    def __init__(self, task: Task) -> None:
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), path)))}
        # -P: the working directory is not on the path, so no file there can pose as a module.
        self.process = subprocess.Popen(
            [sys.executable, "-P", "-c", BOOT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            pass_fds=task.fds(),
            text=True,
        )
        self.chunk: list[tuple[int, str]] = []
        self._write({"task": task.name, **task.spec()})

    def send(self, chunk: list[tuple[int, str]]) -> None:
        self.chunk = chunk
        self._write(chunk)

    def receive(self) -> Results:
        """The chunk's results; raises what the worker could not do, or that it died."""
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(self._death())
        reply = json.loads(line)
        if "refused" in reply:
            raise IngestError(reply["refused"])
        if "failed" in reply:
            raise RuntimeError(f"decoding {self.chunk[reply['at']][1]} failed: {reply['failed']}")
        return [(index, result) for (index, _), result in zip(self.chunk, reply["results"], strict=True)]

    def finish(self) -> None:
        """Close its stdin, so that it exits, and reap it."""
        self.process.stdin.close()
        self.process.wait()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:  # its pipe is broken: the worker is gone, which is the point
                pass

    def _write(self, message: object) -> None:
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            raise RuntimeError(self._death()) from None

    def _death(self) -> str:
        code = self.process.wait()
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        files = (
            f"{Path(self.chunk[0][1]).name} .. {Path(self.chunk[-1][1]).name}" if self.chunk else "none yet"
        )
        return f"a decoding worker (pid {self.process.pid}) died ({how}); its images: {files}"


def serve() -> None:
    """A worker's life: rebuild the task from the first line, then answer each chunk with one
    line, until stdin closes or an item fails."""
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the replies
    spec = json.loads(sys.stdin.readline())
    task = TASKS[spec.pop("task")].from_spec(spec)
    for line in sys.stdin:
        reply = _answer(task, json.loads(line))
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
        if "results" not in reply:
            return


def _answer(task: Task, chunk: Sequence[list[Any]]) -> dict[str, Any]:
    results = []
    for at, (index, item) in enumerate(chunk):
        try:
            results.append(task(index, item))
        except IngestError as exc:
            return {"refused": str(exc)}
        except Exception as exc:  # noqa: BLE001 - the parent says what failed, with the file
            return {"failed": f"{type(exc).__name__}: {exc}", "at": at}
    return {"results": results}
