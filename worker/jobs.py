"""The arq job functions: one line each, calling the worker half of an upload step (app/uploads) or an upkeep
sweep (app/upkeep). `@job` gives every one the same outcome counting and the same retries.

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
from botocore.exceptions import BotoCoreError, ClientError

from app.domain import reasons
from app.domain.clock import now_ms
from app.domain.reasons import Reason
from app.settings import Settings
from app.state import UploadState
from app.state.keys import METRICS_KEY, job_field
from app.state.pipeline import REDIS_UNAVAILABLE
from app.storage.s3 import ObjectStore, StorageDeleteError, error_code
from app.upkeep import cleanup, expiry
from app.upkeep import redrive as redrive_sweep
from app.uploads import cancel, complete, provisioning, status
from app.uploads.cancel import PurgeRefused
from worker.liveness import keep_locks, renewed_lock

log = logging.getLogger("spatialgen.worker")

GAVE_UP = reasons.stored(Reason.STORAGE_UNAVAILABLE)
"""The stable reason a file is handed back with when its completion job gives up."""

# Exponential backoff for an unreachable store, capped: 1, 2, 4 ... 300 s; ~2.5 h of tries in all.
BACKOFF_CAP_SECONDS = 300
MAX_TRIES = 40

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
GiveUp = Callable[..., Awaitable[object]]


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: storage network trouble, throttling and 5xx; Redis unreachable,
    restarting, read-only after a failover or out of memory. False for client errors and our bugs."""
    if isinstance(exc, ClientError):
        code = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return code >= 500 or code == 429 or error_code(exc) in ("SlowDown", "RequestTimeout", "InternalError")
    return isinstance(exc, (BotoCoreError, OSError, TimeoutError, StorageDeleteError, PurgeRefused, *REDIS_UNAVAILABLE))


def backoff_seconds(job_try: int) -> int:
    """Delay before retry number job_try (1-based)."""
    return int(min(BACKOFF_CAP_SECONDS, 2 ** max(0, job_try - 1)))


def job(*, give_up: GiveUp | None = None, retried: bool = True) -> Callable[[F], F]:
    """An arq job function: its in-progress lock held short and renewed while it runs (worker/liveness.py), its
    outcome (ok / retried / failed) counted in the shared metrics hash, and (unless
    `retried` is False: the crons, whose next tick is their retry) a storage or Redis outage turned into an arq
    Retry with exponential backoff until MAX_TRIES.

    give_up(ctx, *args) runs when the job fails for good (an error retrying won't fix, or the last try), before the
    error propagates: a step leaves nothing half-done behind (a completion hands its file back, for instance).
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)  # arq names the job after the wrapped function
        async def run(ctx: dict[str, Any], *args: Any) -> Any:
            outcome = "failed"
            try:
                async with renewed_lock(ctx):
                    result = await fn(ctx, *args)
                outcome = "ok"
                return result
            except Exception as exc:
                if retried and is_transient(exc) and ctx.get("job_try", 1) < MAX_TRIES:
                    delay = backoff_seconds(ctx.get("job_try", 1))
                    log.warning("%s%s: a dependency is unavailable (%r), retry in %ss", fn.__name__, args, exc, delay)
                    outcome = "retried"
                    raise Retry(defer=delay) from exc
                if give_up is not None:
                    log.error("%s%s gave up: %r", fn.__name__, args, exc)
                    await give_up(ctx, *args)
                raise
            finally:
                with contextlib.suppress(Exception):
                    await ctx["redis"].hincrby(METRICS_KEY, job_field(fn.__name__, outcome), 1)

        return cast(F, run)

    return decorate


async def on_startup(ctx: dict[str, Any]) -> None:
    """Create the per-process clients jobs share."""
    settings = Settings.from_env() if "settings" not in ctx else ctx["settings"]
    stack = contextlib.AsyncExitStack()
    ctx["settings"] = settings
    ctx["stack"] = stack
    ctx["store"] = await stack.enter_async_context(ObjectStore.connect(settings.storage))
    ctx["state"] = state = UploadState(ctx["redis"], write_replicas=settings.redis.write_replicas)
    # Background provisioning shares storage with a client waiting in part-urls (which provisions its own
    # file at once): a bounded number of provisioning calls per worker keeps that client's call from queueing
    # behind a backlog of ours at the store.
    ctx["provision_gate"] = asyncio.Semaphore(settings.worker.worker_provision_concurrency)
    await state.load_scripts()  # a broken script stops the worker at start, not on a job's first call
    await state.claim_instance()  # this Redis's identity, if it has none yet (app/upkeep/identity.py)
    ctx["lock_keeper"] = asyncio.create_task(keep_locks(state, settings.worker.queue_name))


async def on_shutdown(ctx: dict[str, Any]) -> None:
    """Stop the lock keeper and close the clients."""
    keeper = ctx.get("lock_keeper")
    if keeper is not None:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
    if "state" in ctx:
        ctx["state"].close()
    stack = ctx.get("stack")
    if stack is not None:
        await stack.aclose()


@job()
async def provision_group(ctx: dict[str, Any], session_id: str) -> dict[str, str]:
    """Open the S3 multipart uploads of a group whose client's part-urls call storage did not answer in time.

    Only a retry lists the open uploads to adopt one an earlier try opened and did not record: arq counts a
    job's tries in Redis (a try killed with its worker counts too), so a first try has none to adopt, and a
    provisioning costs one storage call per file instead of two.
    """
    async with ctx.get("provision_gate") or contextlib.nullcontext():
        return await provisioning.provision_group(
            ctx["state"], ctx["store"], session_id, adopt=ctx.get("job_try", 1) > 1
        )


async def _hand_back(ctx: dict[str, Any], session_id: str, upload_id: str, attempt: int, *_: Any) -> None:
    """A completion that gives up hands its file back as 'uploading' with a stable reason (the details go to the
    log, never to clients) instead of leaving it 'completing'; if this fails too, the re-drive does it later."""
    await ctx["state"].reject_complete(session_id, upload_id, attempt=attempt, now_ms=now_ms(), reason=GAVE_UP)


@job(give_up=_hand_back)
async def complete_file(  # noqa: PLR0917 - arq passes a job's arguments positionally
    ctx: dict[str, Any],
    session_id: str,
    upload_id: str,
    attempt: int,
    parts: list[tuple[int, str]],
    checks: dict[str, Any] | None = None,
) -> str:
    """Assemble and verify one file; the group's last file creates the library record. `checks`: the checksums
    the complete call carried (only for a file with a checksum algorithm)."""
    return await complete.complete_file(
        ctx["state"], ctx["store"], ctx["settings"], session_id=session_id, upload_id=upload_id, attempt=attempt,
        parts=parts, checks=checks,
    )  # fmt: skip


@job()
async def purge_group(ctx: dict[str, Any], session_id: str, _key_prefix: str = "") -> dict[str, int]:
    """Abort open uploads and delete objects of a canceled, expired or failed group (its end record names its
    storage when its keys are gone; jobs queued by earlier versions also carry the prefix, unused)."""
    return await cancel.purge_group(ctx["state"], ctx["store"], ctx["settings"], session_id)


@job()
async def refresh_group_parts(ctx: dict[str, Any], session_id: str) -> int:
    """Track which parts storage has received for each of a group's files still in play (ListParts)."""
    return await status.refresh_group_parts(ctx["state"], ctx["store"], session_id)


@job()
async def refresh_parts(ctx: dict[str, Any], session_id: str, upload_id: str) -> int:
    """One file's tracking (jobs of this name were queued by earlier versions, one per file)."""
    return await status.refresh_parts(ctx["state"], ctx["store"], session_id, upload_id)


@job(retried=False)
async def expire_due_groups(ctx: dict[str, Any]) -> int:
    """Cron: expire groups past their expiresAt, then trim accounts over their cap of ended groups."""
    return await expiry.expiry_sweep(ctx["state"], ctx["settings"])


@job(retried=False)
async def abort_orphan_uploads(ctx: dict[str, Any]) -> int:
    """Cron: abort multipart uploads that no live file owns."""
    return await cleanup.abort_orphan_uploads(ctx["state"], ctx["store"], ctx["settings"])


@job(retried=False)
async def reconcile_objects(ctx: dict[str, Any]) -> int:
    """Cron: delete stored objects that no live or retained group owns."""
    return await cleanup.reconcile_objects(ctx["state"], ctx["store"], ctx["settings"])


@job(retried=False)
async def redrive(ctx: dict[str, Any]) -> dict[str, int]:
    """Cron: hand back completions whose job is gone; queue lost processing jobs again."""
    return await redrive_sweep.redrive(ctx["state"], ctx["settings"])
