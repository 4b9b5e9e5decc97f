"""Under torchrun: two gloo processes share the images, and rank 0 alone writes the run directory.

Frozen bodies (case 1) share the feature pass and rank 0 fits the head on every rank's features;
trained bodies (case 3) share each epoch's batches through DistributedDataParallel.

Run by pytest, this file starts ``torchrun --nproc-per-node 2`` on itself; run by torchrun, its
``__main__`` block is one rank: it records which training samples it sees and forbids rank 1
every write into the run directory, then trains.
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_jobs import DIGITS_PLAN, digits_folder

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def torchrun(plan: dict, run_dir: Path, log_dir: Path, lab_home: Path) -> list[dict]:
    """Two gloo ranks training ``plan``; what each saw."""
    run_dir.mkdir()
    log_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRANSFER_LAB_HOME": str(lab_home)}
    completed = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", __file__, str(run_dir), str(log_dir), json.dumps(plan)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    return [json.loads((log_dir / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def alone(plan: dict, run_dir: Path) -> float:
    """The same plan in one process, with the same global batch as two ranks."""
    import torch

    from core.training.plan import Plan
    from core.training.train import fit

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun gives each rank
    try:
        single = Plan.from_dict({**plan, "batch_size": 2 * plan["batch_size"]})
        return fit(single, run_dir, lambda event: None)["best_val_accuracy"]
    finally:
        torch.set_num_threads(threads)


def assert_one_stream_from_rank_0(seen: list[dict], run_dir: Path) -> float:
    from core.training.events import read_events

    assert seen[1]["writes"] == []
    events = read_events(run_dir)
    epochs = [e.epoch for e in events if e.type == "epoch"]
    assert epochs == list(range(1, len(epochs) + 1)) and epochs  # one stream, not two
    assert [e.type for e in events].count("done") == 1
    assert (run_dir / "model" / "model.pt2").is_file()
    return json.loads((run_dir / "metrics.json").read_text())["best_val_accuracy"]


def test_two_processes_share_the_feature_pass_and_rank_0_fits_the_head(
    tmp_path: Path, lab_home: Path
) -> None:
    plan = {**DIGITS_PLAN, "data": str(digits_folder(tmp_path / "digits"))}
    seen = torchrun(plan, tmp_path / "run", tmp_path / "seen", lab_home)
    embedded = seen[0]["share"] + seen[1]["share"]
    assert sorted(embedded) == list(range(seen[0]["train_size"]))  # every image once, by one rank
    assert seen[0]["share"] and seen[1]["share"]
    two = assert_one_stream_from_rank_0(seen, tmp_path / "run")
    one = alone(plan, tmp_path / "alone")
    assert two > 0.5 and one > 0.5, (one, two)  # chance: 0.1
    assert abs(two - one) <= 0.05, (one, two)  # the same head, fitted on the same features


def test_two_processes_share_each_epoch_and_rank_0_alone_writes(tmp_path: Path, lab_home: Path) -> None:
    plan = {**DIGITS_PLAN, "data": str(digits_folder(tmp_path / "digits", classes="0123")), "case": 3,
            "image_size": 32, "lr": 3e-3, "precision": "fp32"}  # fmt: skip
    seen = torchrun(plan, tmp_path / "run", tmp_path / "seen", lab_home)
    for epoch in ("0", "1"):
        both = seen[0]["epochs"][epoch] + seen[1]["epochs"][epoch]
        assert sorted(both) == list(range(seen[0]["train_size"]))  # every sample once, none twice
        assert seen[0]["epochs"][epoch] and seen[1]["epochs"][epoch]
    two = assert_one_stream_from_rank_0(seen, tmp_path / "run")
    one = alone(plan, tmp_path / "alone")
    assert abs(two - one) <= 0.15, (one, two)


def test_a_plan_with_two_workers_trains_under_torchrun_inside_its_worker(
    tmp_path: Path, lab_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from helpers_jobs import wait_for_state

    from core import jobs
    from core.training.events import read_events

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    plan = {
        **DIGITS_PLAN,
        "data": str(digits_folder(tmp_path / "digits", classes="0123")),
        "workers": 2,
        "device": "cpu",
    }
    run_id = jobs.submit(plan)
    final = wait_for_state(run_id, "done", timeout_s=240)

    run_dir = lab_home / "runs" / run_id
    assert final.message == "" and final.backend == "local"
    events = read_events(run_dir)
    data = next(e for e in events if e.type == "data")
    embedded = [e.total for e in events if e.type == "progress" and e.phase == "features"]
    assert set(embedded) == {data.train // 2 + data.val}  # rank 0 embedded its half of the training images
    assert [e.type for e in events].count("done") == 1  # one stream: rank 0's
    assert [e.epoch for e in events if e.type == "epoch"] == [1, 2]
    assert json.loads((run_dir / "metrics.json").read_text())["best_val_accuracy"] > 0.5  # chance: 0.25


def _one_rank(run_dir: Path, log_dir: Path, plan_json: str) -> None:
    """One torchrun rank: train, noting the samples seen, and (rank 1) refusing run-dir writes."""
    from core.training import setup, train
    from core.training.device import ranks_from_env
    from core.training.events import EventLog
    from core.training.plan import Plan

    ranks = ranks_from_env()
    record: dict = {"epochs": {}, "writes": []}
    shares: list[list[int]] = []

    def shard(count, ranks_, seed):
        share = real_shard(count, ranks_, seed)
        record["train_size"], record["share"] = count, share
        shares.append(share)
        return share

    def epoch_batches(count, batch_size, seed, epoch):
        batches = real_batches(count, batch_size, seed, epoch)
        record["epochs"][epoch] = [shares[0][i] for b in batches for i in b.tolist()]
        return batches

    real_shard, real_batches = setup.shard, train.epoch_batches
    setup.shard, train.epoch_batches = shard, epoch_batches
    if not ranks.is_main:
        _forbid_writes_under(run_dir, record["writes"])
    try:
        train.fit(
            Plan.from_dict(json.loads(plan_json)), run_dir, EventLog(run_dir) if ranks.is_main else print
        )
    finally:
        (log_dir / f"rank{ranks.rank}.json").write_text(json.dumps(record))


def _forbid_writes_under(folder: Path, writes: list[str]) -> None:
    folder = str(folder.resolve())
    real_open, real_os_open = builtins.open, os.open

    def guard(path: object, writing: bool) -> None:
        if writing and os.path.abspath(str(path)).startswith(folder):
            writes.append(str(path))
            raise PermissionError(f"rank 1 tried to write {path}")

    def checked_open(file, mode="r", *args, **kwargs):
        guard(file, any(c in mode for c in "wax+"))
        return real_open(file, mode, *args, **kwargs)

    def checked_os_open(path, flags, *args, **kwargs):
        guard(path, bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)))
        return real_os_open(path, flags, *args, **kwargs)

    builtins.open, os.open = checked_open, checked_os_open
    for name in ("mkdir", "rename", "replace", "unlink"):
        original = getattr(os, name)

        def checked(path, *args, _original=original, **kwargs):
            guard(path, True)
            return _original(path, *args, **kwargs)

        setattr(os, name, checked)


if __name__ == "__main__":
    _one_rank(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
elif shutil.which(str(TORCHRUN)) is None:
    pytest.skip(f"no torchrun next to {sys.executable}", allow_module_level=True)
