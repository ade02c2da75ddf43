"""`spatialgen-worker`: one arq worker process running worker.settings.WorkerSettings, as arq's own CLI would
(`arq worker.settings.WorkerSettings` behaves the same), with logging set up and credentials checked first.

SIGTERM/SIGINT: the worker stops taking jobs, lets the ones it holds run for up to
SPATIALGEN_SHUTDOWN_GRACE_SECONDS, then cancels the rest; arq puts a cancelled job back in its queue,
where another worker retries it (every job is idempotent). A Redis that cannot be reached at start is
waited for (with backoff), not a reason to exit.
"""

from __future__ import annotations

import logging
import logging.config
import time

from arq.logs import default_log_config
from arq.worker import create_worker

from app.settings import Settings
from app.state.pipeline import REDIS_UNAVAILABLE
from app.storage.credentials import require_credentials
from worker.settings import WorkerSettings, fresh_pool

log = logging.getLogger("spatialgen.worker")


def main() -> None:
    """Console-script entry point."""
    logging.config.dictConfig(default_log_config(verbose=False))
    require_credentials(Settings.from_env().storage)
    delay = 1.0
    while True:
        worker = create_worker(WorkerSettings, redis_pool=fresh_pool())  # type: ignore[arg-type]
        try:
            worker.run()
            return
        except REDIS_UNAVAILABLE as exc:  # Redis down for longer than the client's retries (minutes)
            log.warning("cannot reach Redis (%r); trying again in %.0f s", exc, delay)
            time.sleep(delay)
            delay = min(30.0, delay * 2)
