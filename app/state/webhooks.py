"""WebhookStore: the Redis side of webhooks: endpoints (their hash, the account's registry, the global index), the
event outbox stream and its consumer group, delivery slots, and each endpoint's delivery log.

Writes that must happen together are one script or one MULTI; the events themselves are written by the state
scripts that change a group (app/state/lua/lib/events.lua), never here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from redis.exceptions import ResponseError

from app.domain.lifecycle import Reply
from app.state import keys
from app.state.jobs import JobSpec
from app.state.keys import EVENTS_GROUP, EVENTS_STREAM, METRICS_KEY, MetricField
from app.state.runner import reply_of
from app.state.store import UploadState

LOG_LENGTH = 100
"""Delivery attempts kept per endpoint."""
DONE_MARK_MS = 86_400_000
"""How long a recorded attempt is remembered (a job run again after its worker died is not sent twice)."""


class Endpoint(msgspec.Struct, kw_only=True):
    """One endpoint as stored (its hash fields decoded); `secret` never leaves the service but in its signatures."""

    endpoint_id: str
    account: str
    url: str
    types: tuple[str, ...]
    """Event types it wants (empty: all)."""
    description: str = ""
    enabled: bool = True
    created_ms: int = 0
    secret: str = ""
    previous_secret: str = ""
    previous_until_ms: int = 0
    disabled_reason: str = ""
    disabled_ms: int = 0
    failing_since_ms: int = 0
    last_success_ms: int = 0

    def wants(self, event_type: str) -> bool:
        """Whether it asked for this event type."""
        return not self.types or event_type in self.types

    def signing_secrets(self, now_ms: int) -> list[str]:
        """The secrets that sign a delivery now: the current one, and the previous one during a rotation's overlap."""
        if self.previous_secret and now_ms < self.previous_until_ms:
            return [self.secret, self.previous_secret]
        return [self.secret]


_FIELDS = {"account": "account", "url": "url", "types": "types", "description": "description", "enabled": "enabled",
           "created_ms": "created", "secret": "secret", "previous_secret": "prev_secret",
           "previous_until_ms": "prev_until", "disabled_reason": "disabled_reason", "disabled_ms": "disabled_at",
           "failing_since_ms": "failing_since", "last_success_ms": "last_success"}  # fmt: skip
"""Endpoint attribute -> its field in the endpoint's hash."""


def endpoint_fields(**values: Any) -> dict[str, str]:
    """Hash fields from Endpoint attribute values (booleans as 1/0, type lists comma-joined)."""
    out = {}
    for name, value in values.items():
        text = str(value)
        if isinstance(value, bool):
            text = "1" if value else "0"
        elif isinstance(value, (list, tuple)):
            text = ",".join(value)
        out[_FIELDS[name]] = text
    return out


def _endpoint(endpoint_id: str, raw: Mapping[bytes, bytes]) -> Endpoint | None:
    row = {k.decode(): v.decode() for k, v in raw.items()}
    if "url" not in row:
        return None
    ints = ("created_ms", "previous_until_ms", "disabled_ms", "failing_since_ms", "last_success_ms")
    values: dict[str, Any] = {name: row.get(field, "") for name, field in _FIELDS.items()}
    values |= {name: int(values[name] or 0) for name in ints}
    values["enabled"] = values["enabled"] != "0"
    values["types"] = tuple(t for t in values["types"].split(",") if t)
    return Endpoint(endpoint_id=endpoint_id, **values)


class StreamEntry(msgspec.Struct, kw_only=True):
    """An event as the outbox stream holds it (the fields lib/events.lua writes)."""

    stream_id: str
    id: str = ""
    type: str = ""
    account: str = ""
    """Empty only in an entry this service did not write: it goes to no endpoint, and is acknowledged."""
    sid: str = ""
    uid: str = ""
    status: str = ""
    reason: str = ""
    lib: str = ""
    at: int = 0
    ep: str = ""
    """Test events only: the one endpoint it is for."""


def _entry(stream_id: bytes, fields: Mapping[bytes, bytes]) -> StreamEntry:
    row: dict[str, Any] = {k.decode(): v.decode(errors="replace") for k, v in fields.items() if k.decode() in _ENTRY}
    at = row.get("at", "")
    row["at"] = int(at) if at.isdigit() else 0
    return msgspec.convert({**row, "stream_id": stream_id.decode()}, StreamEntry)


_ENTRY = frozenset(StreamEntry.__struct_fields__)


class WebhookStore(UploadState):
    """Typed access to webhook state in Redis (and, for the events' documents, to the groups')."""

    # --- endpoints ---------------------------------------------------------------------------------

    async def add_endpoint(self, endpoint: Endpoint, *, max_endpoints: int) -> int | None:
        """Register an endpoint; None when done, else how many the account already has (at its limit)."""
        fields = endpoint_fields(**{n: getattr(endpoint, n) for n in _FIELDS})
        reply = reply_of(await self._run(
            "add_webhook", registry=keys.webhook_registry_key(endpoint.account),
            endpoint=keys.webhook_key(endpoint.endpoint_id), index=keys.WEBHOOKS_INDEX,
            endpoint_id=endpoint.endpoint_id, max_endpoints=max_endpoints, created_ms=endpoint.created_ms,
            fields=[x for kv in fields.items() for x in kv],
        ))  # fmt: skip
        return None if reply.code is Reply.OK else int(reply.values[0])

    async def endpoint(self, endpoint_id: str) -> Endpoint | None:
        """One endpoint by id (any account's: callers check the owner)."""
        return _endpoint(endpoint_id, await self.redis.hgetall(keys.webhook_key(endpoint_id)))  # type: ignore[misc]

    async def endpoints(self, endpoint_ids: Sequence[str]) -> list[Endpoint]:
        """Several endpoints in one round trip (those gone are left out)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for eid in endpoint_ids:
                pipe.hgetall(keys.webhook_key(eid))
            rows = await pipe.execute()
        found = (_endpoint(eid, row) for eid, row in zip(endpoint_ids, rows, strict=True))
        return [e for e in found if e is not None]

    async def account_endpoints(self, account: str) -> list[Endpoint]:
        """An account's endpoints, oldest first."""
        ids = sorted(m.decode() for m in await self.redis.smembers(keys.webhook_registry_key(account)))  # type: ignore[misc]
        return sorted(await self.endpoints(ids), key=lambda e: (e.created_ms, e.endpoint_id))

    async def all_endpoint_ids(self, limit: int) -> list[str]:
        """Every endpoint id, oldest first (the admin CLI's listing)."""
        return [m.decode() for m in await self.redis.zrange(keys.WEBHOOKS_INDEX, 0, limit - 1)]

    async def update_endpoint(
        self, endpoint_id: str, values: Mapping[str, Any], *, enabled: bool | None = None
    ) -> None:
        """Change some fields; enabling clears the disabled reason and the failure streak."""
        async with self.redis.pipeline(transaction=True) as pipe:
            if values:
                pipe.hset(keys.webhook_key(endpoint_id), mapping=endpoint_fields(**values))
            if enabled is True:
                pipe.hset(keys.webhook_key(endpoint_id), mapping=endpoint_fields(enabled=True))
                pipe.hdel(
                    keys.webhook_key(endpoint_id),
                    *(_FIELDS[n] for n in ("disabled_reason", "disabled_ms", "failing_since_ms")),
                )
                pipe.srem(keys.WEBHOOKS_DISABLED, endpoint_id)
            elif enabled is False:
                pipe.hset(keys.webhook_key(endpoint_id), mapping=endpoint_fields(enabled=False))
            await pipe.execute()

    async def disable_endpoint(self, endpoint_id: str, reason: str, now_ms: int) -> None:
        """The service disables an endpoint (a 410, or failing for days), with the reason its admins see."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.webhook_key(endpoint_id),
                      mapping=endpoint_fields(enabled=False, disabled_reason=reason, disabled_ms=now_ms))  # fmt: skip
            pipe.sadd(keys.WEBHOOKS_DISABLED, endpoint_id)
            pipe.hincrby(METRICS_KEY, MetricField.WEBHOOK_PREFIX + "endpoints_disabled", 1)
            await pipe.execute()

    async def remove_endpoint(self, endpoint: Endpoint) -> None:
        """Delete an endpoint, its log and its registry entries (deliveries still queued find it gone and stop)."""
        eid = endpoint.endpoint_id
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.srem(keys.webhook_registry_key(endpoint.account), eid)
            pipe.delete(
                keys.webhook_key(eid),
                keys.webhook_log_key(eid),
                keys.webhook_busy_key(eid),
                keys.webhook_waiting_key(eid),
                keys.webhook_parked_key(eid),
            )
            pipe.srem(keys.WEBHOOKS_WAITING, eid)
            pipe.zrem(keys.WEBHOOKS_INDEX, eid)
            pipe.srem(keys.WEBHOOKS_DISABLED, eid)
            await pipe.execute()

    # --- the outbox -------------------------------------------------------------------------------

    async def ensure_group(self) -> None:
        """The dispatchers' consumer group, reading from the stream's start (events written before it are kept)."""
        try:
            await self.redis.xgroup_create(EVENTS_STREAM, EVENTS_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_new(self, consumer: str, *, count: int, block_ms: int) -> list[StreamEntry]:
        """Events no dispatcher has taken yet (waiting up to block_ms for the first; 0: not at all)."""
        block = block_ms if block_ms > 0 else None  # Redis's BLOCK 0 would wait forever
        out = await self.redis.xreadgroup(EVENTS_GROUP, consumer, {EVENTS_STREAM: ">"}, count=count, block=block)
        return [_entry(sid, fields) for _, entries in out or [] for sid, fields in entries if fields]

    async def claim_stale(self, consumer: str, *, idle_ms: int, count: int) -> list[StreamEntry]:
        """Events a dispatcher took and never acknowledged for idle_ms (it died): taken over by this one."""
        _, entries, *_ = await self.redis.xautoclaim(EVENTS_STREAM, EVENTS_GROUP, consumer, idle_ms, "0-0", count=count)
        return [_entry(sid, fields) for sid, fields in entries if fields]

    async def fan_out(
        self, deliveries: Sequence[tuple[str, JobSpec]], acked: Sequence[str], **slots: Any
    ) -> None:  # fmt: skip
        """Put deliveries (endpoint id, first attempt's job) in their endpoints' lines, queue as many as each endpoint
        has free slots, and acknowledge the events they came from, in one MULTI: a dispatcher dying in between leaves
        the events pending for another (whose deliveries, with the same ids, are not lined up twice). Only an
        endpoint's concurrency's worth of its deliveries is ever queued, so a burst for one endpoint costs no job runs
        that would only wait."""
        now = slots["now_ms"]
        async with self.redis.pipeline(transaction=True) as pipe:
            for endpoint_id, job in deliveries:
                pipe.zadd(keys.webhook_waiting_key(endpoint_id), {job.job_id: now}, nx=True)
                pipe.hset(keys.webhook_parked_key(endpoint_id), job.job_id, job.blob)  # type: ignore[arg-type]
                pipe.sadd(keys.WEBHOOKS_WAITING, endpoint_id)
            for endpoint_id in dict.fromkeys(e for e, _ in deliveries):
                await self._run("release_webhook_slot", client=pipe, **self._release(endpoint_id, "", **slots))
            if acked:
                pipe.xack(EVENTS_STREAM, EVENTS_GROUP, *acked)
            await pipe.execute()

    async def add_test_event(self, account: str, endpoint_id: str, event_id: str, now_ms: int) -> None:
        """A `webhook.test` event for one endpoint, through the same outbox as every other."""
        fields = {"id": event_id, "type": "webhook.test", "account": account, "ep": endpoint_id, "at": now_ms}
        await self.redis.xadd(EVENTS_STREAM, fields)  # type: ignore[arg-type]

    async def events_between(self, start_ms: int, end_ms: int, *, limit: int) -> list[StreamEntry]:
        """Events recorded between two times (ms, inclusive), oldest first, at most `limit` (every account's)."""
        raw = await self.redis.xrange(EVENTS_STREAM, f"{start_ms}-0", f"{end_ms}-{2**64 - 1}", count=limit)
        return [_entry(sid, fields) for sid, fields in raw]

    async def event_at(self, stream_id: str) -> StreamEntry | None:
        """One event by its stream id."""
        raw = await self.redis.xrange(EVENTS_STREAM, stream_id, stream_id, count=1)
        return _entry(*raw[0]) if raw else None

    async def trim_events(self, before_ms: int) -> int:
        """Drop events recorded before before_ms (approximately: whole stream nodes)."""
        return int(await self.redis.xtrim(EVENTS_STREAM, minid=f"{before_ms}-0", approximate=True))

    async def forget_idle_consumers(self, idle_ms: int) -> int:
        """Remove dispatchers (consumers) that hold no event and have been idle that long: workers long gone."""
        try:
            consumers = await self.redis.xinfo_consumers(EVENTS_STREAM, EVENTS_GROUP)
        except ResponseError:
            return 0
        gone = [c["name"] for c in consumers if int(c.get("pending") or 0) == 0 and int(c.get("idle") or 0) > idle_ms]
        for name in gone:
            await self.redis.xgroup_delconsumer(EVENTS_STREAM, EVENTS_GROUP, name)
        return len(gone)

    async def outbox_state(self) -> tuple[int, int]:
        """(events not yet taken by a dispatcher, events taken but not acknowledged); (0, 0) before any dispatcher."""
        try:
            groups = await self.redis.xinfo_groups(EVENTS_STREAM)
        except ResponseError:
            return 0, 0
        for g in groups:
            name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
            if name == EVENTS_GROUP:
                return int(g.get("lag") or 0), int(g.get("pending") or 0)
        return 0, 0

    # --- deliveries -------------------------------------------------------------------------------

    async def take_slot(self, endpoint_id: str, job_id: str, job: JobSpec, *, now_ms: int, lease_ms: int,
                        limit: int) -> bool:  # fmt: skip
        """One of the endpoint's delivery slots for this delivery; False: every slot is taken (or others wait first),
        so `job` is parked in the endpoint's line until a slot is free (take_webhook_slot.lua)."""
        reply = reply_of(await self._run(
            "take_webhook_slot", **self._line(endpoint_id), job_id=job_id, now_ms=now_ms, lease_ms=lease_ms,
            limit=limit, endpoint_id=endpoint_id, blob=job.blob,
        ))  # fmt: skip
        return reply.code is Reply.OK

    def _line(self, endpoint_id: str) -> dict[str, Any]:
        return {"busy": keys.webhook_busy_key(endpoint_id), "waiting": keys.webhook_waiting_key(endpoint_id),
                "parked": keys.webhook_parked_key(endpoint_id), "waiting_index": keys.WEBHOOKS_WAITING}  # fmt: skip

    def _release(self, endpoint_id: str, job_id: str, *, queue: str, now_ms: int, lease_ms: int,
                 limit: int) -> dict[str, Any]:  # fmt: skip
        return {**self._line(endpoint_id), "queue": queue, "job_id": job_id, "now_ms": now_ms, "lease_ms": lease_ms,
                "limit": limit, "endpoint_id": endpoint_id, "job_key_prefix": keys.arq_job_key(""),
                "expires_ms": 86_400_000}  # fmt: skip

    async def release_slot(self, endpoint_id: str, job_id: str, **slots: Any) -> int:
        """Give a slot back (job_id '': none) and queue the endpoint's first parked deliveries again; how many woke."""
        reply = reply_of(await self._run("release_webhook_slot", **self._release(endpoint_id, job_id, **slots)))
        return int(reply.values[0])

    async def waiting_endpoints(self) -> list[str]:
        """Endpoints with parked deliveries."""
        return sorted(m.decode() for m in await self.redis.smembers(keys.WEBHOOKS_WAITING))  # type: ignore[misc]

    async def attempt_recorded(self, job_id: str) -> bool:
        """Whether this attempt was sent and recorded already."""
        return bool(await self.redis.exists(keys.webhook_done_key(job_id)))

    async def record_attempt(
        self, endpoint_id: str, job_id: str, entry: Mapping[str, Any], *, outcome: str, health: Mapping[str, Any],
        next_job: JobSpec | None, slots: Mapping[str, Any],
    ) -> None:  # fmt: skip
        """One attempt, together: its log entry, the endpoint's health fields, the next attempt's job (if any), the
        attempt's done mark, the outcome counter, and its slot given back to the first parked delivery."""
        log = keys.webhook_log_key(endpoint_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(log, msgspec.json.encode(entry))
            pipe.ltrim(log, 0, LOG_LENGTH - 1)
            if health:
                pipe.hset(keys.webhook_key(endpoint_id), mapping=endpoint_fields(**health))
            if next_job is not None:
                await self._run("enqueue_jobs", client=pipe, jobs=[next_job])
            pipe.set(keys.webhook_done_key(job_id), b"1", px=DONE_MARK_MS)
            pipe.hincrby(METRICS_KEY, MetricField.WEBHOOK_PREFIX + outcome, 1)
            await self._run("release_webhook_slot", client=pipe, **self._release(endpoint_id, job_id, **slots))
            await pipe.execute()

    async def delivery_log(self, endpoint_id: str, limit: int = LOG_LENGTH) -> list[dict[str, Any]]:
        """The endpoint's last attempts, newest first."""
        raw = await self.redis.lrange(keys.webhook_log_key(endpoint_id), 0, limit - 1)  # type: ignore[misc]
        return [msgspec.json.decode(x, type=dict[str, Any]) for x in raw]
