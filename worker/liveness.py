"""What makes a worker's death cost seconds, not the job timeout, however the worker is started.

arq locks a running job for the longest job timeout + 10 s (15 minutes here): a SIGKILLed worker's jobs would sit
that long. Built from arq's public hooks and settings only, so `spatialgen-worker` and arq's own CLI
(`arq worker.settings.WorkerSettings`) behave the same:

- a keeper task each worker starts in `on_startup` (`keep_locks`) shortens the long lock arq takes on every due job to
  LOCK_SECONDS, every LOCK_SECONDS / 3;
- every job function that runs longer than that renews its short lock while it runs (`renewed_lock`, applied by
  worker/jobs.py's `@job`), so a dead worker's jobs run again within about LOCK_SECONDS and a live one's never;
- the workers' Redis client retries a command through an outage (app/state/connection.py: `worker_pool`), so a
  poll during a Redis restart or failover waits instead of ending the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from arq.constants import in_progress_key_prefix
from redis.exceptions import RedisError

from app.domain.clock import now_ms
from app.state import UploadState

log = logging.getLogger("spatialgen.worker")

LOCK_SECONDS = 15.0
"""Lifetime of a job's in-progress lock; renewed every LOCK_SECONDS / 3 while the job runs."""
KEEPER_LIMIT = 1000
"""Due jobs the keeper looks at per tick: the head of the queue, which workers take next."""
SLACK_MS = 2000
"""A lock longer than LOCK_SECONDS by more than this was not set by a renewal."""


@contextlib.asynccontextmanager
async def renewed_lock(ctx: dict[str, Any]) -> AsyncIterator[None]:
    """Hold the running job's in-progress lock at LOCK_SECONDS, renewed while the body runs.

    Without a job id in ctx (a job function called directly, as tests do) this does nothing.
    """
    job_id = ctx.get("job_id")
    redis = ctx.get("redis")
    if job_id is None or redis is None:
        yield
        return
    key = in_progress_key_prefix + job_id

    async def renew() -> None:
        # A job that ends within LOCK_SECONDS / 3 never touches its lock (no Redis call); one that dies sooner leaves
        # arq's long lock, which the keeper shortens (keep_locks).
        while True:
            await asyncio.sleep(LOCK_SECONDS / 3)
            with contextlib.suppress(RedisError, OSError):
                await redis.pexpire(key, int(LOCK_SECONDS * 1000))

    task = asyncio.create_task(renew())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def keep_locks(state: UploadState, queue: str) -> None:
    """Forever: shorten the long locks of the queue's due jobs every LOCK_SECONDS / 3 (see the module header)."""
    while True:
        try:
            shortened = await state.shorten_locks(
                queue, now_ms=now_ms(), lock_ms=int(LOCK_SECONDS * 1000), slack_ms=SLACK_MS, limit=KEEPER_LIMIT
            )
            if shortened:
                log.info("shortened the locks of %d jobs whose worker stopped before they began", shortened)
        except (RedisError, OSError) as exc:
            log.warning("lock keeper: Redis unavailable (%r)", exc)
        await asyncio.sleep(LOCK_SECONDS / 3)
