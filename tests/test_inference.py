"""Forward-only passes: torch or an inference runtime, chosen by measurement, with the same
outputs either way, one batch shape where cuDNN would retune, and the graphs cached by content."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from core.analysis.probe import Candidate, probe
from core.data import ImageCache, ingest
from core.data.samples import sample_path
from core.models import runtime
from core.models.backbones import resolve
from core.models.runtime import CPU_FP32, Accelerator, Engine
from core.training.batches import embed
from core.training.loop import evaluate

RUNTIMES = ("onnxruntime", "openvino")


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ).eval()  # fmt: skip


@pytest.fixture
def always_convert(monkeypatch: pytest.MonkeyPatch) -> None:
    """However short the pass, the runtimes are tried: what a long pass on a slow CPU gets."""
    monkeypatch.setattr(runtime, "MIN_SAVING_S", 0.0)
    monkeypatch.setattr(runtime, "MIN_BUILD_SAVING_S", 0.0)


def run(engine: Engine, inputs: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([engine(chunk, pad_to=batch)[0] for chunk in inputs.split(batch)])


def test_a_long_pass_runs_on_the_fastest_runtime_and_gives_torchs_outputs(always_convert: None) -> None:
    net, inputs = small_net(), torch.randn(40, 3, 24, 24)
    engine = Engine(net, CPU_FP32, len(inputs))

    outputs = run(engine, inputs, 8)

    with torch.no_grad():
        torch.testing.assert_close(outputs, net(inputs), atol=1e-4, rtol=1e-4)
    choice = engine.choice
    assert set(choice.images_per_s) == {"torch", *RUNTIMES} and not choice.rejected
    assert choice.runtime == max(choice.images_per_s, key=choice.images_per_s.get)
    assert choice.threads == torch.get_num_threads()


def test_a_short_pass_stays_in_torch_without_converting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "onnx_graph", lambda *args: pytest.fail("converted a short pass"))
    engine = Engine(small_net(), CPU_FP32, 24)

    run(engine, torch.randn(24, 3, 24, 24), 8)

    assert engine.choice.runtime == "torch" and engine.choice.reason == "too few images left to convert"


def test_a_pass_of_one_batch_neither_reads_its_weights_nor_times_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Predict's single image: hashing a large model's weights to look up a choice cost more than
    the image."""
    monkeypatch.setattr(runtime, "content_key", lambda *args: pytest.fail("hashed the weights"))
    engine = Engine(small_net(), CPU_FP32, 1)

    assert engine(torch.randn(1, 3, 24, 24))[0].shape[0] == 1
    assert engine.choice.runtime == "torch" and engine.choice.images_per_s == {}


def listen(net: nn.Module, torch_ran: list[int]) -> None:
    """Appends the size of each batch torch runs ``net`` on (the ONNX exporter's trace aside)."""

    def heard(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if not torch.onnx.is_in_onnx_export():
            torch_ran.append(len(args[0]))

    net.register_forward_hook(heard)


class Counted:
    """Counts the inputs each runtime's calls carry, as the Engine calls them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.inputs: dict[str, int] = {}
        for name, kind in (("onnxruntime", runtime.OnnxRuntime), ("openvino", runtime.OpenVino)):
            monkeypatch.setattr(kind, "__call__", self._counting(name, kind.__call__))

    def _counting(self, name: str, call: Callable) -> Callable:
        def counted(runner: object, batch: torch.Tensor) -> runtime.Outputs:
            self.inputs[name] = self.inputs.get(name, 0) + len(batch)
            return call(runner, batch)

        return counted


def test_timing_the_runtimes_costs_one_first_call_each_and_a_few_inputs_in_torch(
    always_convert: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every batch a contender is timed on is one of the pass's own: before, torch ran the whole
    first batch and each runtime three more batches whose outputs were thrown away, about 7 s of
    a first analysis of 500 photos on 2 cores."""
    monkeypatch.setattr(runtime, "TORCH_CONTENDS", float("inf"))  # torch only runs the reference
    counted, net, torch_ran = Counted(monkeypatch), small_net(), []
    listen(net, torch_ran)
    inputs = torch.randn(96, 3, 24, 24)
    engine = Engine(net, CPU_FP32, len(inputs))

    outputs = run(engine, inputs, 16)

    assert torch_ran == [runtime.CHECKED_INPUTS]
    assert sum(counted.inputs.values()) == len(inputs) + 16  # the second runtime's first call
    assert engine.choice.reason == "the fastest on this machine's own batches"
    with torch.no_grad():
        torch.testing.assert_close(outputs, small_net()(inputs), atol=1e-4, rtol=1e-4)


def test_torch_contends_on_whole_batches_where_its_first_inputs_came_close(
    always_convert: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "TORCH_CONTENDS", 0.0)
    net, torch_ran = small_net(), []
    listen(net, torch_ran)
    engine = Engine(net, CPU_FP32, 160)

    run(engine, torch.randn(160, 3, 24, 24), 16)

    assert torch_ran[:3] == [runtime.CHECKED_INPUTS, 16, 16]
    assert len(torch_ran) == 3 or engine.choice.runtime == "torch"
    assert engine.choice.runtime == max(engine.choice.images_per_s, key=engine.choice.images_per_s.get)


def test_a_pass_that_ends_before_every_runtime_is_timed_chooses_but_is_measured_again_next_time(
    always_convert: None, lab_home: Path
) -> None:
    inputs = torch.randn(16, 3, 24, 24)  # two batches: one for the first calls, one timed
    first = Engine(small_net(), CPU_FP32, len(inputs))
    run(first, inputs, 8)
    second = Engine(small_net(), CPU_FP32, len(inputs))
    run(second, inputs, 8)

    assert first.choice.runtime in RUNTIMES
    assert second.choice.reason == "the fastest on this machine's own batches"


class Noisy(nn.Module):
    """Outputs that no other runtime can reproduce: its random numbers are its own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))
        return pooled + torch.rand_like(pooled)


def test_a_runtime_whose_outputs_differ_from_torchs_is_rejected(always_convert: None) -> None:
    engine = Engine(Noisy(), CPU_FP32, 32)

    run(engine, torch.randn(32, 3, 8, 8), 8)

    assert engine.choice.runtime == "torch"
    assert set(engine.choice.rejected) == set(RUNTIMES)
    assert all("differs from torch's" in why for why in engine.choice.rejected.values())


def test_the_graph_is_exported_once_per_content(
    always_convert: None, lab_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exports = []
    real_export = runtime._export
    monkeypatch.setattr(runtime, "_export", lambda *args: exports.append(1) or real_export(*args))
    inputs = torch.randn(32, 3, 24, 24)

    for _ in range(2):
        run(Engine(small_net(), CPU_FP32, len(inputs)), inputs, 8)
    changed = small_net()
    with torch.no_grad():
        changed[0].weight.add_(1)
    run(Engine(changed, CPU_FP32, len(inputs)), inputs, 8)

    assert len(exports) == 2  # the second engine found the first one's graph; new weights, new graph
    assert len(list((lab_home / "cache" / "runtimes").glob("*.onnx"))) == 2


def test_a_second_pass_of_the_same_network_takes_the_runtime_measured_before(
    always_convert: None, lab_home: Path
) -> None:
    inputs = torch.randn(32, 3, 24, 24)
    first = Engine(small_net(), CPU_FP32, len(inputs))
    run(first, inputs, 8)
    again, torch_ran = small_net(), []  # the same content; a hook hears torch run it
    again.register_forward_hook(lambda module, args, out: torch_ran.append(len(args[0])))
    second = Engine(again, CPU_FP32, len(inputs))

    outputs = run(second, inputs, 8)

    assert second.choice.runtime == first.choice.runtime
    assert second.choice.to_dict()["images_per_s"] == first.choice.to_dict()["images_per_s"]
    assert second.choice.reason.startswith("measured fastest for this network here before")
    assert torch_ran == ([] if first.choice.runtime != "torch" else [8] * 4)
    with torch.no_grad():
        torch.testing.assert_close(outputs, small_net()(inputs), atol=1e-4, rtol=1e-4)


def test_a_remembered_runtime_is_built_again_where_it_saves_more_than_a_build_costs(
    always_convert: None, lab_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a second pass pays for a remembered runtime is its build alone, not an export and a
    trial: the analysis's BatchNorm pass (128 images, 3x faster in OpenVINO) fell back to torch
    on every analysis after the first, under the threshold for converting afresh."""
    monkeypatch.setattr(runtime, "TORCH_CONTENDS", float("inf"))  # a runtime wins the first pass
    inputs = torch.randn(32, 3, 24, 24)
    first = Engine(small_net(), CPU_FP32, len(inputs))
    run(first, inputs, 8)
    monkeypatch.setattr(runtime, "MIN_SAVING_S", float("inf"))  # converting afresh never pays
    taken = Engine(small_net(), CPU_FP32, len(inputs))
    run(taken, inputs, 8)
    monkeypatch.setattr(runtime, "MIN_BUILD_SAVING_S", float("inf"))  # nor does a build
    not_built = Engine(small_net(), CPU_FP32, len(inputs))
    run(not_built, inputs, 8)

    assert first.choice.runtime in RUNTIMES and taken.choice.runtime == first.choice.runtime
    assert not_built.choice.runtime == "torch" and not_built.choice.reason == "too few images left to convert"


def test_a_choice_is_measured_again_for_another_batch_size_or_a_damaged_record(
    always_convert: None, lab_home: Path
) -> None:
    inputs = torch.randn(32, 3, 24, 24)
    run(Engine(small_net(), CPU_FP32, len(inputs)), inputs, 8)
    other_batch = Engine(small_net(), CPU_FP32, len(inputs))
    run(other_batch, inputs, 16)
    for record in (lab_home / "cache" / "runtimes").glob("*.choices.json"):
        record.write_text("[truncated")
    damaged = Engine(small_net(), CPU_FP32, len(inputs))
    run(damaged, inputs, 8)

    assert other_batch.choice.reason == damaged.choice.reason == "the fastest on this machine's own batches"


def test_bf16_passes_may_run_on_openvinos_bf16_and_stay_close_to_torch(always_convert: None) -> None:
    accel = Accelerator(torch.device("cpu"), "bf16", channels_last=True)
    net, inputs = accel.prepare(small_net()), torch.randn(32, 3, 24, 24)
    engine = Engine(net, accel, len(inputs))

    outputs = run(engine, inputs, 8).float()

    assert "openvino-bf16" in {**engine.choice.images_per_s, **engine.choice.rejected}
    with torch.no_grad():
        reference = net(inputs)
    assert (outputs - reference).abs().max() <= 0.08 * reference.abs().max()


class ShapeSpy(nn.Module):
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module, self.shapes = module, set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.add(tuple(x.shape))
        return self.module(x)


class Batches:
    """A batch source of random images, as the training's sources serve them."""

    def __init__(self, count: int) -> None:
        self.images, self.labels = torch.randn(count, 3, 16, 16), torch.arange(count) % 3

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, indices: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[indices], self.labels[indices]


def test_where_shapes_must_stay_fixed_every_pass_feeds_the_network_one_shape() -> None:
    fixed = Accelerator(torch.device("cpu"), "fp32", channels_last=False, fixed_shapes=True)
    source = Batches(21)  # batches of 8, 8 and 5
    spy = ShapeSpy(small_net())

    features, labels = embed(Engine(spy, fixed, len(source)), source, 8)
    logits, _ = evaluate(spy, source, 8, fixed)

    assert spy.shapes == {(8, 3, 16, 16)}
    assert (
        features.shape == (21, 16) and logits.shape == (21, 16) and labels.tolist() == source.labels.tolist()
    )
    with torch.no_grad():
        torch.testing.assert_close(features, spy.module(source.images), atol=1e-5, rtol=1e-5)


def test_elsewhere_the_last_batch_is_not_padded() -> None:
    source, spy = Batches(21), ShapeSpy(small_net())

    evaluate(spy, source, 8, CPU_FP32)

    assert {shape[0] for shape in spy.shapes} == {8, 5}


@pytest.fixture(scope="module")
def digits_cache() -> tuple[Candidate, ImageCache]:
    candidate = Candidate(resolve("efficientnet_lite0"))
    return candidate, ImageCache(ingest(sample_path("digits")).train[:48], candidate.preprocess.resize)


def test_the_analysis_probe_measures_the_same_in_a_runtime_as_in_torch(
    always_convert: None, digits_cache: tuple[Candidate, ImageCache]
) -> None:
    candidate, cache = digits_cache
    torch_alone = Accelerator(torch.device("cpu"), "fp32", False, fixed_shapes=True)

    converted = probe(candidate, cache, CPU_FP32, batch_size=16, moments=False)
    in_torch = probe(candidate, cache, torch_alone, batch_size=16, moments=False)

    assert converted.runtime.runtime != "torch" and in_torch.runtime.runtime == "torch"
    torch.testing.assert_close(converted.features, in_torch.features, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(converted.logits, in_torch.logits, atol=1e-3, rtol=1e-3)
    for stage, pooled in in_torch.stages.items():
        torch.testing.assert_close(converted.stages[stage], pooled, atol=1e-3, rtol=1e-3)
    assert converted.layer_shifts == in_torch.layer_shifts == []


def test_the_shift_is_measured_on_images_spread_over_the_sample_and_every_output_keeps_its_order(
    digits_cache: tuple[Candidate, ImageCache], monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.analysis import probe as probing

    candidate, cache = digits_cache
    monkeypatch.setattr(probing, "MOMENT_IMAGES", 12)
    spread = probing._spread_first(48, 12)

    measured = probe(candidate, cache, CPU_FP32, batch_size=8)
    pooled = probe(candidate, cache, CPU_FP32, batch_size=8, moments=False)

    assert sorted(spread.tolist()) == list(range(48)) and spread[:4].tolist() == [0, 4, 9, 13]
    assert len(measured.layer_shifts) > 40 and all(shift >= 0 for shift in measured.layer_shifts)
    torch.testing.assert_close(measured.features, pooled.features, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(measured.logits, pooled.logits, atol=1e-4, rtol=1e-4)


def test_a_second_analysis_pass_in_a_remembered_runtime_measures_the_same_shift(
    always_convert: None, digits_cache: tuple[Candidate, ImageCache], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second analysis of a data set takes the runtime measured fastest the first time and
    # never runs the network in torch, which is where the BatchNorm layers' order was learnt.
    from core.analysis import probe as probing

    candidate, cache = digits_cache
    monkeypatch.setattr(probing, "MOMENT_IMAGES", 16)

    first = probe(candidate, cache, CPU_FP32, batch_size=8)
    second = probe(candidate, cache, CPU_FP32, batch_size=8)

    assert second.runtime.reason.startswith("measured fastest for this network here before")
    assert len(first.layer_shifts) > 40
    assert second.layer_shifts == pytest.approx(first.layer_shifts, rel=1e-3, abs=1e-4)


def test_an_operator_can_narrow_the_runtimes_or_turn_them_off(
    always_convert: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = torch.randn(32, 3, 24, 24)
    monkeypatch.setenv(runtime.RUNTIMES_ENV, "openvino")
    narrowed = Engine(small_net(), CPU_FP32, len(inputs))
    run(narrowed, inputs, 8)
    monkeypatch.setenv(runtime.RUNTIMES_ENV, "torch")
    off = Engine(small_net(), CPU_FP32, len(inputs))
    run(off, inputs, 8)

    assert set(narrowed.choice.images_per_s) == {"torch", "openvino"}
    assert off.choice.runtime == "torch" and off.choice.reason == "no other runtime allowed"
    monkeypatch.setenv(runtime.RUNTIMES_ENV, "tensorrt")
    with pytest.raises(ValueError, match="names 'tensorrt'; choose from onnxruntime, openvino, or torch"):
        Engine(small_net(), CPU_FP32, len(inputs))
