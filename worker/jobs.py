"""arq job functions: thin wrappers that take IDs, call app.storage_tasks and map failures to retries.

Shared clients (Redis state, S3 store) are created once per worker process in `on_startup`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from arq import Retry

from app import reasons, storage_tasks
from app.metrics import F_GROUPS_EXPIRED, job_field
from app.reasons import Reason
from app.settings import Settings
from app.state import UploadState
from app.state.keys import METRICS_KEY
from app.storage.s3 import ObjectStore
from app.storage_tasks import is_transient
from app.timefmt import now_ms

log = logging.getLogger("spatialgen.worker")

GAVE_UP = reasons.stored(Reason.STORAGE_UNAVAILABLE)
"""The stable reason a file is handed back with when its completion job gives up."""

# Exponential backoff for an unreachable store, capped: 1, 2, 4 ... 300 s; ~2.5 h of tries in all.
BACKOFF_CAP_SECONDS = 300
MAX_TRIES = 40

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def counted(fn: F) -> F:
    """Count each run's outcome (ok / retried / failed) in the shared metrics hash; never fails the job."""

    @functools.wraps(fn)  # arq names the job after the wrapped function
    async def run(ctx: dict[str, Any], *args: Any) -> Any:
        outcome = "failed"
        try:
            result = await fn(ctx, *args)
            outcome = "ok"
            return result
        except Retry:
            outcome = "retried" if ctx.get("job_try", 1) < MAX_TRIES else "failed"
            raise
        finally:
            with contextlib.suppress(Exception):
                await ctx["redis"].hincrby(METRICS_KEY, job_field(fn.__name__, outcome), 1)

    return cast(F, run)


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
    ctx["state"] = state = UploadState(ctx["redis"], write_replicas=settings.redis_write_replicas)
    # Background provisioning shares storage with a client waiting in part-urls (which provisions its own
    # file at once): a bounded number of provisioning calls per worker keeps that client's call from queueing
    # behind a backlog of ours at the store.
    ctx["provision_gate"] = asyncio.Semaphore(settings.worker_provision_concurrency)
    await state.load_scripts()  # a broken script stops the worker at start, not on a job's first call


async def on_shutdown(ctx: dict[str, Any]) -> None:
    """Close the clients."""
    if "state" in ctx:
        ctx["state"].close()
    stack = ctx.get("stack")
    if stack is not None:
        await stack.aclose()


def _retry_if_transient(ctx: dict[str, Any], what: str, exc: Exception) -> None:
    """Turn a storage or Redis outage into an arq Retry with backoff; anything else propagates."""
    if is_transient(exc):
        delay = backoff_seconds(ctx["job_try"])
        log.warning("%s: a dependency is unavailable (%r), retry in %ss", what, exc, delay)
        raise Retry(defer=delay) from exc


@counted
async def provision_group(ctx: dict[str, Any], session_id: str) -> dict[str, str]:
    """Open the S3 multipart uploads of a new group.

    Only a retry lists the open uploads to adopt one an earlier try opened and did not record: arq counts a
    job's tries in Redis (a try killed with its worker counts too), so a first try has none to adopt, and a
    provisioning costs one storage call per file instead of two.
    """
    try:
        async with ctx.get("provision_gate") or contextlib.nullcontext():
            return await storage_tasks.provision_group(
                ctx["state"], ctx["store"], session_id, adopt=ctx.get("job_try", 1) > 1
            )
    except Exception as exc:
        _retry_if_transient(ctx, f"provision {session_id}", exc)
        raise


@counted
async def complete_file(
    ctx: dict[str, Any], session_id: str, upload_id: str, attempt: int, parts: list[tuple[int, str]]
) -> str:
    """Assemble and verify one file; the group's last file creates the library record."""
    try:
        return await storage_tasks.complete_file(
            ctx["state"], ctx["store"], ctx["settings"],
            session_id=session_id, upload_id=upload_id, attempt=attempt, parts=parts,
        )  # fmt: skip
    except Exception as exc:
        if ctx.get("job_try", 1) < MAX_TRIES:
            _retry_if_transient(ctx, f"complete {session_id}/{upload_id}", exc)
        # Giving up (an error that retrying won't fix, or the last try): hand the file back to the client
        # as 'uploading' with a stable reason (the details go to the log, never to clients), instead of
        # leaving it 'completing'. If this hand-back fails too, the re-drive cron does it later.
        log.error("complete %s/%s gave up: %r", session_id, upload_id, exc)
        await ctx["state"].reject_complete(session_id, upload_id, attempt=attempt, now_ms=now_ms(),
                                           reason=GAVE_UP)  # fmt: skip
        raise


@counted
async def purge_group(ctx: dict[str, Any], session_id: str, key_prefix: str = "") -> dict[str, int]:
    """Abort open uploads and delete objects of a canceled, expired or failed group (by its storage prefix
    when its keys are gone)."""
    try:
        return await storage_tasks.purge_group(ctx["state"], ctx["store"], session_id, key_prefix)
    except Exception as exc:
        _retry_if_transient(ctx, f"purge {session_id}", exc)
        raise


@counted
async def refresh_parts(ctx: dict[str, Any], session_id: str, upload_id: str) -> int:
    """Track which parts storage has received for one file (ListParts)."""
    try:
        return await storage_tasks.refresh_parts(ctx["state"], ctx["store"], session_id, upload_id)
    except Exception as exc:
        _retry_if_transient(ctx, f"refresh {session_id}/{upload_id}", exc)
        raise


@counted
async def expire_due_groups(ctx: dict[str, Any]) -> int:
    """Cron: expire groups past their expiresAt (purges are queued as jobs), then trim the accounts whose ended
    groups are over the cap."""
    expired = await storage_tasks.expire_due_groups(ctx["state"], ctx["settings"])
    if expired:
        with contextlib.suppress(Exception):
            await ctx["redis"].hincrby(METRICS_KEY, F_GROUPS_EXPIRED, expired)
    await ctx["state"].trim_ended(ctx["settings"].retained_ended_groups)
    return expired


@counted
async def abort_orphan_uploads(ctx: dict[str, Any]) -> int:
    """Cron: abort multipart uploads that no live file owns."""
    return await storage_tasks.abort_orphan_uploads(ctx["state"], ctx["store"], ctx["settings"])


@counted
async def reconcile_objects(ctx: dict[str, Any]) -> int:
    """Cron: delete stored objects that no live or retained group owns."""
    return await storage_tasks.reconcile_objects(ctx["state"], ctx["store"], ctx["settings"])


@counted
async def redrive(ctx: dict[str, Any]) -> dict[str, int]:
    """Cron: hand back completions whose job is gone; queue lost processing jobs again."""
    return await storage_tasks.redrive(ctx["state"], ctx["settings"])
