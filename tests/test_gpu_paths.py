"""What keeps a GPU busy in training, checked on a CPU: one batch shape for a whole run, no host
sync per step, the image cache's placement, and the batch size that ``auto`` chooses.

The numbers fed to ``decide`` are illustrative, shaped like a GPU's: throughput that grows with
the batch and then flattens, memory that grows with it from a fixed base.
"""

from __future__ import annotations

import argparse
import math
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from core.data import ingest
from core.data.cache import ImageCache
from core.data.samples import sample_path
from core.training import setup
from core.training.batch_size import (
    DEFAULT_BATCH_SIZE,
    MIN_STEPS_PER_EPOCH,
    StepMeasurement,
    choose_batch_size,
    decide,
    lr_scale,
    measure,
)
from core.training.batches import FeatureSource, ImageSource
from core.training.device import Accelerator, Ranks, accelerator
from core.training.loop import (
    MAX_SKIPPED_STEPS,
    Diverged,
    Optimisation,
    epoch_batches,
    shard,
    train_one_epoch,
)
from core.training.plan import Plan
from core.training.transforms import to_model_input

GIB = 1024**3
CPU = Accelerator(torch.device("cpu"), "fp32", channels_last=False)
aten = torch.ops.aten


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The machine's cores are shared: one thread each keeps runs from stalling each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def five_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digits 0 to 4, 10 of each: 40 to train on once 10 are held out, not a multiple of 32."""
    root = tmp_path_factory.mktemp("five_digits")
    with zipfile.ZipFile(sample_path("digits")) as archive:
        for name in sorted(archive.namelist()):
            label = name.split("/")[0]
            if label in "01234" and len(list((root / label).glob("*.png"))) < 10:
                (root / label).mkdir(parents=True, exist_ok=True)
                (root / name).write_bytes(archive.read(name))
    return root


# -- one shape for every training step --------------------------------------------------------------


def test_every_batch_of_every_epoch_has_one_shape_and_every_sample_is_seen() -> None:
    for epoch in range(3):
        batches = epoch_batches(1437, 32, seed=7, epoch=epoch)
        assert {len(b) for b in batches} == {32}
        assert set(torch.cat(batches).tolist()) == set(range(1437))


def test_torchrun_shares_each_train_in_full_batches_and_together_see_every_sample() -> None:
    shares = [shard(1437, Ranks(rank, 2), seed=3) for rank in range(2)]
    seen = set()
    for share in shares:
        batches = epoch_batches(len(share), 64, seed=3, epoch=0)
        assert {len(b) for b in batches} == {64}
        seen |= {share[i] for b in batches for i in b.tolist()}
    assert seen == set(range(1437))


def test_a_run_trains_every_step_on_one_input_shape_and_records_its_batch(
    five_digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.training.train import fit

    shapes, real_step = [], Optimisation.step

    def recording_step(self: Optimisation, inputs: torch.Tensor, labels: torch.Tensor) -> object:
        shapes.append(tuple(inputs.shape))
        return real_step(self, inputs, labels)

    monkeypatch.setattr(Optimisation, "step", recording_step)
    plan = Plan(data=str(five_digits), backbone="efficientnet_lite0", case=3, epochs=2, image_size=32,
                augment="none", precision="fp32", device="cpu", val_fraction=0.2)  # fmt: skip
    assert plan.batch_size == "auto"
    result = fit(plan, tmp_path / "run", lambda event: None)
    assert set(shapes) == {(32, 3, 32, 32)} and len(shapes) == 4  # 40 images: 2 full batches an epoch
    assert result["batch"] == {
        "size": 32,
        "reason": "the default on cpu: measured on CUDA only",
        "lr_scale": 1.0,
        "measured": [],
    }
    assert result["plan"]["batch_size"] == "auto"


# -- no host sync per step ----------------------------------------------------------------------------


class HostSyncs(TorchDispatchMode):
    """Counts what makes the CPU wait for the device: reading a number out of a tensor (what
    ``.item()``, ``float()``, ``int()`` and ``bool()`` call) and copies from a device to the host."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        reads = func is aten._local_scalar_dense.default
        copies = func in (aten._to_copy.default, aten.copy_.default) and self._to_host(func, args, kwargs)
        self.count += reads or copies
        return func(*args, **kwargs)

    @staticmethod
    def _to_host(func: object, args: tuple, kwargs: dict) -> bool:
        source = args[1] if func is aten.copy_.default else args[0]
        target = args[0].device if func is aten.copy_.default else kwargs.get("device") or source.device
        return source.device.type != "cpu" and torch.device(target).type == "cpu"


def linear_epoch(
    steps: int,
    report_every_s: float,
    precision: str = "fp32",
    bad: Callable[[int], bool] = lambda step: False,
) -> tuple[list[tuple[int, float]], tuple[float, float], int]:
    """An epoch of a linear head on random features (SGD: no optimiser state to read); the
    steps (counted from 1) that ``bad`` picks have a NaN loss. Returns the progress reports,
    the result and the host syncs counted."""
    torch.manual_seed(0)
    accel = Accelerator(torch.device("cpu"), precision, channels_last=False)
    head = nn.Linear(4, 2)
    optimizer = torch.optim.SGD([{"params": head.parameters(), "lr": 0.1, "base_lr": 0.1}])
    opt = Optimisation(head, optimizer, accel)
    real_loss, calls = opt.loss, iter(range(1, steps + 1))

    def loss(output: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        value, logits = real_loss(output, labels)
        return (value * math.nan if bad(next(calls)) else value), logits

    opt.loss = loss
    source = FeatureSource([torch.randn(2 * steps, 4)], torch.tensor([0, 1] * steps), accel)
    reports: list[tuple[int, float]] = []
    batches = epoch_batches(2 * steps, 2, 0, 0)
    with HostSyncs() as syncs:
        result = train_one_epoch(
            opt, source, batches, 0, lambda step: 1.0, lambda s, of, value, rate: reports.append((s, value)),
            Ranks(), report_every_s=report_every_s,
        )  # fmt: skip
    return reports, result, syncs.count


def test_an_epoch_reads_the_device_only_when_a_report_is_due_not_every_step() -> None:
    short, long = linear_epoch(5, math.inf), linear_epoch(40, math.inf)
    assert [step for step, _ in short[0]] == [1, 5] and [step for step, _ in long[0]] == [1, 40]
    assert short[2] == long[2] <= 2 * len(long[0])  # the same few syncs for 5 steps as for 40
    every_step, _, _ = linear_epoch(5, 0.0)
    assert [step for step, _ in every_step] == [1, 2, 3, 4, 5]


def test_a_report_gives_the_mean_loss_of_the_steps_since_the_one_before() -> None:
    every_step, (loss, _), _ = linear_epoch(6, 0.0)
    sparse, (same_loss, _), _ = linear_epoch(6, math.inf)  # the same seed: the same steps
    losses = [value for _, value in every_step]
    assert sparse == [(1, pytest.approx(losses[0])), (6, pytest.approx(sum(losses[1:]) / 5))]
    assert loss == same_loss == pytest.approx(sum(losses) / 6)


def test_divergence_is_caught_at_the_next_read_and_names_the_first_bad_step() -> None:
    with pytest.raises(Diverged) as diverged:
        linear_epoch(10, math.inf, bad=lambda step: step >= 3)
    assert diverged.value.step == 3 and math.isnan(diverged.value.loss)


def test_under_fp16_skipped_steps_count_in_a_row_between_reads() -> None:
    reports, (loss, _), _ = linear_epoch(12, math.inf, "fp16", bad=lambda step: step in (2, 3, 7))
    assert [step for step, _ in reports] == [1, 12] and math.isfinite(loss)  # skipped, not fatal
    with pytest.raises(Diverged) as diverged:
        linear_epoch(MAX_SKIPPED_STEPS + 5, math.inf, "fp16", bad=lambda step: step >= 2)
    assert diverged.value.step == 2 + MAX_SKIPPED_STEPS  # steps 2 to 11 skipped, then no more


def test_a_training_step_itself_never_waits_for_the_device() -> None:
    head = nn.Linear(4, 2)
    opt = Optimisation(head, torch.optim.SGD(head.parameters(), lr=0.1), CPU)
    with HostSyncs() as syncs:
        loss_sum, correct = opt.step(torch.randn(8, 4), torch.tensor([0, 1] * 4))
    assert syncs.count == 0
    assert isinstance(loss_sum, torch.Tensor) and 0 <= int(correct) <= 8


# -- the image cache's place -----------------------------------------------------------------------


def test_a_cache_goes_to_the_gpu_only_when_it_fits_in_a_quarter_of_the_free_memory() -> None:
    assert ImageSource.fits_on_device(2 * GIB, free_bytes=8 * GIB)
    assert not ImageSource.fits_on_device(2 * GIB + 1, free_bytes=8 * GIB)
    assert not ImageSource.fits_on_device(1, free_bytes=0)


def test_on_the_cpu_batches_come_from_the_cache_as_before(five_digits: Path) -> None:
    plan = Plan(data=str(five_digits), backbone="efficientnet_lite0", case=3, image_size=32, device="cpu")
    plan = plan.resolve()
    dataset = ingest(plan.data, seed=0)
    built = setup.build(plan, dataset, accelerator("cpu", "fp32"))
    source = built.images(dataset.train, train=False)
    assert source.pixels is source.cache.images and source.centred().pixels is source.pixels
    indices = torch.tensor([3, 0, 7])
    inputs, labels = source.load(indices, epoch=0)
    expected = to_model_input(source.cache.images[indices], built.pre, train=False)
    torch.testing.assert_close(inputs, expected, rtol=0, atol=0)
    assert labels.tolist() == source.cache.labels[indices].tolist()
    assert isinstance(source.cache, ImageCache)


# -- the batch size "auto" chooses ---------------------------------------------------------------------


def step(size: int, images_per_s: float, peak_gib: float = 0.0, steady_gib: float = 0.0) -> StepMeasurement:
    return StepMeasurement(size, images_per_s, int(peak_gib * GIB), int(steady_gib * GIB), 140 * GIB)


def test_doubling_stops_when_throughput_gains_less_than_a_tenth() -> None:
    measured = [step(32, 900), step(64, 1700), step(128, 2900)]
    assert decide(measured, 100_000, "adamw") is None  # still gaining: measure 256
    choice = decide([*measured, step(256, 3100)], 100_000, "adamw")
    assert choice.size == 128 and choice.reason == "doubling to 256 gained only 7% images/s"
    assert choice.lr_scale == pytest.approx(2.0)  # sqrt(128 / 32) for AdamW
    assert [m["size"] for m in choice.to_dict()["measured"]] == [32, 64, 128, 256]


def test_doubling_stops_before_the_memory_would_not_fit() -> None:
    # 4 GiB of weights, gradients and optimiser state; activations 0.25 GiB an image... per 32.
    measured = [step(32, 900, 12, 4), step(64, 1700, 20, 4), step(128, 2900, 36, 4), step(256, 4800, 68, 4)]
    choice = decide(measured, 1_000_000, "sgd")
    assert (
        choice.size == 256 and "would need about 132.0 GiB, over 80% of the 140.0 GiB usable" in choice.reason
    )
    assert choice.lr_scale == 8.0  # linear for SGD


def test_an_epoch_keeps_at_least_twenty_steps() -> None:
    assert MIN_STEPS_PER_EPOCH == 20
    assert decide([], 64 * 20 - 1, "adamw").size == DEFAULT_BATCH_SIZE  # nothing worth measuring
    assert decide([], 64 * 20, "adamw") is None  # 64 leaves 20 steps: measure 32 first
    choice = decide([step(32, 900), step(64, 1700)], 1437, "adamw")  # the digits' training split
    assert (
        choice.size == 64
        and choice.reason == "doubling to 128 would leave fewer than 20 steps per epoch of 1,437 images"
    )


def test_out_of_memory_while_measuring_keeps_the_last_size_that_fitted() -> None:
    assert decide([step(32, 900), StepMeasurement(64, out_of_memory=True)], 10**6, "adamw").size == 32
    first = decide([StepMeasurement(32, out_of_memory=True)], 10**6, "adamw")
    assert first.size == 32 and first.reason == "out of memory at 32 already"  # training halves from there


def test_the_learning_rate_scales_linearly_for_sgd_and_by_the_square_root_for_adam() -> None:
    assert [lr_scale(size, "sgd") for size in (32, 64, 256)] == [1.0, 2.0, 8.0]
    assert [lr_scale(size, optimizer) for size in (32, 128) for optimizer in ("adam", "adamw")] == [
        1,
        1,
        2,
        2,
    ]


def cpu_setup(five_digits: Path, **plan: object) -> tuple[setup.Setup, ImageSource]:
    resolved = Plan(data=str(five_digits), backbone="efficientnet_lite0", image_size=32, device="cpu",
                    augment="light", **plan).resolve()  # fmt: skip
    dataset = ingest(resolved.data, seed=0)
    built = setup.build(resolved, dataset, accelerator("cpu", "fp32"))
    return built, built.images(dataset.train, train=True)


def test_auto_on_a_cpu_is_32_without_measuring_and_a_plans_size_is_kept(
    five_digits: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_step(*args: object) -> None:
        raise AssertionError("a CPU run measured a step")

    monkeypatch.setattr(Optimisation, "step", no_step)
    built, source = cpu_setup(five_digits, case=3)
    choice = choose_batch_size(built, source, 10**6)
    assert (choice.size, choice.lr_scale, choice.measured) == (32, 1.0, ())
    built, source = cpu_setup(five_digits, case=4, batch_size=8)
    assert choose_batch_size(built, source, 10**6).size == 8


def test_measuring_times_real_steps_and_leaves_the_model_as_it_was(five_digits: Path) -> None:
    built, source = cpu_setup(five_digits, case=4)
    before = {name: value.clone() for name, value in built.model.state_dict().items()}
    augmentation = source.generator.get_state()
    choice = measure(built, source, train_images=64 * MIN_STEPS_PER_EPOCH)  # 64 at most
    assert [m.size for m in choice.measured] == [32, 64] and all(m.images_per_s > 0 for m in choice.measured)
    assert choice.size in (32, 64)
    after = built.model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)  # weights and BatchNorm statistics
    assert torch.equal(source.generator.get_state(), augmentation)


def test_the_estimate_times_the_batch_training_will_choose(
    five_digits: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.training import estimate as estimate_module

    real_step, sizes = Optimisation.step, []

    def counting_step(self: Optimisation, inputs: torch.Tensor, labels: torch.Tensor) -> object:
        sizes.append(len(labels))
        return real_step(self, inputs, labels)

    monkeypatch.setattr(Optimisation, "step", counting_step)
    monkeypatch.setattr(estimate_module, "export_model", lambda *args: None)
    plan = Plan(data=str(five_digits), backbone="efficientnet_lite0", case=3, image_size=32, augment="none",
                precision="fp32", device="cpu")  # fmt: skip
    result = estimate_module.time_plan_here(plan)
    assert set(sizes) == {32} and result.train_images == 40


# -- the plan, the command line ------------------------------------------------------------------------


def test_a_plan_batch_is_auto_by_default_and_stored_sizes_keep_their_meaning() -> None:
    assert Plan().batch_size == "auto"
    assert Plan.from_stored({"schema": 2, "batch_size": 32}).batch_size == 32
    assert Plan.from_dict(Plan(batch_size=64).to_dict()).batch_size == 64
    with pytest.raises(ValueError, match=r"batch_size 'big' is neither 'auto' nor a number from 2 to 4,096"):
        Plan(batch_size="big")


def test_the_command_line_takes_auto_or_a_number_of_images() -> None:
    from core.cli import train as cli_train

    parser = argparse.ArgumentParser()
    cli_train.add_arguments(parser)
    assert parser.parse_args(["data"]).batch_size == "auto"
    assert parser.parse_args(["data", "--batch-size", "64"]).batch_size == 64
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "--batch-size", "lots"])
