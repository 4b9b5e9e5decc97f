"""Pre-trained weights, online and offline: where each backbone's come from.

torchvision's ImageNet weights live in the torch hub cache (``$TORCH_HOME/hub/checkpoints``,
``~/.cache/torch`` by default), downloaded once by whoever needs them first. Machines without
internet need the file put there beforehand: ``python -m core fetch-weights NAME...`` on a
machine that has internet (or in an image build), then copy the cache. Packaged backbones carry
their weights in a pip package and are available wherever that package is installed.

A ``Backbone`` record holds one of the two sources below; callers ask it, never the name.
"""

from __future__ import annotations

import http.client
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torchvision.models import WeightsEnum

from core.errors import TransferLabError, one_line
from core.models.packaged import Packaged


class WeightsFileError(TransferLabError, ValueError):
    """A weights file that is not a state_dict, or not one that fits the backbone."""


class WeightsUnavailable(TransferLabError, RuntimeError):
    """ImageNet weights that are not on this machine and cannot be downloaded now.

    The message is one line that names the backbone, the missing file, where to put it and the
    command that fetches it.
    """

    def __init__(self, backbone: str, path: Path | None, message: str) -> None:
        super().__init__(message)
        self.backbone = backbone
        self.path = path
        self.command = f"python -m core fetch-weights {backbone}"


@dataclass(frozen=True)
class TorchvisionWeights:
    """torchvision's default ImageNet weights for a backbone: an enum member and a cached file."""

    backbone: str
    enum: WeightsEnum

    @property
    def label(self) -> str:
        return str(self.enum)

    @property
    def file(self) -> Path:
        """Where the hub cache keeps them (the file may be absent)."""
        return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(self.enum.url).path).name

    def on_disk(self) -> bool:
        return self.file.is_file()

    def fetch(self, progress: bool = True) -> Path:
        """The weights file, downloaded into the hub cache unless already there.

        Raises ``WeightsUnavailable`` when the file is absent and cannot be downloaded.
        """
        path = self.file
        if path.is_file():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        match = torch.hub.HASH_REGEX.search(path.name)
        try:
            torch.hub.download_url_to_file(
                self.enum.url, str(path), match.group(1) if match else None, progress=progress
            )
        except (OSError, http.client.HTTPException, RuntimeError, ValueError) as exc:
            name = self.backbone
            raise WeightsUnavailable(
                name,
                path,
                f"no ImageNet weights for {name} on this machine: {path} is missing and downloading "
                f"{self.enum.url} failed ({one_line(exc)}); on a machine with internet run `python -m core "
                f"fetch-weights {name}` and copy {path.name} to {path.parent} (TORCH_HOME moves "
                f"the cache), or choose weights 'none'",
            ) from exc
        return path

    def state_dict(self) -> dict[str, torch.Tensor]:
        self.fetch()
        # torchvision's own loader: the same file, hash-named, from the same cache.
        return self.enum.get_state_dict(progress=True, check_hash=True)


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights inside an installed pip package."""

    packaged: Packaged

    @property
    def label(self) -> str:
        return f"{self.packaged.name} (package)"

    @property
    def file(self) -> Path | None:
        return self.packaged.weights_file()

    def on_disk(self) -> bool:
        return self.packaged.installed()

    def fetch(self, progress: bool = True) -> Path:
        if not self.packaged.installed():
            name = self.packaged.name
            raise WeightsUnavailable(
                name,
                None,
                f"no ImageNet weights for {name}: they come in Python packages that are not "
                f"installed here; run `{self.packaged.install_command}`, or choose weights 'none'",
            )
        return self.packaged.weights_file()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return torch.load(self.fetch(), map_location="cpu", weights_only=True)


WeightsSource = TorchvisionWeights | PackagedWeights


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict saved with ``torch.save(model.state_dict(), path)``; WeightsFileError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f"weights {str(path)!r} is neither 'imagenet', 'none' nor a state_dict file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise WeightsFileError(
            f"weights file {path} cannot be read as a torch state_dict: {one_line(exc)}"
        ) from exc
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise WeightsFileError(
            f"weights file {path} holds a {type(state).__name__}, not a state_dict "
            "(a mapping of parameter names to tensors, as model.state_dict() returns)"
        )
    return dict(state)
