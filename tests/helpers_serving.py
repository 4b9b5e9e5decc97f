"""The prediction service called in this process, without a server: for the tests that replace a
part of it, or that count what serving loads (this module imports nothing of Transfer Lab)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI


async def predict_in_process(app: FastAPI, files: dict[str, tuple[str, bytes]]) -> httpx.Response:
    """``POST /predict`` to ``app``, its lifespan (the batcher) running for the call."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://service") as client,
    ):
        return await client.post("/predict", files=files)
