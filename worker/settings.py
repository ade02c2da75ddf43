"""arq WorkerSettings for the upload workers: run by `spatialgen-worker` (worker/run.py), or by arq's own CLI
(`arq worker.settings.WorkerSettings`) with the same behaviour: short renewed locks and Redis outages ridden out
come from these settings and hooks (worker/liveness.py), not from how the process starts.

Scale by running more of these processes; each takes jobs from the same Redis queue.
"""

from __future__ import annotations

from typing import Any, ClassVar

from arq import cron, func
from arq.connections import ArqRedis
from arq.cron import CronJob

from app.settings import Settings
from app.state.connection import worker_pool
from app.state.jobs import (
    COMPLETE_JOB,
    EXPIRE_CRON,
    ORPHAN_CRON,
    PROVISION_JOB,
    PURGE_JOB,
    RECONCILE_CRON,
    REDRIVE_CRON,
    REFRESH_GROUP_JOB,
    REFRESH_PARTS_JOB,
    deserialize,
    serialize,
)
from worker import jobs, webhooks

_settings = Settings.from_env()

# Per-function time limits, sized to the work. They do not decide how soon a dead worker's jobs run again: the
# in-progress lock is short and renewed while a job runs (worker/liveness.py).
PROVISION_TIMEOUT = 120  # up to 64 files: a ListMultipartUploads + CreateMultipartUpload each
COMPLETE_TIMEOUT = 900  # CompleteMultipartUpload of 10,000 parts can take minutes on S3
PURGE_TIMEOUT = 600
REFRESH_TIMEOUT = 300  # a group's files: ListParts of 10,000 parts is 10 pages each
SWEEP_TIMEOUT = 1800  # the orphan sweep and the reconciliation page through the whole prefix


def fresh_pool() -> ArqRedis:
    """The workers' Redis client, set up as arq's own create_pool would (a client object only: it connects on first
    use); its commands retry through a Redis outage (app/state/connection.py)."""
    pool = worker_pool(_settings.redis)
    pool.job_serializer, pool.job_deserializer = serialize, deserialize
    pool.default_queue_name = _settings.worker.queue_name
    return pool


def every(seconds: int) -> dict[str, Any]:
    """arq cron fields that fire every `seconds` (a divisor of 60, or a multiple of 60 up to an hour)."""
    if seconds < 60:
        return {"second": set(range(0, 60, seconds))}
    minutes = max(1, min(60, seconds // 60))
    return {"minute": set(range(0, 60, minutes)), "second": {0}}


def cron_jobs(settings: Settings) -> list[CronJob]:
    """The periodic jobs; `unique` cron ids mean several workers run each tick once between them."""
    crons = [
        cron(jobs.expire_due_groups, name=EXPIRE_CRON, run_at_startup=True, timeout=300,
             **every(settings.sweeps.expiry_sweep_seconds)),
        cron(jobs.abort_orphan_uploads, name=ORPHAN_CRON, timeout=SWEEP_TIMEOUT,
             **every(settings.sweeps.orphan_sweep_seconds)),
        cron(jobs.redrive, name=REDRIVE_CRON, timeout=300, **every(settings.sweeps.redrive_seconds)),
    ]  # fmt: skip
    if settings.sweeps.reconcile_seconds:
        crons.append(cron(jobs.reconcile_objects, name=RECONCILE_CRON, timeout=SWEEP_TIMEOUT,
                          **every(settings.sweeps.reconcile_seconds)))  # fmt: skip
    return crons


async def on_startup(ctx: dict[str, Any]) -> None:
    """The upload worker's clients, then its webhook side (the dispatcher and the webhook queue's worker)."""
    await jobs.on_startup(ctx)
    await webhooks.start(ctx)


async def on_shutdown(ctx: dict[str, Any]) -> None:
    """The webhook side first (its deliveries finish within the grace), then the upload worker's clients."""
    try:
        await webhooks.stop(ctx)
    finally:
        await jobs.on_shutdown(ctx)


class WorkerSettings:
    """Upload worker: provisioning, completion, purges, parts tracking and the sweeps."""

    # keep_result=0 on each function too, so a worker built from this list with its own settings keeps none either.
    functions: ClassVar[list[Any]] = [
        func(jobs.provision_group, name=PROVISION_JOB, timeout=PROVISION_TIMEOUT, keep_result=0),
        func(jobs.complete_file, name=COMPLETE_JOB, timeout=COMPLETE_TIMEOUT, keep_result=0),
        func(jobs.purge_group, name=PURGE_JOB, timeout=PURGE_TIMEOUT, keep_result=0),
        func(jobs.refresh_group_parts, name=REFRESH_GROUP_JOB, timeout=REFRESH_TIMEOUT, keep_result=0),
        func(jobs.refresh_parts, name=REFRESH_PARTS_JOB, timeout=REFRESH_TIMEOUT, keep_result=0),
    ]
    cron_jobs = cron_jobs(_settings)
    on_startup = on_startup
    on_shutdown = on_shutdown
    redis_pool = fresh_pool()
    queue_name = _settings.worker.queue_name
    max_jobs = _settings.worker.worker_max_jobs
    # part-urls and complete wait on these jobs, so poll often (one cheap ZRANGEBYSCORE per poll).
    poll_delay = 0.05
    # Storage and Redis outages are retried with backoff (jobs.backoff_seconds); ~2.5 h of tries.
    max_tries = jobs.MAX_TRIES
    job_timeout = COMPLETE_TIMEOUT
    # No result is kept: a finished job leaves nothing behind (a completion's part list included), and its id is free
    # again at once (the next parts refresh of a group can be queued). Outcomes are counted in the metrics.
    keep_result = 0
    # Our job format (app/state/jobs.py): msgpack through arq's hooks, never pickle.
    job_serializer = staticmethod(serialize)
    job_deserializer = staticmethod(deserialize)
    # SIGTERM: stop taking jobs and let running ones finish for the grace period; arq re-queues the rest.
    job_completion_wait = max(1, round(_settings.server.shutdown_grace_seconds))
