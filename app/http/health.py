"""Readiness: is this API process able to serve? Redis must answer; storage and Redis's eviction policy are
reported but do not take the process out of rotation.

Why storage does not decide readiness: an S3 outage would pull every API pod out of the load balancer at once,
stopping creates, status reads and cancels that never touch S3; part-urls answers its own 503 with Retry-After.
Each check is bounded (0.8 s), and the result is shared for up to a second, so unauthenticated probes cannot
multiply Redis or S3 calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from app.storage.lazy import LazyObjectStore
from app.upkeep import identity

log = logging.getLogger("spatialgen.health")

CHECK_TIMEOUT_SECONDS = 0.8
"""Budget of each check; they run at once, so the probe answers within about this long."""
IDENTITY_SECONDS = 30.0
"""How long one verdict on the Redis identity is reported (it costs a storage read)."""
CACHE_SECONDS = 1.0
"""How long one result answers every probe."""
OK = "ok"
TIMEOUT = "timeout"
STARTING = "starting"
"""Storage: the client is still being created (aiobotocore loads in the background at startup)."""


class Readiness:
    """One readiness result: whether to serve, and every check's outcome."""

    __slots__ = ("checks", "ready")

    def __init__(self, ready: bool, checks: dict[str, str]) -> None:
        self.ready = ready
        self.checks = checks


class ReadinessProbe:
    """Checks the dependencies the service needs, at most once a second whatever the probe rate."""

    def __init__(
        self, redis: Redis, storage: LazyObjectStore, *, key_prefix: str = "", timeout: float = CHECK_TIMEOUT_SECONDS
    ) -> None:
        self.redis = redis
        self.storage = storage
        self.key_prefix = key_prefix
        self.timeout = timeout
        self._identity: tuple[float, str] | None = None
        self._latest: tuple[float, Readiness] | None = None
        self._running: asyncio.Task[Readiness] | None = None

    async def check(self) -> Readiness:
        """The current result: a cached one up to CACHE_SECONDS old, else one fresh run shared by all callers."""
        if self._latest is not None and time.monotonic() - self._latest[0] < CACHE_SECONDS:
            return self._latest[1]
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._run())
        return await asyncio.shield(self._running)

    async def _run(self) -> Readiness:
        redis_result, storage_result, policy, identity = await asyncio.gather(
            self._bounded("redis", self._ping_redis), self._bounded("storage", self._ping_storage),
            self._eviction_policy(), self._bounded("redisIdentity", self._identity_verdict),
        )  # fmt: skip
        result = Readiness(redis_result == OK, {"redis": redis_result, "storage": storage_result,
                                                "evictionPolicy": policy, "redisIdentity": identity})  # fmt: skip
        self._latest = (time.monotonic(), result)
        return result

    async def _bounded(self, name: str, check: Callable[[], Awaitable[str | None]]) -> str:
        try:
            async with asyncio.timeout(self.timeout):
                outcome = await check()
        except TimeoutError:
            log.warning("readiness: %s did not answer within %.1f s", name, self.timeout)
            return TIMEOUT
        except Exception as exc:  # any failure means "not ok"; details go to the log, not to the caller
            log.warning("readiness: %s check failed: %r", name, exc)
            return f"error: {type(exc).__name__}"
        return outcome or OK

    async def _ping_redis(self) -> None:
        await self.redis.ping()

    async def _ping_storage(self) -> str | None:
        store = await self.storage.get_if_ready()
        if store is None:
            return STARTING
        await store.ping()
        return None

    async def _identity_verdict(self) -> str | None:
        """Whether the sweeps may delete: this Redis is the one the stored objects were written with (reported, never
        deciding; checked at most every IDENTITY_SECONDS: it reads a marker from storage)."""
        if self._identity is not None and time.monotonic() - self._identity[0] < IDENTITY_SECONDS:
            return self._identity[1]
        store = await self.storage.get_if_ready()
        if store is None:
            return STARTING
        verdict = await identity.verify(self.redis, store, self.key_prefix, bind=False)
        shown = OK if verdict.allows_deletion else f"{verdict.value} (sweeps refuse to delete)"
        self._identity = (time.monotonic(), shown)
        return shown

    async def _eviction_policy(self) -> str:
        """Production Redis must not evict: any eviction policy may drop groups, jobs or keys under pressure."""
        try:
            async with asyncio.timeout(self.timeout):
                info = await self.redis.info("memory")
        except Exception:
            return "unknown"
        policy = str(info.get("maxmemory_policy", "unknown"))
        return OK if policy == "noeviction" else f"{policy} (must be noeviction)"
