"""A request's images checked as an upload is checked, then turned into the model's inputs.

A prediction service takes untrusted bytes from anyone who can reach it, so each request meets
the ceilings an upload meets (``core.limits``): its size, before its body is read; the pixels
its images may hold, from their headers, before any is decoded (``ingestion.pixel_budget``:
a small request of huge flat images costs decoding time out of all proportion to its size);
then each image decoded as training decoded its images (``core.data.images``). Every refusal is
a ``Refused`` carrying the HTTP status that says whose fault it is and one line naming the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus

import torch
from PIL import Image

from core.artifacts.predict import image_to_input
from core.data.errors import IngestError
from core.data.images import decode_image, read_header
from core.data.ingestion import pixel_budget
from core.errors import TransferLabError
from core.limits import Limits, human_bytes
from core.models.preprocess import Preprocess


class Refused(TransferLabError, ValueError):
    """A request the service will not run; ``status`` is the HTTP status it is answered with."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Upload:
    """One image of a request: the file name its client gave and its bytes."""

    name: str
    data: bytes


def check_request_size(content_length: str | None, limits: Limits) -> None:
    """``Refused`` for a request body larger than an upload may be, or of unstated size (which
    could only be measured by reading it all)."""
    if content_length is None or not content_length.isdigit():
        raise Refused(HTTPStatus.LENGTH_REQUIRED, "the request must state its size (Content-Length)")
    size = int(content_length)
    if size > limits.max_upload_bytes:
        raise Refused(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"the request is {human_bytes(size)}; requests are limited to {human_bytes(limits.max_upload_bytes)}",
        )


def model_inputs(
    uploads: Sequence[Upload], request_bytes: int, pre: Preprocess, limits: Limits, max_images: int
) -> torch.Tensor:
    """``[N, 3, crop, crop]``: the request's images, in order, prepared as ``Predictor`` prepares
    them; ``Refused`` naming the first image at fault."""
    if not uploads:
        raise Refused(HTTPStatus.BAD_REQUEST, "no images: send one or more files in the form field 'images'")
    if len(uploads) > max_images:
        raise Refused(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"{len(uploads)} images in one request; the limit is {max_images}",
        )
    _check_pixels(uploads, pixel_budget(request_bytes, limits), limits)
    return torch.stack([image_to_input(_decoded(upload, limits), pre) for upload in uploads])


def _check_pixels(uploads: Sequence[Upload], budget: int, limits: Limits) -> None:
    pixels = 0
    for upload in uploads:
        try:
            info = read_header(upload.data, max_pixels=limits.max_image_pixels)
        except IngestError as exc:
            raise _unreadable(upload, exc) from None
        pixels += info.width * info.height
        if pixels > budget:
            raise Refused(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the images hold more than {budget:,} pixels ({upload.name!r} passes the mark), the limit "
                f"for a request of this size: {limits.max_pixels_per_mb:,} per MiB, {limits.max_total_pixels:,} in all",
            )


def _decoded(upload: Upload, limits: Limits) -> Image.Image:
    try:
        return decode_image(upload.data, max_pixels=limits.max_image_pixels)
    except IngestError as exc:
        raise _unreadable(upload, exc) from None


def _unreadable(upload: Upload, exc: IngestError) -> Refused:
    return Refused(HTTPStatus.UNPROCESSABLE_ENTITY, f"cannot read image {upload.name!r}: {exc}")
