"""Readiness: Redis (PING) and storage (HeadBucket) checked concurrently, each bounded so the probe answers in < 1 s.

The API process otherwise never talks to S3 (nor imports aiobotocore, ~1-1.7 s of imports), so the storage client
is created on the first readiness check, in the background: aiobotocore is imported and botocore's S3 data files
are read in a thread, off the event loop; a check that times out meanwhile leaves the creation running for the
next check. The client is kept until shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from app.settings import Settings

if TYPE_CHECKING:
    from app.storage.s3 import ObjectStore

log = logging.getLogger("spatialgen.health")

CHECK_TIMEOUT_SECONDS = 0.8
"""Budget of each check; both run at once, so the probe answers within about this long."""
OK = "ok"
TIMEOUT = "timeout"


class ReadinessProbe:
    """Checks the dependencies the service needs to do its work."""

    def __init__(self, settings: Settings, redis: Redis, *, timeout: float = CHECK_TIMEOUT_SECONDS) -> None:
        self.settings = settings
        self.redis = redis
        self.timeout = timeout
        self._stack = contextlib.AsyncExitStack()
        self._opening: asyncio.Task[ObjectStore] | None = None

    async def check(self) -> dict[str, str]:
        """{"redis": result, "storage": result}; each result is "ok", "timeout" or "error: <ExceptionClass>"."""
        redis_result, storage_result = await asyncio.gather(
            self._bounded("redis", self._ping_redis), self._bounded("storage", self._ping_storage)
        )
        return {"redis": redis_result, "storage": storage_result}

    def warm(self) -> None:
        """Start creating the storage client now (API startup), so the first probe does not pay for it."""
        if self._opening is None:
            self._opening = asyncio.create_task(self._open_store())

    async def aclose(self) -> None:
        """Close the storage client, if one was created."""
        if self._opening is not None:
            with contextlib.suppress(Exception):
                await self._opening  # creation does no network I/O; let it finish so its client can be closed
        await self._stack.aclose()

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
        if self._opening is None:
            self._opening = asyncio.create_task(self._open_store())
        opening = self._opening
        try:
            # Shielded: a check that times out leaves the creation running for the next check to use.
            store = await asyncio.shield(opening)
        except Exception:
            if self._opening is opening:
                self._opening = None  # creating the client failed: try again on the next check
            raise
        await store.ping()

    async def _open_store(self) -> ObjectStore:
        # aiobotocore's import and S3 model loading block for ~1.5 s: done in a thread, first.
        session = await asyncio.to_thread(_prepared_session)
        from app.storage.s3 import ObjectStore

        # One attempt, short timeouts: a probe must report a dead store now, not after retries and backoff.
        return await self._stack.enter_async_context(
            ObjectStore.connect(
                self.settings, connect_timeout=self.timeout, read_timeout=self.timeout, attempts=1, pool_size=2,
                session=session,
            )
        )  # fmt: skip


def _prepared_session() -> Any:
    """An aiobotocore session with S3's model already loaded (run in a thread: imports and file reads block)."""
    from aiobotocore.session import get_session

    session = get_session()
    loader = session.get_component("data_loader")
    with contextlib.suppress(Exception):  # best effort: whatever is not cached here is loaded by create_client
        for kind in ("service-2", "endpoint-rule-set-1"):
            loader.load_service_model("s3", kind)
        for name in ("endpoints", "partitions", "sdk-default-configuration"):
            loader.load_data(name)
    return session
