"""Pre-trained weights, online and offline.

torchvision's ImageNet weights live in the torch hub cache (``$TORCH_HOME/hub/checkpoints``,
``~/.cache/torch`` by default), downloaded once by whoever needs them first. Machines without
internet need the file put there beforehand: ``python -m core fetch-weights NAME...`` on a
machine that has internet (or in an image build), then copy the cache. Extras carry their
weights in a package and are available wherever that package is installed.
"""

from __future__ import annotations

import http.client
import pickle
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torchvision.models import WeightsEnum, get_model_weights

from core.errors import TransferLabError, one_line
from core.extras import EXTRA_BACKBONES
from core.families import family_of


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


def checkpoint_path(backbone: str) -> Path:
    """Where torchvision's ImageNet weights for ``backbone`` are cached (they may be absent)."""
    if backbone in EXTRA_BACKBONES:
        raise ValueError(f"{backbone} is not a torchvision model: its weights come in a package")
    family_of(backbone)  # ValueError naming the valid choices
    url = _weights_enum(backbone).url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def weights_on_disk(backbone: str) -> bool:
    """torchvision: the checkpoint is in the hub cache; extras: their weight package is installed."""
    if backbone in EXTRA_BACKBONES:
        return EXTRA_BACKBONES[backbone].weights_available()
    return checkpoint_path(backbone).is_file()


def fetch(backbone: str, progress: bool = True) -> Path:
    """The weights file for ``backbone``, downloaded into the hub cache unless already there.

    Raises ``WeightsUnavailable`` when the file is absent and cannot be downloaded.
    """
    if backbone in EXTRA_BACKBONES:
        return _extra_file(backbone)
    path = checkpoint_path(backbone)
    if path.is_file():
        return path
    url = _weights_enum(backbone).url
    path.parent.mkdir(parents=True, exist_ok=True)
    match = torch.hub.HASH_REGEX.search(path.name)
    try:
        torch.hub.download_url_to_file(url, str(path), match.group(1) if match else None, progress=progress)
    except (OSError, http.client.HTTPException, RuntimeError, ValueError) as exc:
        raise WeightsUnavailable(
            backbone,
            path,
            f"no ImageNet weights for {backbone} on this machine: {path} is missing and downloading "
            f"{url} failed ({one_line(exc)}); on a machine with internet run `python -m core "
            f"fetch-weights {backbone}` and copy {path.name} to {path.parent} (TORCH_HOME moves "
            f"the cache), or choose weights 'none'",
        ) from exc
    return path


def imagenet_state_dict(backbone: str) -> dict[str, torch.Tensor]:
    """The ImageNet state_dict of ``backbone``, fetched first if it is not on disk."""
    path = fetch(backbone)
    if backbone in EXTRA_BACKBONES:
        return torch.load(path, map_location="cpu", weights_only=True)
    # torchvision's own loader: the same file, hash-named, from the same cache.
    return _weights_enum(backbone).get_state_dict(progress=True, check_hash=True)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict saved with ``torch.save(model.state_dict(), path)``; ValueError otherwise."""
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


def _extra_file(backbone: str) -> Path:
    extra = EXTRA_BACKBONES[backbone]
    if not extra.weights_available():
        raise WeightsUnavailable(
            backbone,
            None,
            f"no ImageNet weights for {backbone}: they come in Python packages that are not "
            f"installed here; run `{extra.install_command()}`, or choose weights 'none'",
        )
    return extra.weights_file()


def _weights_enum(backbone: str) -> WeightsEnum:
    return get_model_weights(backbone).DEFAULT
