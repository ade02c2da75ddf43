"""Integration fixtures: the Litestar app in-process over the real Valkey/moto, and an arq worker in burst mode."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from arq.connections import RedisSettings
from arq.worker import Worker
from redis.asyncio import Redis

from app.domain.clock import SYSTEM_CLOCK, Clock
from app.http.app import create_app, open_services
from app.settings import Settings
from app.storage.s3 import ObjectStore
from tests.conftest import arq_pool
from worker.settings import WorkerSettings


@contextlib.asynccontextmanager
async def api_client(settings: Settings, *, clock: Clock = SYSTEM_CLOCK) -> AsyncIterator[httpx.AsyncClient]:
    """The API app served in this event loop (so a background worker keeps running meanwhile).

    Litestar's lifespan runs in an anyio task group that pytest-asyncio may tear down from another
    task, so this opens the same services the lifespan would.
    """
    app = create_app(settings)
    async with open_services(settings, clock=clock) as services:
        app.state.services = services
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as c:
            yield c


@pytest.fixture
async def client(settings: Settings, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    """The API app (real lifespan, real Redis) behind an in-process HTTP client."""
    async with api_client(settings) as c:
        yield c


async def run_worker_burst(settings: Settings, **overrides: Any) -> Worker:
    """Run an unmodified arq worker with the service's WorkerSettings until its queue is empty."""
    pool = arq_pool(settings.redis.url)
    kwargs: dict[str, Any] = {
        "functions": WorkerSettings.functions,
        "cron_jobs": [],
        "on_startup": WorkerSettings.on_startup,
        "on_shutdown": WorkerSettings.on_shutdown,
        "queue_name": settings.worker.queue_name,
        "max_tries": WorkerSettings.max_tries,
        "job_serializer": WorkerSettings.job_serializer,
        "job_deserializer": WorkerSettings.job_deserializer,
        "redis_settings": RedisSettings.from_dsn(settings.redis.url),
        "redis_pool": pool,
        "burst": True,
        "poll_delay": 0.05,
        "handle_signals": False,
        "ctx": {"settings": settings},
        **overrides,
    }
    worker = Worker(**kwargs)
    try:
        await worker.main()
    finally:
        await worker.close()
        await pool.aclose()
    return worker


@pytest.fixture
def burst(settings: Settings, store: ObjectStore) -> Any:
    """Call to drain the upload queue with a real worker (the store fixture empties the bucket first)."""

    async def go(**overrides: Any) -> Worker:
        return await run_worker_burst(settings, **overrides)

    return go


@pytest.fixture
async def running_worker(settings: Settings, store: ObjectStore) -> AsyncIterator[Worker]:
    """An arq worker (the service's WorkerSettings) running in the background for the test."""
    pool = arq_pool(settings.redis.url)
    worker = Worker(
        functions=WorkerSettings.functions,
        on_startup=WorkerSettings.on_startup,
        on_shutdown=WorkerSettings.on_shutdown,
        queue_name=settings.worker.queue_name,
        job_serializer=WorkerSettings.job_serializer,
        job_deserializer=WorkerSettings.job_deserializer,
        redis_settings=RedisSettings.from_dsn(settings.redis.url),
        redis_pool=pool,
        poll_delay=0.02,
        max_jobs=20,
        handle_signals=False,
        ctx={"settings": settings},
    )
    task = asyncio.create_task(worker.main())
    yield worker
    # Stop picking jobs and let the poll loop go idle, so the cancel below lands in its sleep and not
    # halfway through one of arq's pipelines (which would leave an unclosed pipeline to the GC).
    worker.allow_pick_jobs = False
    worker.allow_abort_jobs = False
    await asyncio.sleep(0.2)
    task.cancel()  # stop polling, then let jobs already running finish (close() would cancel them)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    running = [t for t in worker.tasks.values() if not t.done()]
    if running:
        await asyncio.wait(running, timeout=30)
    await worker.close()
    await pool.aclose()
