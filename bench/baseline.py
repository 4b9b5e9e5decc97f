"""The plain recipe: the official PyTorch transfer-learning tutorial's loop, re-implemented.

    .venv/bin/python bench/baseline.py DATA.zip --case 1 --epochs 10 [--backbone efficientnet_lite0]

What people write from "Transfer Learning for Computer Vision Tutorial" (pytorch.org): an
``ImageFolder`` and a ``DataLoader`` that decode every file every epoch, the tutorial's
transforms (``RandomResizedCrop`` + ``RandomHorizontalFlip`` for training, ``Resize`` +
``CenterCrop`` for validation, at the backbone's own sizes and normalisation), the backbone with
its head swapped, ``SGD(lr=1e-3, momentum=0.9)`` with ``StepLR(7, 0.1)``, and for the frozen
variants the frozen backbone run forward every epoch. Case 1 freezes everything but the new
head (the tutorial's "ConvNet as fixed feature extractor"), case 2 does the same on the network
cut at its default stage, case 3 fine-tunes the whole network (its "finetuning the ConvNet").
Float32, as the tutorial runs; the best validation epoch's weights are kept, as it keeps them.

It prints one JSON line per epoch (``epoch``, ``seconds`` since start, ``train_loss``,
``val_accuracy``, ``images_per_s`` of training) and a final one with the totals. The data must
have its own ``train/`` and ``val/`` folders, which the engine then uses as they are too.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch
from torch import nn
from torchvision import datasets, transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.models.adapt import FrozenBatchNorm2d, build_model
from core.models.backbones import resolve


def loaders(
    root: Path, backbone: str, batch_size: int, workers: int, size: int | None
) -> dict[str, torch.utils.data.DataLoader]:
    pre = resolve(backbone).preprocess
    pre = pre.scaled_to(size) if size else pre
    normalize = transforms.Normalize(pre.mean, pre.std)
    data_transforms = {
        "train": transforms.Compose(
            [
                transforms.RandomResizedCrop(pre.crop),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                normalize,
            ]
        ),
        "val": transforms.Compose(
            [transforms.Resize(pre.resize), transforms.CenterCrop(pre.crop), transforms.ToTensor(), normalize]
        ),
    }
    image_datasets = {
        split: datasets.ImageFolder(root / split, data_transforms[split]) for split in ("train", "val")
    }
    return {
        split: torch.utils.data.DataLoader(
            image_datasets[split], batch_size=batch_size, shuffle=split == "train", num_workers=workers
        )
        for split in ("train", "val")
    }


def model_for(case: int, backbone: str, classes: int) -> tuple[nn.Module, list[nn.Parameter]]:
    """The backbone with its head swapped (and, case 2, cut short), and the parameters to train.

    As the tutorial does it: ``requires_grad = False`` on the frozen layers and nothing more, so
    their BatchNorm layers still update their statistics in ``model.train()``.
    """
    model = build_model(resolve(backbone), case, classes)
    for module in model.modules():
        if isinstance(module, FrozenBatchNorm2d):
            module.__class__ = nn.BatchNorm2d  # plain BatchNorm again: the surgery's fix undone
    return model, [p for p in model.parameters() if p.requires_grad]


def train_model(model, params, dataloaders, epochs: int, started: float) -> dict:
    """The tutorial's ``train_model``: train then validate each epoch, keep the best weights."""
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(params, lr=0.001, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    best_weights, best_acc = copy.deepcopy(model.state_dict()), 0.0
    train_seconds, trained, seconds, processed = 0.0, 0, 0.0, 0
    for epoch in range(epochs):
        model.train()
        running_loss, epoch_started = 0.0, time.perf_counter()
        for inputs, labels in dataloaders["train"]:
            optimizer.zero_grad()
            loss = criterion(model(inputs), labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item() * inputs.size(0)
            trained += inputs.size(0)
        scheduler.step()
        train_seconds += time.perf_counter() - epoch_started
        model.eval()
        corrects = 0
        with torch.no_grad():
            for inputs, labels in dataloaders["val"]:
                corrects += int((model(inputs).argmax(1) == labels).sum())
        seconds += time.perf_counter() - epoch_started
        processed += len(dataloaders["train"].dataset) + len(dataloaders["val"].dataset)
        accuracy = corrects / len(dataloaders["val"].dataset)
        if accuracy > best_acc:
            best_acc, best_weights = accuracy, copy.deepcopy(model.state_dict())
        print(json.dumps({
            "epoch": epoch + 1, "seconds": time.perf_counter() - started,
            "train_loss": running_loss / len(dataloaders["train"].dataset), "val_accuracy": accuracy,
        }), flush=True)  # fmt: skip
    model.load_state_dict(best_weights)
    return {
        "best_val_accuracy": best_acc,
        "train_images_per_s": trained / max(train_seconds, 1e-9),
        "frozen_images_per_s": processed / max(seconds, 1e-9),  # through the network, every epoch
    }


def main() -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a zip (or folder) with train/ and val/ class folders")
    parser.add_argument("--case", type=int, choices=(1, 2, 3), default=1)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--workers", type=int, default=2, help="DataLoader workers (the tutorial's 4, capped at the cores)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, help="input side in pixels (default: the backbone's)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        if args.data.is_dir():
            root = args.data
        else:
            zipfile.ZipFile(args.data).extractall(root)
        dataloaders = loaders(root, args.backbone, args.batch_size, args.workers, args.image_size)
        classes = len(dataloaders["train"].dataset.classes)
        model, params = model_for(args.case, args.backbone, classes)
        result = train_model(model, params, dataloaders, args.epochs, started)
        torch.save(model.state_dict(), root / "model.pt")  # the tutorial's way to keep the model
    print(json.dumps({"final": True, **result, "seconds": time.perf_counter() - started}), flush=True)


if __name__ == "__main__":
    main()
