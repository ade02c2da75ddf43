"""The webhook side of every worker process: the outbox dispatcher and a second arq worker on the webhook queue.

Both start in the upload worker's `on_startup` and stop in its `on_shutdown` (worker/settings.py), so every worker
process delivers webhooks however it is started (`spatialgen-worker`, or arq's CLI on worker.settings.WorkerSettings).
Deliveries have their own queue (SPATIALGEN_WEBHOOK_QUEUE_NAME), their own job slots
(SPATIALGEN_WEBHOOK_MAX_JOBS) and their own Redis connections, so no endpoint, however slow, takes a slot or a
connection from upload work; and each endpoint has at most SPATIALGEN_WEBHOOK_ENDPOINT_CONCURRENCY deliveries in
flight across all workers (the rest wait in its line, holding no slot), so one slow endpoint cannot hold the others'
slots either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from arq import func
from arq.worker import Worker

from app.settings import Settings
from app.state.connection import worker_pool
from app.state.jobs import DELIVER_WEBHOOK_JOB, deserialize, serialize
from app.state.webhooks import WebhookStore
from app.webhooks import delivery
from app.webhooks.dispatch import Dispatcher
from app.webhooks.outbound import Sender
from worker.jobs import job
from worker.liveness import keep_locks

log = logging.getLogger("spatialgen.worker")

MAX_TRIES = 40
"""arq tries of one delivery job (Redis outages, a killed worker): the schedule of attempts is the job's own (each
attempt is a job of its own, its number in the arguments)."""


POLL_SECONDS = 0.02
"""The webhook queue's poll: an endpoint with a backlog has its next delivery queued as each one ends, so the poll's
delay is paid once per delivery (50 cheap ZRANGEBYSCOREs a second per worker)."""


@job()
async def deliver_webhook(  # noqa: PLR0917 - arq passes a job's arguments by position
    ctx: dict[str, Any], endpoint_id: str, event_id: str, event_type: str, stream_id: str, round_id: str,
    attempt: int, body: bytes,
) -> str:  # fmt: skip
    """One delivery attempt (app/webhooks/delivery.py); with every slot of its endpoint in use it waits in line."""
    d = delivery.Delivery(endpoint_id, event_id, event_type, stream_id, round_id, attempt, body)
    return await delivery.deliver(ctx["webhook_store"], ctx["webhook_sender"], ctx["settings"], d)


def webhook_worker(settings: Settings, ctx: dict[str, Any]) -> Worker:
    """The arq worker of the webhook queue (no signal handling of its own: the upload worker's stops it)."""
    pool = worker_pool(settings.redis)
    pool.job_serializer, pool.job_deserializer = serialize, deserialize
    pool.default_queue_name = settings.webhooks.queue_name
    timeout = round(settings.webhooks.timeout_seconds) + 30
    return Worker(
        functions=[func(deliver_webhook, name=DELIVER_WEBHOOK_JOB, timeout=timeout)],
        queue_name=settings.webhooks.queue_name, redis_pool=pool, max_jobs=settings.webhooks.max_jobs,
        job_timeout=timeout, max_tries=MAX_TRIES, keep_result=0, poll_delay=POLL_SECONDS, handle_signals=False,
        job_serializer=serialize, job_deserializer=deserialize, ctx=ctx,
    )  # fmt: skip


async def start(ctx: dict[str, Any]) -> None:
    """Start the dispatcher and the webhook queue's worker beside the upload worker."""
    settings: Settings = ctx["settings"]
    store = WebhookStore(ctx["redis"])
    sender = Sender(timeout=settings.webhooks.timeout_seconds, allow_private=settings.webhooks.allow_private_targets)
    shared = {"settings": settings, "webhook_store": store, "webhook_sender": sender}
    ctx.update(shared)
    ctx["webhook_dispatcher"] = asyncio.create_task(Dispatcher(store, settings).run())
    # As for the upload queue: a worker killed before a delivery's lock was first renewed loses it for seconds.
    ctx["webhook_lock_keeper"] = asyncio.create_task(keep_locks(ctx["state"], settings.webhooks.queue_name))
    worker = webhook_worker(settings, dict(shared))
    worker.main_task = asyncio.create_task(worker.main())
    ctx["webhook_worker"] = worker


async def stop(ctx: dict[str, Any]) -> None:
    """Stop dispatching, let running deliveries finish for the shutdown grace, then close (arq re-queues the rest)."""
    for name in ("webhook_dispatcher", "webhook_lock_keeper"):
        task = ctx.pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    worker: Worker | None = ctx.pop("webhook_worker", None)
    if worker is not None:
        worker.allow_pick_jobs = False
        grace = ctx["settings"].server.shutdown_grace_seconds
        running = [t for t in worker.tasks.values() if not t.done()]
        if running:
            await asyncio.wait(running, timeout=grace)
        main = worker.main_task
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await worker.close()  # cancels what still runs (arq puts it back in the queue) and closes its pool
        if main is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await main
    sender = ctx.pop("webhook_sender", None)
    if sender is not None:
        await sender.aclose()
    store = ctx.pop("webhook_store", None)
    if store is not None:
        store.close()
