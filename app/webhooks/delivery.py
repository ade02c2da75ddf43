"""One delivery attempt of one event to one endpoint (the worker's `deliver_webhook` job), and what follows it.

The attempt takes one of the endpoint's slots (SPATIALGEN_WEBHOOK_ENDPOINT_CONCURRENCY across all workers, so a slow
endpoint holds that many and no more; when none is free the delivery parks in the endpoint's line and its job ends,
to be queued again when a slot frees), signs the body with the endpoint's secrets at this moment, POSTs it
(app/webhooks/outbound.py) and records the outcome in one MULTI: the log entry, the endpoint's health, the next
attempt's job and the attempt's done mark. A worker killed after sending and before recording runs the job again:
the event is delivered twice, with the same webhook-id (at least once, never lost).

- 2xx: delivered.
- 410 Gone: the endpoint is disabled, with the reason its admins see; no more attempts.
- anything else (another status, a redirect, a timeout, a refused connection or address): the next attempt follows
  the schedule (SPATIALGEN_WEBHOOK_RETRY_SCHEDULE, jittered), later if a 429/503 asks so with Retry-After; after the
  last, the delivery is `failed` (it stays in the log, and can be redelivered).
- an endpoint whose every delivery has failed for SPATIALGEN_WEBHOOK_DISABLE_AFTER_SECONDS is disabled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from app.domain.clock import iso_ms, now_ms
from app.domain.events import EventType
from app.domain.webhooks import parse_retry_after, parse_schedule, retry_delay
from app.settings import Settings
from app.state.jobs import delivery_job_id
from app.state.webhooks import StreamEntry, WebhookStore
from app.webhooks import dispatch
from app.webhooks.dispatch import delivery_job
from app.webhooks.outbound import Answer, Sender
from app.webhooks.signing import delivery_headers

PARKED = "parked"
"""The endpoint's slots were all taken: the delivery waits in its line (no job holds a slot meanwhile)."""
RETRY_AFTER_STATUSES = (429, 503)


@dataclass(frozen=True)
class Delivery:
    """What one delivery job carries (its arq arguments)."""

    endpoint_id: str
    event_id: str
    event_type: str
    stream_id: str
    round_id: str
    attempt: int
    body: bytes

    @property
    def job_id(self) -> str:
        """This attempt's job id."""
        return delivery_job_id(self.endpoint_id, self.event_id, self.round_id, self.attempt)


async def deliver(store: WebhookStore, sender: Sender, settings: Settings, d: Delivery) -> str:  # noqa: PLR0911 - per outcome
    """Run one attempt; returns its outcome (delivered, retrying, failed, disabled, skipped, gone, recorded, parked)."""
    slots = dispatch.slots(settings)
    start, lease_ms, limit = slots["now_ms"], slots["lease_ms"], slots["limit"]
    if await store.attempt_recorded(d.job_id):
        await store.release_slot(d.endpoint_id, d.job_id, **slots)  # a slot may have been kept for it
        return "recorded"  # sent and recorded by a try whose worker died before arq finished the job
    endpoint = await store.endpoint(d.endpoint_id)
    if endpoint is None:
        return "gone"
    entry = StreamEntry(stream_id=d.stream_id, id=d.event_id, type=d.event_type, account=endpoint.account)
    if not endpoint.enabled and d.event_type != EventType.TEST:
        why = endpoint.disabled_reason or "disabled by an admin"
        answer = Answer(None, {}, 0, f"not sent: the endpoint is disabled ({why})")
        await _record(store, d, start, answer, "skipped", slots=slots)
        return "skipped"
    this = delivery_job(settings, d.endpoint_id, entry, d.body, round_id=d.round_id, attempt=d.attempt)
    if not await store.take_slot(d.endpoint_id, d.job_id, this, now_ms=start, lease_ms=lease_ms, limit=limit):
        return PARKED
    headers = delivery_headers(endpoint.signing_secrets(start), d.event_id, int(time.time()), d.body)
    answer = await sender.post(endpoint.url, headers, d.body)
    now = now_ms()
    slots["now_ms"] = now
    if answer.status is not None and 200 <= answer.status < 300:
        health = {"last_success_ms": now, "failing_since_ms": 0}
        await _record(store, d, now, answer, "delivered", health=health, slots=slots)
        return "delivered"
    if answer.status == 410:
        reason = f"the endpoint answered 410 Gone at {iso_ms(now)}"
        await _record(store, d, now, answer, "disabled", slots=slots)
        await store.disable_endpoint(d.endpoint_id, reason, now)
        return "disabled"
    cfg = settings.webhooks
    failing_since = endpoint.failing_since_ms or now
    health = {} if endpoint.failing_since_ms else {"failing_since_ms": now}
    if now - failing_since >= cfg.disable_after_seconds * 1000:
        reason = (f"every delivery failed since {iso_ms(failing_since)} "
                  f"(more than {cfg.disable_after_seconds / 86400:g} days); last: {_error(answer)}")  # fmt: skip
        await _record(store, d, now, answer, "failed", health=health, slots=slots)
        await store.disable_endpoint(d.endpoint_id, reason, now)
        return "failed"
    retry_after = (parse_retry_after(answer.headers.get("retry-after"), time.time())
                   if answer.status in RETRY_AFTER_STATUSES else None)  # fmt: skip
    delay = retry_delay(parse_schedule(cfg.retry_schedule), d.attempt, retry_after=retry_after)
    if delay is None:
        await _record(store, d, now, answer, "failed", health=health, slots=slots)
        return "failed"
    nxt = delivery_job(settings, d.endpoint_id, entry, d.body, round_id=d.round_id, attempt=d.attempt + 1,
                       defer_s=delay)  # fmt: skip
    await _record(store, d, now, answer, "retrying", health=health, next_job=nxt, next_ms=now + round(delay * 1000),
                  slots=slots)  # fmt: skip
    return "retrying"


def _error(answer: Answer) -> str | None:
    if answer.error is not None:
        return answer.error
    if answer.status is not None and 300 <= answer.status < 400:
        return f"HTTP {answer.status}: redirects are not followed"
    if answer.status is not None and not 200 <= answer.status < 300:
        return f"HTTP {answer.status}"
    return None


async def _record(
    store: WebhookStore, d: Delivery, now: int, answer: Answer, outcome: str, *, health: dict[str, Any] | None = None,
    next_job: Any = None, next_ms: int | None = None, slots: dict[str, Any],
) -> None:  # fmt: skip
    entry = {
        "eventId": d.event_id, "eventType": d.event_type, "streamId": d.stream_id, "round": d.round_id,
        "attempt": d.attempt, "attemptedAt": iso_ms(now), "outcome": outcome, "status": answer.status,
        "latencyMs": answer.latency_ms, "error": _error(answer),
        "nextAttemptAt": iso_ms(next_ms) if next_ms is not None else None,
    }  # fmt: skip
    await store.record_attempt(d.endpoint_id, d.job_id, entry, outcome=outcome, health=health or {},
                               next_job=next_job, slots=slots)  # fmt: skip
