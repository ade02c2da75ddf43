"""The dispatcher: every worker process runs one. It takes events from the outbox stream through the consumer group
(XREADGROUP), turns each into its body, and fans it out to the account's enabled endpoints that want its type as
delivery jobs on the webhook queue, acknowledging the events in the same MULTI as the jobs are queued.

A dispatcher that dies holding events leaves them pending in the group; another takes them over (XAUTOCLAIM) after
CLAIM_IDLE_MS, and since delivery job ids are derived from (endpoint, event), nothing is queued twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from typing import Any

import msgspec
from redis.exceptions import RedisError

from app.domain.clock import iso_ms, now_ms
from app.domain.events import EventType
from app.domain.records import FileRecord
from app.settings import Settings
from app.state import GroupSnapshot
from app.state.jobs import DELIVER_WEBHOOK_JOB, JobSpec, delivery_job_id
from app.state.webhooks import Endpoint, StreamEntry, WebhookStore

log = logging.getLogger("spatialgen.webhooks")

BATCH = 200
"""Events read per XREADGROUP."""
BLOCK_MS = 1000
"""How long one read waits for new events."""
CLAIM_IDLE_MS = 30_000
"""An event taken by a dispatcher and not acknowledged for this long is taken over (its dispatcher died)."""
WAKE_SECONDS = 5.0
"""How often a dispatcher looks at the endpoints' lines (a slot whose worker died lapses; its line moves on)."""
UPKEEP_SECONDS = 60.0
"""How often a dispatcher trims expired events and forgets long-gone dispatchers."""
GONE_CONSUMER_MS = 86_400_000


def consumer_name() -> str:
    """This process's name in the consumer group."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def delivery_job(
    settings: Settings, endpoint_id: str, entry: StreamEntry, body: bytes, *, round_id: str = "0", attempt: int = 1,
    defer_s: float = 0.0,
) -> JobSpec:  # fmt: skip
    """The job of one delivery attempt on the webhook queue."""
    return JobSpec.build(
        DELIVER_WEBHOOK_JOB, (endpoint_id, entry.id, entry.type, entry.stream_id, round_id, attempt, body),
        job_id=delivery_job_id(endpoint_id, entry.id, round_id, attempt), queue=settings.webhooks.queue_name,
        defer_ms=round(defer_s * 1000),
    )  # fmt: skip


def slots(settings: Settings) -> dict[str, Any]:
    """How an endpoint's delivery slots are counted now: its queue, concurrency and a slot's lease (the timeout + 10 s,
    so a slot whose worker died comes back by itself)."""
    cfg = settings.webhooks
    return {"queue": cfg.queue_name, "now_ms": now_ms(), "limit": cfg.endpoint_concurrency,
            "lease_ms": round(cfg.timeout_seconds * 1000) + 10_000}  # fmt: skip


def targets(entry: StreamEntry, endpoints: list[Endpoint]) -> list[Endpoint]:
    """The endpoints an event goes to: a test event to its one endpoint; others to the enabled ones wanting it."""
    if entry.type == EventType.TEST:
        return [e for e in endpoints if e.endpoint_id == entry.ep]
    if not entry.sid:
        return []
    return [e for e in endpoints if e.enabled and e.wants(entry.type)]


def _file_doc(snap: GroupSnapshot, f: FileRecord) -> dict[str, Any]:
    doc = {"uploadId": f.upload_id, "fileRole": f.role.value, "fileName": f.name, "sizeBytes": f.total_bytes,
           "languageTag": f.language, "storageKey": snap.record.storage_key(f)}  # fmt: skip
    checksum = snap.checksum(f.upload_id)
    if checksum is not None:  # as the library record has it
        doc["checksum"] = msgspec.to_builtins(checksum)
    return doc


async def event_body(store: WebhookStore, entry: StreamEntry) -> bytes:
    """The delivery body of an event: `{id, type, timestamp, data}` (app/domain/events.py documents each `data`).

    Built from the event and the group's immutable records (the library record for a completed group, which carries
    the files' sizes and any recorded checksums), so a redelivery sends the same document.
    """
    data: dict[str, Any] = {"sessionId": entry.sid, "status": entry.status}
    if entry.type == EventType.TEST:
        data = {"endpointId": entry.ep, "message": "A test event sent on request; nothing happened to any upload."}
    elif entry.type == EventType.GROUP_COMPLETED:
        library = await store.library_record(entry.sid) or {}
        data |= {"libraryId": int(entry.lib), "videoName": library.get("videoName"),
                 "folderName": library.get("folderName"), "completedAt": library.get("completedAt") or iso_ms(entry.at),
                 "files": library.get("files", [])}  # fmt: skip
    else:
        snap = await store.snapshot(entry.sid)
        record = snap.record if snap is not None else None
        if entry.type == EventType.FILE_COMPLETED:
            f = record.file(entry.uid) if record is not None else None
            data["file"] = _file_doc(snap, f) if snap is not None and f is not None else {"uploadId": entry.uid}
        else:
            data |= {"videoName": record.video_name if record else None, "reason": entry.reason or None,
                     "uploadId": entry.uid or None}  # fmt: skip
    return msgspec.json.encode({"id": entry.id, "type": entry.type, "timestamp": iso_ms(entry.at), "data": data})


class Dispatcher:
    """One worker process's dispatcher (see the module header)."""

    def __init__(self, store: WebhookStore, settings: Settings, consumer: str | None = None) -> None:
        self.store = store
        self.settings = settings
        self.consumer = consumer or consumer_name()
        self._upkeep_at = 0.0
        self._wake_at = 0.0

    async def run(self) -> None:
        """Forever: dispatch what arrives; Redis trouble is waited out."""
        ready = False
        while True:
            try:
                if not ready:
                    await self.store.ensure_group()
                    ready = True
                await self.step()
            except (RedisError, OSError) as exc:
                log.warning("webhook dispatcher: Redis unavailable (%r)", exc)
                await asyncio.sleep(1.0)
            except Exception:  # a bug must not stop dispatching for good: the events stay pending meanwhile
                log.exception("webhook dispatcher failed; trying again in 5 s")
                await asyncio.sleep(5.0)

    async def step(self, block_ms: int = BLOCK_MS) -> int:
        """Take over a dead dispatcher's events, read new ones and dispatch them; returns how many."""
        loop = asyncio.get_running_loop()
        entries: list[StreamEntry] = []
        if loop.time() >= self._upkeep_at:
            self._upkeep_at = loop.time() + UPKEEP_SECONDS
            await self.upkeep()
        if loop.time() >= self._wake_at:
            self._wake_at = loop.time() + WAKE_SECONDS
            await self.wake_lines()
        entries += await self.store.claim_stale(self.consumer, idle_ms=CLAIM_IDLE_MS, count=BATCH)
        entries += await self.store.read_new(self.consumer, count=BATCH, block_ms=0 if entries else block_ms)
        if entries:
            await self.dispatch(entries)
        return len(entries)

    async def dispatch(self, entries: list[StreamEntry]) -> int:
        """Line up the deliveries of these events and acknowledge them together; returns how many deliveries."""
        endpoints: dict[str, list[Endpoint]] = {}
        jobs: list[tuple[str, JobSpec]] = []
        for entry in entries:
            if entry.account not in endpoints:
                endpoints[entry.account] = await self.store.account_endpoints(entry.account)
            chosen = targets(entry, endpoints[entry.account])
            if chosen:
                body = await event_body(self.store, entry)
                jobs += [(e.endpoint_id, delivery_job(self.settings, e.endpoint_id, entry, body)) for e in chosen]
        await self.store.fan_out(jobs, [e.stream_id for e in entries], **slots(self.settings))
        log.info("dispatched %d events: %d deliveries", len(entries), len(jobs))
        return len(jobs)

    async def wake_lines(self) -> int:
        """Queue parked deliveries of endpoints with a free slot (normally the delivery freeing it does that)."""
        woken = 0
        for endpoint_id in await self.store.waiting_endpoints():
            woken += await self.store.release_slot(endpoint_id, "", **slots(self.settings))
        return woken

    async def upkeep(self) -> None:
        """Trim events past their retention; forget dispatchers gone for a day."""
        await self.store.ensure_group()
        await self.store.trim_events(now_ms() - self.settings.webhooks.event_retention_seconds * 1000)
        await self.store.forget_idle_consumers(GONE_CONSUMER_MS)
