"""An account's webhook endpoints: create, list, show, update, delete, rotate the secret, send a test event, read the
delivery log and redeliver. The API's admin routes (app/http/webhook_routes.py) and `spatialgen-admin webhooks`
(app/admin/webhooks.py) both call these, so the rules are the same wherever an endpoint is changed.

An endpoint of another account is a 404, exactly like an unknown one. Secrets are shown at creation and rotation only.
"""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import datetime
from typing import Any, TypeVar

import msgspec

from app.domain import errors
from app.domain.clock import iso_ms
from app.domain.errors import FieldError
from app.domain.events import EVENT_ID_PREFIX, SUBSCRIBABLE
from app.domain.validation import decode_json_body
from app.domain.webhooks import (
    MAX_ENDPOINTS_PER_ACCOUNT,
    CreateEndpointRequest,
    DeliveryLogView,
    DeliveryView,
    EndpointCreatedView,
    EndpointListView,
    EndpointView,
    QueuedView,
    RedeliverRequest,
    SecretRotatedView,
    UpdateEndpointRequest,
    type_problems,
    url_problems,
)
from app.settings import Settings
from app.state.webhooks import Endpoint, StreamEntry, WebhookStore
from app.webhooks.dispatch import delivery_job, event_body, slots, targets
from app.webhooks.signing import new_secret

S = TypeVar("S", bound=msgspec.Struct)
REDELIVER_LIMIT = 1000
"""Events one redelivery of a time range queues at most (ask again from the last one for more)."""
SCAN_LIMIT = 100_000
"""Outbox entries a redelivery looks through at most."""
_AT_PATH = re.compile(r" - at `\$\.?(.*)`$")


def decode(body: bytes, model: type[S]) -> S:
    """A request body as its Struct, or a 400 naming each problem's path."""
    payload = decode_json_body(body) if body.strip() else {}
    try:
        return msgspec.convert(payload, model, strict=True)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = _AT_PATH.search(text)
        path = match.group(1) if match else ""
        message = _AT_PATH.sub("", text)
        raise errors.INVALID_REQUEST(f"{path or 'body'}: {message}", errors=[FieldError(path, message)]) from None


def view(e: Endpoint, now: int) -> EndpointView:
    """How the API shows an endpoint (never its secret)."""
    return EndpointView(
        endpoint_id=e.endpoint_id, url=e.url, event_types=list(e.types) or [t.value for t in SUBSCRIBABLE],
        description=e.description, enabled=e.enabled, created_at=iso_ms(e.created_ms),
        disabled_reason=e.disabled_reason or None, disabled_at=iso_ms(e.disabled_ms) if e.disabled_ms else None,
        failing_since=iso_ms(e.failing_since_ms) if e.failing_since_ms else None,
        last_success_at=iso_ms(e.last_success_ms) if e.last_success_ms else None,
        secret_rotating_until=iso_ms(e.previous_until_ms) if e.previous_secret and e.previous_until_ms > now else None,
    )  # fmt: skip


def _check(url: str | None, types: list[str] | None, settings: Settings) -> None:
    problems = [FieldError("url", p) for p in url_problems(url, allow_http=settings.webhooks.allow_private_targets)
                ] if url is not None else []  # fmt: skip
    problems += type_problems(types or [])
    if problems:
        raise errors.INVALID_REQUEST(f"{problems[0].path} {problems[0].message}", errors=problems)


async def load(store: WebhookStore, account: str | None, endpoint_id: str) -> Endpoint:
    """The endpoint if it belongs to the account (None: any account, for operators), else 404."""
    found = await store.endpoint(endpoint_id) if len(endpoint_id) <= 64 else None
    if found is None or (account is not None and found.account != account):
        raise errors.WEBHOOK_NOT_FOUND(f"No webhook endpoint {endpoint_id[:64]!r} for this account.")
    return found


async def create(store: WebhookStore, settings: Settings, account: str, body: bytes, now: int) -> EndpointCreatedView:
    """Register an endpoint; its secret is in this answer only."""
    req = decode(body, CreateEndpointRequest)
    _check(req.url, req.event_types, settings)
    endpoint = Endpoint(
        endpoint_id=str(uuid.uuid4()), account=account, url=req.url, types=tuple(req.event_types or ()),
        description=req.description, enabled=req.enabled, created_ms=now, secret=new_secret(),
    )  # fmt: skip
    have = await store.add_endpoint(endpoint, max_endpoints=MAX_ENDPOINTS_PER_ACCOUNT)
    if have is not None:
        raise errors.WEBHOOK_LIMIT_REACHED(
            f"The account has {have} webhook endpoints, the most allowed ({MAX_ENDPOINTS_PER_ACCOUNT}); "
            "delete one first."
        )
    return EndpointCreatedView(**msgspec.structs.asdict(view(endpoint, now)), secret=endpoint.secret)


async def list_endpoints(store: WebhookStore, account: str, now: int) -> EndpointListView:
    """The account's endpoints, oldest first."""
    return EndpointListView(endpoints=[view(e, now) for e in await store.account_endpoints(account)])


async def update(store: WebhookStore, settings: Settings, account: str | None, endpoint_id: str, body: bytes, *,
                 now: int) -> EndpointView:  # fmt: skip
    """Change the fields given; enabling an endpoint clears why it was disabled."""
    req = decode(body, UpdateEndpointRequest)
    await load(store, account, endpoint_id)
    _check(req.url, req.event_types, settings)
    values: dict[str, Any] = {}
    if req.url is not None:
        values["url"] = req.url
    if req.event_types is not None:
        values["types"] = req.event_types
    if req.description is not None:
        values["description"] = req.description
    await store.update_endpoint(endpoint_id, values, enabled=req.enabled)
    return view(await load(store, account, endpoint_id), now)


async def delete(store: WebhookStore, account: str | None, endpoint_id: str) -> None:
    """Delete an endpoint and its log; deliveries still queued for it are dropped when they run."""
    await store.remove_endpoint(await load(store, account, endpoint_id))


async def rotate_secret(store: WebhookStore, settings: Settings, account: str | None, endpoint_id: str,
                        now: int) -> SecretRotatedView:  # fmt: skip
    """A new secret (shown once); the current one keeps signing too for SPATIALGEN_WEBHOOK_ROTATION_OVERLAP_SECONDS."""
    endpoint = await load(store, account, endpoint_id)
    until = now + settings.webhooks.rotation_overlap_seconds * 1000
    secret = new_secret()
    await store.update_endpoint(endpoint_id, {"secret": secret, "previous_secret": endpoint.secret,
                                              "previous_until_ms": until})  # fmt: skip
    return SecretRotatedView(endpoint_id=endpoint_id, secret=secret, previous_secret_valid_until=iso_ms(until))


async def send_test(store: WebhookStore, account: str | None, endpoint_id: str, now: int) -> QueuedView:
    """Queue a `webhook.test` event to this endpoint (through the outbox, like every event)."""
    endpoint = await load(store, account, endpoint_id)
    event_id = EVENT_ID_PREFIX + secrets.token_hex(16)
    await store.add_test_event(endpoint.account, endpoint_id, event_id, now)
    return QueuedView(endpoint_id=endpoint_id, event_ids=[event_id])


async def deliveries(store: WebhookStore, account: str | None, endpoint_id: str, now: int,
                     limit: int = 100) -> DeliveryLogView:  # fmt: skip
    """The endpoint and its last delivery attempts, newest first."""
    endpoint = await load(store, account, endpoint_id)
    rows = await store.delivery_log(endpoint_id, limit)
    return DeliveryLogView(endpoint=view(endpoint, now), deliveries=[msgspec.convert(r, DeliveryView) for r in rows])


def _ms(text: str, name: str) -> int:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise errors.INVALID_REQUEST(
            f"{name} is not an ISO 8601 time", errors=[FieldError(name, "not ISO 8601")]
        ) from None
    if when.tzinfo is None:
        raise errors.INVALID_REQUEST(f"{name} needs a time zone (…Z)", errors=[FieldError(name, "no time zone")])
    return round(when.timestamp() * 1000)


async def _find(store: WebhookStore, endpoint: Endpoint, event_id: str) -> StreamEntry | None:
    for row in await store.delivery_log(endpoint.endpoint_id):
        if row.get("eventId") == event_id and row.get("streamId"):
            found = await store.event_at(str(row["streamId"]))
            if found is not None:
                return found
    start = 0
    for _ in range(SCAN_LIMIT // REDELIVER_LIMIT):  # not in the log: look through the outbox, oldest first
        page = await store.events_between(start, 2**62, limit=REDELIVER_LIMIT)
        for entry in page:
            if entry.id == event_id and entry.account == endpoint.account:
                return entry
        if len(page) < REDELIVER_LIMIT:
            return None
        start = int(page[-1].stream_id.partition("-")[0]) + 1
    return None


async def redeliver(store: WebhookStore, settings: Settings, account: str | None, endpoint_id: str, body: bytes, *,
                    now: int) -> QueuedView:  # fmt: skip
    """Deliver again one event, or every event of the endpoint's account in a time range that the endpoint wants
    (a new round of attempts, same webhook-id). Events are kept SPATIALGEN_WEBHOOK_EVENT_RETENTION_SECONDS."""
    req = decode(body, RedeliverRequest)
    endpoint = await load(store, account, endpoint_id)
    if (req.event_id is None) == (req.since is None):
        raise errors.INVALID_REQUEST(
            "Name either eventId or since (with an optional until).",
            errors=[FieldError("eventId", "give eventId or since, not both or neither")],
        )
    if req.event_id is not None:
        found = await _find(store, endpoint, req.event_id)
        if found is None:
            raise errors.EVENT_NOT_FOUND(f"No event {req.event_id[:64]!r} of this account is kept for redelivery.")
        chosen = [found]
    else:
        start, end = _ms(req.since or "", "since"), _ms(req.until, "until") if req.until else now
        page = await store.events_between(start, end, limit=SCAN_LIMIT)
        chosen = [e for e in page if e.account == endpoint.account and targets(e, [_enabled(endpoint)])]
        chosen = chosen[:REDELIVER_LIMIT]
    round_id = str(now)
    jobs = [(endpoint_id, delivery_job(settings, endpoint_id, e, await event_body(store, e), round_id=round_id))
            for e in chosen]  # fmt: skip
    await store.fan_out(jobs, [], **slots(settings))
    return QueuedView(endpoint_id=endpoint_id, event_ids=[e.id for e in chosen])


def _enabled(endpoint: Endpoint) -> Endpoint:
    return msgspec.structs.replace(endpoint, enabled=True)
