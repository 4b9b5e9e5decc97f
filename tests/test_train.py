"""Training: the loop's parts (batches, shares, learning rate, auxiliary losses, OOM halving,
metrics), then every case end to end on the bundled digits."""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core import metrics
from core.device import Accelerator, Ranks
from core.loop import Optimisation, epoch_batches, halve_batch_on_oom, lr_at, shard


def test_an_epoch_sees_every_sample_once_in_a_new_order() -> None:
    first, second = epoch_batches(103, 10, seed=0, epoch=0), epoch_batches(103, 10, seed=0, epoch=1)
    assert sorted(torch.cat(first).tolist()) == list(range(103))
    assert torch.cat(first).tolist() != torch.cat(second).tolist()
    assert [b.tolist() for b in first] == [b.tolist() for b in epoch_batches(103, 10, seed=0, epoch=0)]


def test_a_last_batch_of_one_joins_the_one_before() -> None:
    sizes = [len(b) for b in epoch_batches(21, 10, seed=0, epoch=0)]
    assert sizes == [10, 11]


def test_rank_shares_hold_every_sample_once_and_differ_by_at_most_one() -> None:
    shares = [shard(11, Ranks(rank, 3), seed=4) for rank in range(3)]
    assert sorted(i for s in shares for i in s) == list(range(11))
    assert {len(s) for s in shares} == {3, 4}
    assert shard(11, Ranks(0, 1), seed=4) == list(range(11))


def test_learning_rate_warms_up_then_decays_by_cosine_or_stays_flat() -> None:
    cosine = [lr_at(step, 100, "cosine") for step in range(100)]
    assert cosine[0] < cosine[4] == 1.0  # 5 % warm-up
    assert all(a >= b for a, b in zip(cosine[4:], cosine[5:])) and cosine[-1] < 0.01
    assert [lr_at(step, 100, "constant") for step in range(5, 100)] == [1.0] * 95


def test_auxiliary_logits_add_to_the_loss_with_their_weight() -> None:
    Outputs = namedtuple("Outputs", ["logits", "aux_logits"])
    logits, aux, labels = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    accel = Accelerator(torch.device("cpu"), "fp32", channels_last=False)
    opt = Optimisation(nn.Identity(), torch.optim.SGD([nn.Parameter(torch.zeros(1))]), accel, aux_weight=0.4)
    loss, main = opt.loss(Outputs(logits, aux), labels)
    expected = F.cross_entropy(logits, labels) + 0.4 * F.cross_entropy(aux, labels)
    torch.testing.assert_close(loss, expected)
    assert main is logits
    plain, _ = opt.loss(logits, labels)  # evaluation mode: a plain tensor, no auxiliary term
    torch.testing.assert_close(plain, F.cross_entropy(logits, labels))


def test_out_of_memory_halves_the_batch_until_it_fits() -> None:
    tried, warnings = [], []

    def work(batch_size: int) -> str:
        tried.append(batch_size)
        if batch_size > 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB")
        return "trained"

    assert halve_batch_on_oom(work, 32, warnings.append, torch.device("cpu")) == ("trained", 8)
    assert tried == [32, 16, 8]
    assert warnings == ["out of memory: retrying with batch size 16", "out of memory: retrying with batch size 8"]


def test_other_errors_and_out_of_memory_at_the_smallest_batch_propagate() -> None:
    def broken(batch_size: int) -> None:
        raise ValueError("shapes do not match")

    def hopeless(batch_size: int) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(ValueError, match="shapes do not match"):
        halve_batch_on_oom(broken, 32, print, torch.device("cpu"))
    with pytest.raises(torch.OutOfMemoryError):
        halve_batch_on_oom(hopeless, 4, lambda message: None, torch.device("cpu"))


# -- metrics ---------------------------------------------------------------------------------------


def one_hot_logits(predicted: list[int], classes: int = 3) -> torch.Tensor:
    return F.one_hot(torch.tensor(predicted), classes).float() * 5


def test_confusion_matrix_rows_are_the_true_classes() -> None:
    confusion = metrics.confusion_matrix(one_hot_logits([0, 1, 1, 2]), torch.tensor([0, 0, 1, 2]), 3)
    assert confusion.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]


def test_per_class_scores() -> None:
    confusion = torch.tensor([[3, 1, 0], [0, 2, 2], [0, 0, 0]])
    scores = metrics.per_class(confusion, ["a", "b", "c"])
    assert scores["a"] == {"precision": 1.0, "recall": 0.75, "f1": pytest.approx(0.8571, abs=1e-4), "support": 4}
    assert scores["b"]["precision"] == pytest.approx(2 / 3, abs=1e-4) and scores["b"]["recall"] == 0.5
    assert scores["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}  # never divides by 0


def test_top_losses_come_worst_first_with_file_and_confidence() -> None:
    logits = one_hot_logits([0, 2, 1])
    rows = metrics.top_losses(logits, torch.tensor([0, 0, 1]), ["a.png", "b.png", "c.png"], ["x", "y", "z"], k=2)
    assert [r["file"] for r in rows] == ["b.png", "a.png"]
    assert (rows[0]["true"], rows[0]["predicted"]) == ("x", "z")
    assert rows[0]["confidence"] == pytest.approx(float(logits[1].softmax(0)[2]), abs=1e-4)


def test_imbalance_gives_rare_classes_more_weight() -> None:
    labels = [0] * 90 + [1] * 10
    assert metrics.imbalance_ratio(labels, 2) == 9.0
    weights = metrics.balanced_class_weights(labels, 2)
    assert weights[1] / weights[0] == pytest.approx(9.0)
    assert metrics.majority_rate(labels, 2) == pytest.approx(0.9)
