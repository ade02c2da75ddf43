"""Readiness: Redis (PING) and storage (HeadBucket) checked concurrently, each bounded so the probe answers in < 1 s.

The storage client is the API process's shared LazyObjectStore (created in the background at startup).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from app.storage.lazy import LazyObjectStore

log = logging.getLogger("spatialgen.health")

CHECK_TIMEOUT_SECONDS = 0.8
"""Budget of each check; both run at once, so the probe answers within about this long."""
OK = "ok"
TIMEOUT = "timeout"


class ReadinessProbe:
    """Checks the dependencies the service needs to do its work."""

    def __init__(self, redis: Redis, storage: LazyObjectStore, *, timeout: float = CHECK_TIMEOUT_SECONDS) -> None:
        self.redis = redis
        self.storage = storage
        self.timeout = timeout

    async def check(self) -> dict[str, str]:
        """{"redis": result, "storage": result}; each result is "ok", "timeout" or "error: <ExceptionClass>"."""
        redis_result, storage_result = await asyncio.gather(
            self._bounded("redis", self._ping_redis), self._bounded("storage", self._ping_storage)
        )
        return {"redis": redis_result, "storage": storage_result}

    async def _bounded(self, name: str, check: Callable[[], Awaitable[None]]) -> str:
        try:
            async with asyncio.timeout(self.timeout):
                await check()
        except TimeoutError:
            log.warning("readiness: %s did not answer within %.1f s", name, self.timeout)
            return TIMEOUT
        except Exception as exc:  # any failure means "not ready"; details go to the log, not to the caller
            log.warning("readiness: %s check failed: %r", name, exc)
            return f"error: {type(exc).__name__}"
        return OK

    async def _ping_redis(self) -> None:
        await self.redis.ping()

    async def _ping_storage(self) -> None:
        store = await self.storage.get()
        await store.ping()
