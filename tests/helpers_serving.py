"""The prediction service called in this process, without a server: for the tests that replace a
part of it, or that count what serving loads (this module imports nothing of Transfer Lab)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI

T = TypeVar("T")


def run_apart(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` in a thread of its own: an earlier test may leave an event loop running in
    this one (Playwright's synchronous API keeps one), where ``asyncio.run`` refuses to start."""
    with ThreadPoolExecutor(max_workers=1) as apart:
        return apart.submit(asyncio.run, coroutine).result()


async def predict_in_process(app: FastAPI, files: dict[str, tuple[str, bytes]]) -> httpx.Response:
    """``POST /predict`` to ``app``, its lifespan (the batcher) running for the call."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://service") as client,
    ):
        return await client.post("/predict", files=files)
