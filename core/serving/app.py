"""The HTTP face of one exported model: ``POST /predict``, ``GET /health``, ``GET /metadata``.

FastAPI on uvicorn: a maintained ASGI stack whose event loop holds many slow clients at once
while one batcher owns the model, with multipart parsing (python-multipart), request validation
and an OpenAPI description at ``/docs`` for free. The model is loaded before the server listens,
so a server that answers ``/health`` is ready to predict. Every answer is JSON, refusals and
failures included: ``{"error": "..."}`` with a 4xx status for a request at fault (``inputs``),
500 for a failure of ours, whose traceback goes to the server's log, never to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

import torch
from fastapi import FastAPI, File, Query, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from core.artifacts.batch import Row
from core.artifacts.card import ModelCard
from core.artifacts.predict import Predictor
from core.limits import Limits
from core.models.runtime import CPU_FP32, Engine
from core.serving.batcher import Forward, MicroBatcher
from core.serving.inputs import Refused, Upload, check_request_size, model_inputs


@dataclass(frozen=True)
class ServeConfig:
    """How the service batches requests, and what one request may hold."""

    max_batch: int = 16  # images in one forward pass
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others to join it
    max_images: int = 32  # images in one request
    limits: Limits = field(default_factory=Limits)  # the upload ceilings: bytes, pixels, decoding


def create_app(model_dir: Path, config: ServeConfig | None = None) -> FastAPI:
    """The service of the model in ``model_dir`` (a run's ``model/``), loaded now."""
    config = config or ServeConfig()
    predictor = Predictor(model_dir)
    card = ModelCard(tuple(predictor.labels), predictor.pre)
    batcher = MicroBatcher(torch_forward(predictor), config.max_batch, config.max_wait_ms / 1000)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with batcher.running():
            yield

    app = FastAPI(title="Transfer Lab prediction service", summary=card.summary, lifespan=lifespan)
    _answer_errors_in_json(app)

    @app.middleware("http")
    async def refuse_oversized(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        # Before the body is read: the form parser would otherwise spool all of it first.
        if request.method == "POST":
            try:
                check_request_size(request.headers.get("content-length"), config.limits)
            except Refused as exc:
                return _error(exc.status, str(exc))
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Ready to predict; how many forward passes it has run, over how many images."""
        return {"status": "ok", **asdict(batcher.stats)}

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        """What the model knows and takes, and what a request may hold."""
        return {
            "labels": list(card.labels),
            "input_size": [3, card.pre.crop, card.pre.crop],
            "preprocess": card.pre.to_dict(),
            "summary": card.summary,
            "max_images": config.max_images,
            "max_request_bytes": config.limits.max_upload_bytes,
        }

    @app.post("/predict")
    async def predict(
        request: Request,
        images: Annotated[list[UploadFile] | None, File(description="one or more image files")] = None,
        top: Annotated[int, Query(ge=1, description="how many classes to give per image")] = 3,
    ) -> dict[str, Any]:
        """Each image's ``top`` classes, most probable first, in the order the images came."""
        uploads = [Upload(f.filename or f"image {i}", await f.read()) for i, f in enumerate(images or [], 1)]
        size = int(request.headers["content-length"])  # the middleware checked it
        inputs = await asyncio.to_thread(
            model_inputs, uploads, size, predictor.pre, config.limits, config.max_images
        )
        ranked = predictor.ranked(await batcher(inputs), top)
        return {"predictions": [Row(u.name, t).to_dict() for u, t in zip(uploads, ranked, strict=True)]}

    return app


def torch_forward(predictor: Predictor) -> Forward:
    """Class probabilities by torch alone. A service's batches are too small, one by one, to pay
    for converting the model to another runtime, and an engine allowed to convert first hashes
    the model's weights, on every batch."""

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        return predictor.probabilities(inputs, Engine(predictor.model, CPU_FP32, len(inputs), runtimes=()))

    return forward


def _answer_errors_in_json(app: FastAPI) -> None:
    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors())
        return _error(HTTPStatus.UNPROCESSABLE_ENTITY, problems)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(HTTPStatus(exc.status_code), str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        return _error(HTTPStatus.INTERNAL_SERVER_ERROR, "the prediction failed; the server's log says why")


def _error(status: HTTPStatus, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)
