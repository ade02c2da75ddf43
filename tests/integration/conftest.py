"""Integration fixtures: the Litestar app in-process over the real Valkey/moto, and an arq worker in burst mode."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from app.api import create_app
from app.settings import Settings
from app.storage import ObjectStore
from worker.settings import WorkerSettings


@pytest.fixture
async def client(settings: Settings, redis: Redis) -> AsyncIterator[AsyncTestClient[Any]]:
    """The API app (real lifespan, real Redis) behind an in-process HTTP client."""
    async with AsyncTestClient(app=create_app(settings)) as c:
        yield c


async def run_worker_burst(settings: Settings, **overrides: Any) -> Worker:
    """Run an unmodified arq worker with the service's WorkerSettings until its queue is empty."""
    pool = ArqRedis.from_url(settings.redis_url)
    kwargs: dict[str, Any] = {
        "functions": WorkerSettings.functions,
        "on_startup": WorkerSettings.on_startup,
        "on_shutdown": WorkerSettings.on_shutdown,
        "queue_name": settings.queue_name,
        "max_tries": WorkerSettings.max_tries,
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
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
