"""arq job functions: thin wrappers that take IDs, call app.storage_tasks and map failures to retries.

Shared clients (Redis state, S3 store) are created once per worker process in `on_startup`.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from arq import Retry

from app.settings import Settings
from app.state import UploadState
from app.storage import ObjectStore
from app.storage_tasks import is_transient
from app.storage_tasks import provision_group as provision_group_task

log = logging.getLogger("spatialgen.worker")

# Exponential backoff for an unreachable store, capped: 1, 2, 4 ... 300 s.
BACKOFF_CAP_SECONDS = 300


def backoff_seconds(job_try: int) -> int:
    """Delay before retry number job_try (1-based)."""
    return int(min(BACKOFF_CAP_SECONDS, 2 ** max(0, job_try - 1)))


async def on_startup(ctx: dict[str, Any]) -> None:
    """Create the per-process clients jobs share."""
    settings = Settings.from_env() if "settings" not in ctx else ctx["settings"]
    stack = contextlib.AsyncExitStack()
    ctx["settings"] = settings
    ctx["stack"] = stack
    ctx["store"] = await stack.enter_async_context(ObjectStore.connect(settings))
    ctx["state"] = UploadState(ctx["redis"])


async def on_shutdown(ctx: dict[str, Any]) -> None:
    """Close the clients."""
    stack = ctx.get("stack")
    if stack is not None:
        await stack.aclose()


async def provision_group(ctx: dict[str, Any], session_id: str) -> dict[str, str]:
    """Open the S3 multipart uploads of a new group."""
    try:
        return await provision_group_task(ctx["state"], ctx["store"], session_id)
    except Exception as exc:
        if is_transient(exc):
            delay = backoff_seconds(ctx["job_try"])
            log.warning("provision %s: storage unavailable (%s), retry in %ss", session_id, exc, delay)
            raise Retry(defer=delay) from exc
        raise
