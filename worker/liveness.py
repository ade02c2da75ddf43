"""The worker process's arq Worker, made to survive what kills a plain one: a dead peer and a Redis outage.

- Short, renewed in-progress locks: a job's lock lives LOCK_SECONDS and is renewed every third of that
  while the job runs, so a SIGKILLed worker's jobs run again within about LOCK_SECONDS (plus a poll),
  however long their time limit, and a slow but live worker is never doubled.
- A poll that fails because Redis is down, restarting or failing over is retried with backoff instead
  of ending the process; the jobs in flight carry on, and redis-py reconnects on the next command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from arq.constants import in_progress_key_prefix
from arq.worker import Worker
from redis.exceptions import RedisError

from app.state.pipeline import REDIS_UNAVAILABLE

log = logging.getLogger("spatialgen.worker")

LOCK_SECONDS = 15.0
"""Lifetime of a job's in-progress lock; it is renewed every LOCK_SECONDS / 3 while the job runs."""
MAX_BACKOFF_SECONDS = 5.0


class ResilientWorker(Worker):
    """arq's Worker with renewed short locks and polls that outlive Redis outages."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # arq sizes the lock to the longest time limit + 10 s (15 minutes here); the renewal replaces that.
        self.in_progress_timeout_s = LOCK_SECONDS
        self._failed_polls = 0

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except REDIS_UNAVAILABLE as exc:
            delay = min(MAX_BACKOFF_SECONDS, 0.1 * 2**self._failed_polls)
            self._failed_polls += 1
            log.warning("Redis unavailable while polling (%r); trying again in %.1f s", exc, delay)
            await asyncio.sleep(delay)
        else:
            if self._failed_polls:
                log.warning("Redis is back after %d failed polls", self._failed_polls)
            self._failed_polls = 0

    async def run_job(self, job_id: str, score: int) -> None:
        renewal = asyncio.ensure_future(self._renew_lock(job_id))
        try:
            await super().run_job(job_id, score)
        finally:
            renewal.cancel()

    async def _renew_lock(self, job_id: str) -> None:
        key = in_progress_key_prefix + job_id
        while True:
            await asyncio.sleep(LOCK_SECONDS / 3)
            # GT: only ever extend (a cron job's lock, kept after it ends, is never shortened by this).
            with contextlib.suppress(RedisError, OSError):
                await self.pool.pexpire(key, int(LOCK_SECONDS * 1000), gt=True)
