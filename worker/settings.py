"""arq WorkerSettings for the upload workers: `arq worker.settings.WorkerSettings`.

Scale by running more of these processes; each takes jobs from the same Redis queue.
"""

from __future__ import annotations

from typing import Any, ClassVar

from arq import cron, func
from arq.connections import RedisSettings
from arq.cron import CronJob

from app.settings import Settings
from app.state.jobs import EXPIRE_CRON, ORPHAN_CRON, REFRESH_PARTS_JOB, deserialize, serialize
from worker import jobs

_settings = Settings.from_env()


def every(seconds: int) -> dict[str, Any]:
    """arq cron fields that fire every `seconds` (a divisor of 60, or a multiple of 60 up to an hour)."""
    if seconds < 60:
        return {"second": set(range(0, 60, seconds))}
    minutes = max(1, min(60, seconds // 60))
    return {"minute": set(range(0, 60, minutes)), "second": {0}}


def cron_jobs(settings: Settings) -> list[CronJob]:
    """The periodic jobs; `unique` cron ids mean several workers run each tick once between them."""
    return [
        cron(
            jobs.expire_due_groups,
            name=EXPIRE_CRON,
            run_at_startup=True,
            **every(settings.expiry_sweep_seconds),
        ),
        cron(jobs.abort_orphan_uploads, name=ORPHAN_CRON, **every(settings.orphan_sweep_seconds)),
    ]


class WorkerSettings:
    """Upload worker: provisioning (and later completion, cleanup, expiry)."""

    functions: ClassVar[list[Any]] = [
        jobs.provision_group,
        jobs.complete_file,
        jobs.purge_group,
        # No kept result: the job id is free again once it ran, so the next refresh can be queued.
        func(jobs.refresh_parts, name=REFRESH_PARTS_JOB, keep_result=0),
    ]
    cron_jobs = cron_jobs(_settings)
    on_startup = jobs.on_startup
    on_shutdown = jobs.on_shutdown
    redis_settings = RedisSettings.from_dsn(_settings.redis_url)
    queue_name = _settings.queue_name
    max_jobs = _settings.worker_max_jobs
    # part-urls and complete wait on these jobs, so poll often (one cheap ZRANGEBYSCORE per poll).
    poll_delay = 0.05
    # Storage outages are retried with backoff (see jobs.backoff_seconds); ~2.5 h of tries before giving up.
    max_tries = jobs.MAX_TRIES
    job_timeout = 600
    keep_result = 3600
    # Our job format (app/state/jobs.py): msgpack through arq's hooks, never pickle.
    job_serializer = staticmethod(serialize)
    job_deserializer = staticmethod(deserialize)
    # SIGTERM: stop taking jobs and let running ones finish for the grace period; arq re-queues the rest.
    job_completion_wait = max(1, round(_settings.shutdown_grace_seconds))
