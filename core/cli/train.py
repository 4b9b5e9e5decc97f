"""``python -m core train DATA --backbone NAME --case N --epochs E --out RUN_DIR``: one run, here.

Progress is a bar on a terminal and plain lines otherwise, drawn from the same events the run
writes to ``events.jsonl``. The run keeps ``status.json`` as a worker would, so that the app lists
it with its own runs. Under ``torchrun`` every rank runs this command; rank 0 alone writes the run
directory and prints.

``--submit`` trains elsewhere instead: the plan goes to the configured jobs backend (a local
worker, or a Ray job under ``TRANSFER_LAB_BACKEND=ray``), and this command follows the run's
events until it ends; Ctrl-C cancels it. ``--workers N`` (with ``--submit``) trains on N
processes: torchrun on the local backend, Ray Train on Ray.

``--mlflow URI`` (or ``MLFLOW_TRACKING_URI``) and ``--tensorboard DIR`` mirror the run to the
team's trackers as it trains (``core.tracking``); a tracker that is down costs a warning line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.cli.display import RunDisplay
    from core.jobs.run import Run, StatusKeeper
    from core.jobs.table import RunRow
    from core.training.events import EventReader
    from core.training.plan import Plan

from core.cli import add_owner_argument, say

HELP = "train a model on a zip or folder of images and write a complete run directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = _WithDefaults
    parser.add_argument("data", metavar="DATA", help="a .zip of images or a folder of class folders")
    parser.add_argument("--backbone", help="torchvision model name (default: one with weights on disk)")
    parser.add_argument(
        "--case",
        type=int,
        choices=(1, 2, 3, 4),
        default=1,
        help="1 feature extraction, 2 truncated, 3 fine-tuning, 4 fine-tuning or from scratch",
    )
    parser.add_argument("--epochs", type=int, default=10, help="passes over the training images")
    parser.add_argument("--out", type=Path, metavar="RUN_DIR", help="the run directory (default: a new run)")
    parser.add_argument(
        "--weights", default="imagenet", help="imagenet, none (random init) or a state_dict path"
    )
    parser.add_argument("--cut", help="case 2: the stage after which to cut (default: the family's)")
    parser.add_argument(
        "--tune-through", metavar="STAGE", help="case 3: train the body only through this stage (surgical)"
    )
    parser.add_argument("--image-size", type=int, help="input side in pixels (default: the backbone's)")
    parser.add_argument(
        "--batch-size",
        type=_batch_size,
        default="auto",
        help="images per step, or auto: 32 on a CPU, measured on a GPU (cases 3, 4)",
    )
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate of the new head")
    parser.add_argument(
        "--body-lr",
        type=float,
        help="learning rate of pre-trained layers (cases 3, 4; default: a tenth of --lr)",
    )
    parser.add_argument(
        "--augment", choices=("none", "light", "strong"), default="light", help="random crops, flips, colour"
    )
    parser.add_argument(
        "--progressive-resizing",
        choices=("on", "off"),
        default="on",
        help="cases 3, 4: early epochs at a smaller image size, the last ones at the full size",
    )
    parser.add_argument("--seed", type=int, default=0, help="for the split, the init and the batches")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto", help="autocast precision"
    )
    parser.add_argument(
        "--patience", type=int, default=5, help="stop after this many epochs without progress (0: never)"
    )
    parser.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    parser.add_argument(
        "--submit",
        action="store_true",
        help="run it through the jobs backend (local worker or Ray) and follow it",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="with --submit: processes training the run together"
    )
    parser.add_argument(
        "--mlflow",
        metavar="URI",
        help="mirror the run to this MLflow tracking server (default: $MLFLOW_TRACKING_URI)",
    )
    parser.add_argument(
        "--tensorboard", type=Path, metavar="DIR", help="also write TensorBoard event files to DIR/<run id>"
    )
    add_owner_argument(parser)


def _batch_size(text: str) -> int | str:
    """``auto`` or a whole number; the plan checks its range."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither auto nor a whole number") from None


class _WithDefaults(argparse.HelpFormatter):
    """``--help`` names every default that its help does not already give."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


def run(args: argparse.Namespace) -> int:
    from core.cli import CliError
    from core.cli.display import RunDisplay
    from core.errors import one_line
    from core.jobs.run import run_events
    from core.models import backbones
    from core.tracking import TrackedRun, Tracking, mirrored
    from core.training.device import ranks_from_env
    from core.training.plan import Plan
    from core.training.train import fit

    plan = Plan(
        data=str(Path(args.data).resolve()),
        backbone=args.backbone or "",
        case=args.case,
        cut=args.cut,
        tune_through=args.tune_through,
        weights=args.weights,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        body_lr=args.body_lr,
        image_size=args.image_size,
        augment=args.augment,
        progressive_resizing=args.progressive_resizing,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        patience=args.patience,
        workers=args.workers,
    ).resolve(backbones.card)
    if args.submit:
        return _submitted(plan, args)
    if plan.workers > 1:
        raise CliError(f"--workers {plan.workers} needs --submit (or run every process under torchrun)")
    ranks = ranks_from_env()
    run = _run_folder(args.out)
    if ranks.is_main:
        _start(run, plan, args.owner)
    # Ranks other than 0 emit nothing, so they mirror nothing either.
    tracking = Tracking.configured(args.mlflow, args.tensorboard) if ranks.is_main else Tracking()
    tracked, display = TrackedRun(run.directory, args.owner), RunDisplay(sys.stderr)
    try:
        with (
            _kept(run) if ranks.is_main else contextlib.nullcontext() as keeper,
            mirrored(tracking, tracked, run_events(run, keeper, display)) as emit,
        ):
            result = fit(plan, run.directory, emit)
    except Exception as exc:  # a failed run: one line for people, the status for the app
        raise CliError(f"training failed: {one_line(exc)}") from exc
    finally:
        display.close()
    if not ranks.is_main:
        return 0
    if args.json:
        print(json.dumps(result, indent=2, allow_nan=False))
    else:
        _summary(result, run.directory, args)
    return 0


def _submitted(plan: Plan, args: argparse.Namespace) -> int:
    """Submit ``plan`` through the configured jobs backend and follow its events to the end."""
    from core import jobs
    from core.cli import CliError
    from core.cli.display import RunDisplay
    from core.errors import TransferLabError
    from core.jobs import backend
    from core.training.events import EventReader

    if args.out is not None:
        raise CliError("--out and --submit do not go together: a submitted run lives under runs/")
    if args.mlflow or args.tensorboard:
        raise CliError(
            "--mlflow and --tensorboard mirror a run trained here: a submitted run goes to the "
            "MLflow server its worker's MLFLOW_TRACKING_URI names"
        )
    try:
        run_id = jobs.submit(plan.to_dict())
    except TransferLabError as exc:
        raise CliError(str(exc)) from exc
    run = jobs.Run.open(run_id)
    say(f"submitted run {run_id} ({backend.of_run(run.status()).name})", file=sys.stderr)
    display, reader = RunDisplay(sys.stderr), EventReader(run.directory)
    try:
        final = _follow(run_id, reader, display)
    except KeyboardInterrupt:
        jobs.cancel(run_id)
        raise CliError(f"run {run_id} cancelled") from None
    finally:
        display.close()
    if final.state is not jobs.RunState.DONE:
        raise CliError(f"run {run_id} {final.state}: {final.message}")
    result = run.metrics() or {}
    if args.json:
        print(json.dumps(result, indent=2, allow_nan=False))
    else:
        _summary(result, run.directory, args)
    return 0


def _follow(run_id: str, reader: EventReader, display: RunDisplay, poll_s: float = 1.0) -> RunRow:
    """Draw the run's new events until its status is final; the status is settled with its
    backend at each poll, so a worker that died ends the wait."""
    from core import jobs

    while True:
        current = jobs.reconcile(run_id)
        for event in reader.new_events():
            display(event)
        if current.state.final:
            return current
        time.sleep(poll_s)


def _run_folder(out: Path | None) -> Run:
    """``--out``, or a new run under ``runs/`` where the app lists it; checked before any work."""
    from core import storage
    from core.cli import CliError
    from core.jobs.run import Run, is_run_id, new_run_id

    run = Run((out or storage.runs_dir() / new_run_id()).resolve())
    if run.directory.exists() and not run.directory.is_dir():
        raise CliError(f"--out {run.directory} is a file, not a folder; choose a new folder")
    if run.directory.parent == storage.runs_dir() and not is_run_id(run.id):
        raise CliError(
            f"--out {run.id!r} under {storage.runs_dir()} must be named with letters, digits, '.', '_' "
            "or '-' (at most 100), so that the app can list it"
        )
    if run.plan_file.exists():
        raise CliError(f"{run.directory} already holds a run; choose another --out")
    return run


def _start(run: Run, plan: Plan, owner: str) -> None:
    from core.jobs.run import RunRecord
    from core.storage import write_json

    write_json(run.plan_file, plan.to_dict())
    name = Path(plan.data).name
    run.write_record(RunRecord(owner=owner, dataset_name=name, created=time.time()))


@contextlib.contextmanager
def _kept(run: Run) -> Iterator[StatusKeeper]:
    """The run's status kept as a worker keeps it: ``running`` while the block runs, then
    ``done``, ``failed`` with the error's message, or ``cancelled`` on Ctrl-C.

    Meanwhile the run holds ``worker.lock`` and stamps ``heartbeat``, which is how the app tells
    a live run from a dead one: without them, the first page to list the runs would mark this
    one failed.
    """
    from core.cli import CliError
    from core.jobs.run import StatusKeeper

    keeper = StatusKeeper.take(run)
    if keeper is None:
        raise CliError(f"another process is training in {run.directory}")
    with keeper:
        keeper.update(pid=os.getpid(), submitted=time.time())
        with keeper.beating(), keeper.outcome():
            keeper.begin()
            yield keeper


def _summary(result: dict, out: Path, args: argparse.Namespace) -> None:
    """The result in a few lines; the last says whether the run worked, and if not, what to try."""
    from core.training import outcome

    judged = outcome.judge_metrics(result)
    if "test" in result:
        say(f"test accuracy {result['test']['accuracy']:.1%}")
    say(f"run directory: {out}")
    if judged.suggest == outcome.FROM_SCRATCH:
        say(
            f"to train from scratch: python -m core train {args.data} --case 4 --weights none "
            f"--backbone {result['plan']['backbone']} --epochs {args.epochs}"
        )
    say(f"{judged.advice} (best epoch {result['best_epoch']})" if judged.worked else judged.advice)
