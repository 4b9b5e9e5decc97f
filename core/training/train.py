"""One training run, end to end: data, model surgery, the epochs, the best checkpoint, the files.

``run(run_dir, emit)`` is what the worker calls; ``fit(plan, run_dir, emit)`` what the CLI calls.
Both report through ``emit`` (``BatchEnd``, ``EpochEnd``, ``RunWarning``, ``RunDone``) and raise
with a readable message on failure. The same code runs under ``torchrun``: every rank trains its
share of the images with DistributedDataParallel, and rank 0 alone evaluates, emits and writes.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from core.artifacts.export import export_model, portable_copy
from core.artifacts.model_card import write_model_card
from core.artifacts.predict import Predictor
from core.data import Dataset, Sample, ingest
from core.errors import TransferLabError
from core.models import backbones
from core.models.adapt import aux_weight
from core.models.runtime import Choice, Engine
from core.storage import RunFiles, read_json, write_json
from core.training import head, metrics, outcome, setup
from core.training.batch_size import DEFAULT_BATCH_SIZE, BatchChoice, choose_batch_size, lr_scale
from core.training.batches import FeatureSource, ResizingSource
from core.training.device import Accelerator, Ranks, accelerator, ranks_from_env
from core.training.events import (
    BatchEnd,
    DataReady,
    Emit,
    EpochEnd,
    Event,
    PhaseStarted,
    RunDone,
    RuntimeChosen,
    RunWarning,
)
from core.training.loop import (
    Diverged,
    Optimisation,
    epoch_batches,
    evaluate,
    fresh_batch_norm_statistics,
    halve_batch_on_oom,
    lr_at,
    shard,
    train_one_epoch,
)
from core.training.plan import AUTO, Plan
from core.training.setup import Setup
from core.training.stages import Stage, head_lr, optimizer_for, stage_groups, stages
from core.training.suspects import OUT_OF_FOLD, VALIDATION, Suspects, find_suspects

# A tie in validation accuracy counts as progress only if the loss falls by at least this much.
LOSS_MIN_DELTA = 1e-4
# At most four progress lines a second, and every epoch's first and last: each is a read of the
# device's running sums, the one point where the CPU waits for the GPU to catch up.
BATCH_EVENT_INTERVAL_S = 0.25


class TrainingError(TransferLabError, RuntimeError):
    """A run that cannot go on, with a message that says what to change."""


def run(run_dir: Path, emit: Emit) -> dict[str, Any]:
    """Train ``run_dir/plan.json``; write ``metrics.json`` and ``model/``; return the metrics."""
    files = RunFiles(Path(run_dir))
    data = read_json(files.plan_file)
    if data is None:
        raise TrainingError(f"{run_dir} has no {files.plan_file.name}")
    return fit(Plan.from_stored(data), files.directory, emit)


def fit(plan: Plan, run_dir: Path, emit: Emit) -> dict[str, Any]:
    """Train ``plan``, writing the run directory's metrics and model; return the metrics."""
    plan = plan.resolve(backbones.card)
    ranks = ranks_from_env()
    accel = accelerator(plan.device, plan.precision, ranks.local_rank)
    if not ranks.is_main:
        emit = _discard
    with _process_group(ranks, accel):
        _seed_everything(plan.seed)
        dataset = _ingest(plan, ranks)
        emit(_data_ready(dataset))
        training = Training(setup.build(plan, dataset, accel, ranks), dataset, emit)
        training.train()
        result = training.finish(Path(run_dir)) if ranks.is_main else {}
    emit(RunDone(best_val_accuracy=training.best_accuracy))
    return result


class Training:
    """One run between its set-up and its result: batch sources, the epochs, the best state."""

    def __init__(self, setup: Setup, dataset: Dataset, emit: Emit) -> None:
        self.setup, self.plan, self.emit = setup, setup.plan, emit
        self.accel, self.ranks = setup.accel, setup.ranks
        # The feature pass's batch (cases 1, 2) until the training batch is chosen, from the sources.
        self.batch_size = DEFAULT_BATCH_SIZE if self.plan.batch_size == AUTO else self.plan.batch_size
        self.warnings: list[str] = []
        self.history: list[dict[str, float]] = []
        self.best_accuracy, self.best_loss, self.best_epoch = -1.0, float("inf"), -1
        self.train_samples, self.val_samples, self.test_samples = dataset.train, dataset.val, dataset.test
        self.data_report = dataset.report
        if not dataset.val:
            raise TrainingError("the validation split is empty: add images or raise val_fraction")
        feature_batch = self.batch_size
        sources = setup.sources(dataset, emit, self._retry_on_oom)
        self.train_source, self.val_source, self.test_source = sources.train, sources.val, sources.test
        self.batch = self._choose_batch()
        if self.batch_size == feature_batch:  # else the feature pass ran out of memory: keep its halving
            self.batch_size = self.batch.size
        if setup.schedule.progressive:  # after choosing the batch, which must fit at the full size
            self.train_source = ResizingSource(self.train_source, setup.schedule)
        self.runtimes: dict[str, dict[str, Any]] = {}
        if sources.features_runtime is not None:
            self._ran("features", sources.features_runtime)
        self.best_state = copy.deepcopy(self.setup.trainable.state_dict())
        self.head_choice: head.Choice | None = None
        self.suspects: Suspects | None = None

    # -- the epochs ------------------------------------------------------------------------------

    def train(self) -> None:
        """Every stage's epochs, each followed by validation, until the last or an early stop."""
        if self.setup.frozen is not None:
            self._fit_head()
            return
        self.emit(PhaseStarted(phase="training"))
        for stage in stages(self.plan):
            opt = self._optimisation(stage)
            for epoch in stage.epochs:
                started = time.perf_counter()
                train_loss, train_accuracy = self._retry_on_oom(
                    functools.partial(self._train_epoch, opt, stage, epoch)
                )
                record = {
                    "epoch": epoch + 1,
                    "epochs": self.plan.epochs,
                    "train_loss": train_loss,
                    "train_accuracy": train_accuracy,
                    "lr": head_lr(opt),
                    "image_size": self.setup.schedule.at(epoch),
                }
                stop = self._validate(record, time.perf_counter() - started) if self.ranks.is_main else False
                if self._agree(stop and not stage.head_only):
                    self._stopped_early(epoch)
                    return

    def _fit_head(self) -> None:
        """Cases 1 and 2: the new layer fitted on the cached features, its penalty chosen by
        cross-validation first; each epoch is a few L-BFGS iterations, then validation."""
        features, labels = _all_ranks(self.train_source, self.ranks)
        if not self.ranks.is_main:
            return  # rank 0 alone fits the head, on every rank's features
        standardise, _ = self.setup.trainable
        standardise.fit(features)
        weights = self.setup.class_weights
        self.emit(PhaseStarted(phase="tuning"))
        images = len(features) // len(self.train_source.views)
        self.head_choice = head.choose_weight_decay(
            self.setup.trainable, features, labels, images, weights, self.plan.seed
        )
        if self.head_choice.held_out is not None:
            order = _gathered_order(len(self.train_samples), self.ranks, self.plan.seed)
            samples = [self.train_samples[i] for i in order]
            self.suspects = _suspects(self.head_choice.held_out, samples, self.setup.classes, OUT_OF_FOLD)
        self.emit(PhaseStarted(phase="training"))
        fit = head.HeadFit(self.setup.trainable, features, labels, self.head_choice.weight_decay, weights)
        for epoch in range(self.plan.epochs):
            started = time.perf_counter()
            train_loss, train_accuracy, converged = fit.step()
            record = {
                "epoch": epoch + 1,
                "epochs": self.plan.epochs,
                "train_loss": train_loss,
                "train_accuracy": train_accuracy,
                "lr": 0.0,  # L-BFGS searches its own step
            }
            stop = self._validate(record, time.perf_counter() - started)
            if converged:
                return  # more iterations would change nothing
            if stop:
                self._stopped_early(epoch)
                return

    def _train_epoch(
        self, opt: Optimisation, stage: Stage, epoch: int, batch_size: int
    ) -> tuple[float, float]:
        batches = epoch_batches(len(self.train_source), batch_size, self.plan.seed, epoch)
        steps = len(batches) * len(stage.epochs)  # the learning-rate curve spans the stage
        first = len(batches) * (epoch - stage.epochs.start)

        def on_batch(step: int, of: int, loss: float, images_per_s: float) -> None:
            self.emit(BatchEnd(epoch=epoch + 1, step=step, steps=of, loss=loss, images_per_s=images_per_s))

        schedule = self.setup.schedule
        resized = epoch > 0 and schedule.at(epoch) != schedule.at(epoch - 1)
        statistics = fresh_batch_norm_statistics(opt.model) if resized else contextlib.nullcontext()
        try:
            with statistics:
                return train_one_epoch(
                    opt,
                    self.train_source,
                    batches,
                    epoch,
                    lambda step: lr_at(first + step, steps, self.plan.schedule),
                    on_batch,
                    self.ranks,
                    report_every_s=BATCH_EVENT_INTERVAL_S,
                )
        except Diverged as exc:
            raise TrainingError(
                f"training diverged at epoch {epoch + 1}, step {exc.step} (loss is {exc.loss}): "
                f"lower the learning rate (now {self.plan.lr:g})"
            ) from exc

    def _validate(self, record: dict[str, Any], seconds: float) -> bool:
        """Evaluate, report the epoch, keep the best state; say whether patience has run out."""
        trainable = self.setup.trainable
        logits, labels = self._retry_on_oom(
            lambda size: evaluate(trainable, self.val_source, size, self.accel)
        )
        val_loss = float(F.cross_entropy(logits, labels))
        if not math.isfinite(val_loss) or not math.isfinite(record["train_loss"]):
            raise TrainingError(  # the weights blew up between the last step and the evaluation
                f"training diverged by the end of epoch {record['epoch']} (validation loss is {val_loss}): "
                f"lower the learning rate (now {self.plan.lr:g})"
            )
        val_accuracy = metrics.accuracy(logits, labels)
        record.update(val_loss=val_loss, val_accuracy=val_accuracy, seconds=seconds)
        self.history.append(record)
        self.emit(EpochEnd(**record))
        epoch = record["epoch"]
        tie = val_accuracy == self.best_accuracy
        if val_accuracy > self.best_accuracy or (tie and val_loss < self.best_loss - LOSS_MIN_DELTA):
            self.best_accuracy, self.best_loss, self.best_epoch = val_accuracy, val_loss, epoch
            self.best_state = {k: v.detach().clone() for k, v in trainable.state_dict().items()}
        patience = self.plan.patience
        return bool(patience) and epoch - self.best_epoch >= patience

    def _stopped_early(self, epoch: int) -> None:
        plan = self.plan
        waited = f"{plan.patience} epoch{'s' * (plan.patience > 1)}"
        self._warn(
            f"stopped early after epoch {epoch + 1} of {plan.epochs}: no better validation "
            f"accuracy for {waited}; keeping epoch {self.best_epoch}"
        )

    def _optimisation(self, stage: Stage) -> Optimisation:
        """A fresh optimiser for a stage."""
        plan, model = self.plan, self.setup.model
        groups = stage_groups(model, plan, stage.head_only)
        for group in groups:  # an "auto" batch scales the plan's rates, which are meant for 32
            group["base_lr"] *= self.batch.lr_scale
        optimizer = optimizer_for(plan.optimizer, groups, plan.weight_decay)
        trainable = self._parallel(self.setup.trainable)
        return Optimisation(trainable, optimizer, self.accel, self.setup.class_weights, aux_weight(model))

    def _parallel(self, module: nn.Module) -> nn.Module:
        if not self.ranks.distributed:
            return module
        device_ids = [self.accel.device.index] if self.accel.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids)

    def _choose_batch(self) -> BatchChoice:
        """The training batch (``core.training.batch_size``); under torchrun rank 0's, for all:
        shares differ by a sample, and every rank must step alike."""
        choice = choose_batch_size(self.setup, self.train_source, len(self.train_source))
        if not self.ranks.distributed:
            return choice
        size = self._from_rank_0(choice.size)
        if size == choice.size:
            return choice
        return BatchChoice(size, "rank 0's choice", lr_scale(size, self.plan.optimizer))

    def _agree(self, stop: bool) -> bool:
        """Rank 0 decides on early stopping; the others follow, so that no rank waits alone."""
        return bool(self._from_rank_0(int(stop))) if self.ranks.distributed else stop

    def _from_rank_0(self, value: int) -> int:
        number = torch.tensor([value], device=self.accel.device)
        dist.broadcast(number, src=0)
        return int(number.item())

    def _retry_on_oom(self, work: Callable[[int], Any]) -> Any:
        """Run ``work(batch_size)``, halving the batch size on out-of-memory, with a warning.

        Under torchrun an out-of-memory fails the run: one rank retrying alone would hang the rest.
        """
        if self.ranks.distributed:
            return work(self.batch_size)
        result, self.batch_size = halve_batch_on_oom(work, self.batch_size, self._warn, self.accel.device)
        return result

    def _ran(self, phase: str, choice: Choice) -> None:
        """Say which runtime ran a forward-only pass: in the events (the run's provenance) and
        in the metrics."""
        record = self.runtimes[phase] = choice.to_dict()
        self.emit(
            RuntimeChosen(
                phase=phase, runtime=choice.runtime, reason=choice.reason, images_per_s=record["images_per_s"]
            )
        )

    def _batch_record(self) -> dict[str, Any]:
        """The batch trained with and why: what was chosen, and any halving after it."""
        record = self.batch.to_dict()
        if self.batch_size != self.batch.size:
            record["reason"] += f"; halved to {self.batch_size} after running out of memory"
            record["size"] = self.batch_size
        return record

    def _warn(self, message: str, suggest: str | None = None) -> None:
        self.warnings.append(message)
        self.emit(RunWarning(message=message, suggest=suggest))

    # -- the result ------------------------------------------------------------------------------

    def finish(self, run_dir: Path) -> dict[str, Any]:
        """Restore the best state, export it, measure the exported model, write ``metrics.json``,
        the suspects and the model card (with the run record's provenance, where there is one).

        The final numbers come from the model as it is exported (float32 on the CPU, each image
        file prepared as Predict prepares it), so that Results and Predict agree on every image;
        the epochs' numbers came from the training precision and the cached features.
        """
        self.setup.trainable.load_state_dict(self.best_state)
        files = RunFiles(run_dir)
        self.emit(PhaseStarted(phase="exporting"))
        whole = self.setup.whole()
        export_model(whole, self.setup.pre, self.setup.classes, files.model_dir)
        result = self._measure(Predictor.of(portable_copy(whole), self.setup.pre, self.setup.classes))
        write_json(files.metrics_file, result)
        self.suspects.write(files.directory)
        provenance = read_json(files.record_file, {}).get("provenance", {})
        write_model_card(files.model_dir, result, self.data_report.to_dict(), provenance)
        return result

    def _measure(self, exported: Predictor) -> dict[str, Any]:
        classes = self.setup.classes
        # The exported model runs on the CPU, where a plan's "auto" batch means the default.
        cpu_batch = DEFAULT_BATCH_SIZE if self.plan.batch_size == AUTO else self.batch_size
        engine = exported.engine(len(self.val_samples) + len(self.test_samples))
        logits, labels = _logits(exported, self.val_samples, cpu_batch, engine)
        report = metrics.report(logits, labels, [_file(s) for s in self.val_samples], classes)
        self.best_accuracy = report["accuracy"]
        if self.suspects is None:  # cases 3 and 4: the validation images, which no step trained on
            self.suspects = _suspects(logits.softmax(1), self.val_samples, classes, VALIDATION)
        majority = metrics.majority_rate(labels.tolist(), len(classes))
        result: dict[str, Any] = {
            "val_accuracy": self.history[-1]["val_accuracy"],
            "best_val_accuracy": self.best_accuracy,
            "best_epoch": self.best_epoch,
            "epochs_run": len(self.history),
            "majority_rate": majority,
            "val_interval": metrics.wilson_interval(int((logits.argmax(1) == labels).sum()), len(labels)),
            "labels": classes,
            **_without_accuracy(report),
            "history": self.history,
            "device": str(self.accel.device),
            "precision": self.accel.precision,
            "batch": self._batch_record(),
            "class_weights": None if self.setup.class_weights is None else self.setup.class_weights.tolist(),
            "plan": self.plan.to_dict(),
        }
        if self.head_choice is not None:
            result["head"] = self.head_choice.to_dict()
        if self.test_samples:
            test_logits, test_labels = _logits(exported, self.test_samples, cpu_batch, engine)
            files = [_file(s) for s in self.test_samples]
            result["test"] = metrics.report(test_logits, test_labels, files, classes)
        judged = outcome.judge(self.best_accuracy, majority, self.plan.to_dict())
        if not judged.worked:
            self._warn(judged.advice, suggest=judged.suggest)
        if judged.suggest:
            result["suggest"] = judged.suggest
        if engine.choice is not None:
            self._ran("evaluation", engine.choice)
        result["runtimes"] = self.runtimes
        result["warnings"] = self.warnings
        return result


def _logits(
    exported: Predictor, samples: list[Sample], batch_size: int, engine: Engine
) -> tuple[torch.Tensor, torch.Tensor]:
    """The exported model's logits of each sample's image file, as Predict computes them."""
    logits = exported.logits([s.path for s in samples], batch_size, engine)
    return logits, torch.tensor([s.label for s in samples], dtype=torch.long)


def _all_ranks(source: FeatureSource, ranks: Ranks) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's training features, stacked view after view, and their labels: each rank
    embedded its own share of the images; the head is fitted on all of them."""
    if not ranks.distributed:
        return source.stacked()
    shares: list = [None] * ranks.world
    dist.all_gather_object(shares, ([view.cpu() for view in source.views], source.labels.cpu()))
    views = [torch.cat([share[0][v] for share in shares]) for v in range(len(source.views))]
    labels = torch.cat([share[1] for share in shares])
    return FeatureSource(views, labels, source.accel).stacked()


def _gathered_order(count: int, ranks: Ranks, seed: int) -> list[int]:
    """The training samples' indices in the order ``_all_ranks`` stacks their features: rank
    after rank, each its own shard."""
    return [i for rank in range(ranks.world) for i in shard(count, Ranks(rank, ranks.world), seed)]


def _suspects(
    probabilities: torch.Tensor, samples: list[Sample], classes: list[str], source: str
) -> Suspects:
    """Confident learning on held-out ``probabilities``, one row per sample."""
    labels = [s.label for s in samples]
    return find_suspects(
        probabilities.float().cpu().numpy(), labels, [_file(s) for s in samples], classes, source
    )


def _file(sample: Sample) -> str:
    """The name people know the image by: its path inside the upload."""
    return sample.name or sample.path.name


def _without_accuracy(report: dict[str, Any]) -> dict[str, Any]:
    """The kept model's report; its accuracy is ``best_val_accuracy``, its loss ``best_val_loss``."""
    report = dict(report)
    report.pop("accuracy")
    report["best_val_loss"] = report.pop("loss")
    return report


def _data_ready(dataset: Dataset) -> DataReady:
    report = dataset.report
    return DataReady(
        name=report.source.get("name", ""),
        sha256=report.source.get("sha256", ""),
        classes=len(dataset.classes),
        train=len(dataset.train),
        val=len(dataset.val),
        test=len(dataset.test),
    )


def _ingest(plan: Plan, ranks: Ranks) -> Dataset:
    """Rank 0 ingests first; the others then find the validated copy it left in the store."""
    if ranks.is_main:
        dataset = ingest(plan.data, val_fraction=plan.val_fraction, seed=plan.seed, exclude=plan.exclude)
    if ranks.distributed:
        dist.barrier()
    if not ranks.is_main:
        dataset = ingest(plan.data, val_fraction=plan.val_fraction, seed=plan.seed, exclude=plan.exclude)
    return dataset


@contextlib.contextmanager
def _process_group(ranks: Ranks, accel: Accelerator) -> Iterator[None]:
    """Join torchrun's process group for the run: nccl between GPUs, gloo between CPUs."""
    if not ranks.distributed or dist.is_initialized():
        yield
        return
    dist.init_process_group("nccl" if accel.device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _discard(event: Event) -> None:
    """Ranks other than 0 report nothing: one run, one stream of events."""
