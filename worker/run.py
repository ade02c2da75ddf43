"""`spatialgen-worker`: one arq worker process running worker.settings.WorkerSettings.

SIGTERM/SIGINT: the worker stops taking jobs, lets the ones it holds run for up to
SPATIALGEN_SHUTDOWN_GRACE_SECONDS, then cancels the rest; arq puts a cancelled job back in its queue,
where another worker retries it (every job is idempotent).
"""

from __future__ import annotations

import logging.config

from arq.logs import default_log_config
from arq.worker import run_worker

from worker.settings import WorkerSettings


def main() -> None:
    """Console-script entry point."""
    logging.config.dictConfig(default_log_config(verbose=False))
    run_worker(WorkerSettings)  # type: ignore[arg-type]
