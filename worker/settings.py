"""arq WorkerSettings for the upload workers: `arq worker.settings.WorkerSettings`.

Scale by running more of these processes; each takes jobs from the same Redis queue.
"""

from __future__ import annotations

from typing import Any, ClassVar

from arq.connections import RedisSettings

from app.settings import Settings
from worker import jobs

_settings = Settings.from_env()


class WorkerSettings:
    """Upload worker: provisioning (and later completion, cleanup, expiry)."""

    functions: ClassVar[list[Any]] = [jobs.provision_group, jobs.complete_file, jobs.purge_group]
    on_startup = jobs.on_startup
    on_shutdown = jobs.on_shutdown
    redis_settings = RedisSettings.from_dsn(_settings.redis_url)
    queue_name = _settings.queue_name
    max_jobs = _settings.worker_max_jobs
    # Storage outages are retried with backoff (see jobs.backoff_seconds); ~2.5 h of tries before giving up.
    # part-urls and complete wait on these jobs, so poll often (one cheap ZRANGEBYSCORE per poll).
    poll_delay = 0.05
    max_tries = 40
    job_timeout = 600
    keep_result = 3600
