"""Webhook endpoints (SPEC 3.9): the request and answer documents of `/api/webhooks`, and the pure rules behind them
(endpoint URLs, event types, the retry schedule with its jitter, Retry-After).

No I/O: the endpoints live in Redis (app/state/webhooks.py), deliveries run on the workers (app/webhooks/).
"""

from __future__ import annotations

import email.utils
import math
import random
from typing import Annotated
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from app.domain.errors import FieldError
from app.domain.events import SUBSCRIBABLE

MAX_ENDPOINTS_PER_ACCOUNT = 20
"""Endpoints one account may register."""
MAX_URL_LENGTH = 2048
SECRET_PREFIX = "whsec_"
JITTER = 0.1
"""Each retry delay is moved by up to ±10 % at random, so retries of many events do not arrive in step."""
MAX_RETRY_AFTER_SECONDS = 86_400
"""A receiver's Retry-After is honoured up to a day (a longer one is cut to this)."""
SCHEDULE_PATTERN = r"^ *[0-9]+(\.[0-9]+)? *(, *[0-9]+(\.[0-9]+)? *)*$"
"""What SPATIALGEN_WEBHOOK_RETRY_SCHEDULE must look like: seconds (not negative), comma-separated."""
SPEC_SCHEDULE = "0,5,300,1800,7200,18000,36000,50400,72000,86400"
"""The Standard Webhooks schedule: at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h and 24 h later."""

Url = Annotated[str, Meta(min_length=1, max_length=MAX_URL_LENGTH, description="Where deliveries are POSTed.")]
Types = Annotated[list[str], Meta(max_length=len(SUBSCRIBABLE), description="Event types to deliver (all if absent).")]
Text = Annotated[str, Meta(max_length=255)]


class CreateEndpointRequest(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    """`POST /api/webhooks`."""

    url: Url
    event_types: Types | None = None
    description: Text = ""
    enabled: bool = True


class UpdateEndpointRequest(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    """`PATCH /api/webhooks/{endpointId}`: only the fields given change; enabling clears the disabled reason."""

    url: Url | None = None
    event_types: Types | None = None
    description: Text | None = None
    enabled: bool | None = None


class RedeliverRequest(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    """`POST /api/webhooks/{endpointId}/redeliver`: one event, or every event of the account in a time range."""

    event_id: Annotated[str, Meta(max_length=64)] | None = None
    since: Annotated[str, Meta(description="ISO 8601 UTC start (inclusive), with `until`.")] | None = None
    until: Annotated[str, Meta(description="ISO 8601 UTC end (inclusive; default now).")] | None = None


class EndpointView(msgspec.Struct, rename="camel", kw_only=True):
    """An endpoint as the API shows it (never its secret)."""

    endpoint_id: str
    url: str
    event_types: list[str]
    description: str
    enabled: bool
    created_at: str
    disabled_reason: str | None
    """Why the service disabled it (a 410 answer, or every delivery failing for days); null when enabled."""
    disabled_at: str | None
    failing_since: str | None
    """The first failed attempt since the last delivered one (null while deliveries succeed)."""
    last_success_at: str | None
    secret_rotating_until: str | None
    """While a rotated secret's predecessor still signs (both signatures are sent); null otherwise."""


class EndpointCreatedView(EndpointView, kw_only=True):
    """201 of `POST /api/webhooks`: the endpoint and its signing secret, shown this once."""

    secret: str


class EndpointListView(msgspec.Struct, rename="camel", kw_only=True):
    """`GET /api/webhooks`: the account's endpoints."""

    endpoints: list[EndpointView]


class SecretRotatedView(msgspec.Struct, rename="camel", kw_only=True):
    """`POST …/rotate-secret`: the new secret (shown this once) and until when the old one still signs too."""

    endpoint_id: str
    secret: str
    previous_secret_valid_until: str


class EndpointDeletedView(msgspec.Struct, rename="camel", kw_only=True):
    """`DELETE /api/webhooks/{endpointId}`."""

    endpoint_id: str
    deleted: bool


class DeliveryView(msgspec.Struct, rename="camel", kw_only=True):
    """One delivery attempt in an endpoint's log."""

    event_id: str
    event_type: str
    attempt: int
    attempted_at: str
    outcome: str
    """`delivered`, `retrying` (another attempt is scheduled), `failed` (no more attempts), `disabled` (410)."""
    status: int | None
    """The receiver's HTTP status (null when no answer: timeout, refused connection, refused address)."""
    latency_ms: int
    error: str | None
    next_attempt_at: str | None


class DeliveryLogView(msgspec.Struct, rename="camel", kw_only=True):
    """`GET …/deliveries`: the endpoint's state and its last attempts, newest first."""

    endpoint: EndpointView
    deliveries: list[DeliveryView]


class QueuedView(msgspec.Struct, rename="camel", kw_only=True):
    """202 of `…/test` and `…/redeliver`: the events queued for delivery to the endpoint."""

    endpoint_id: str
    event_ids: list[str]


def url_problems(url: str, *, allow_http: bool) -> list[str]:
    """What is wrong with an endpoint URL (empty: nothing): https (http only when private targets are allowed), a
    host, no credentials, no fragment. Where the host points is checked when connecting (app/webhooks/outbound.py)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return ["is not a valid URL"]
    problems = []
    if parts.scheme not in ("https", "http") or (parts.scheme == "http" and not allow_http):
        problems.append("must be an https:// URL" + (" (or http://)" if allow_http else ""))
    if not parts.hostname:
        problems.append("has no host")
    if parts.username is not None or parts.password is not None:
        problems.append("must not carry credentials")
    if parts.fragment:
        problems.append("must not have a #fragment")
    if port == 0:
        problems.append("has port 0")
    if any(c.isspace() or ord(c) < 0x20 for c in url) or not url.isascii():
        problems.append("must be ASCII without spaces (an international domain name in its xn-- form)")
    return problems


def type_problems(types: list[str]) -> list[FieldError]:
    """Unknown or repeated event types."""
    known = {t.value for t in SUBSCRIBABLE}
    out = [FieldError(f"eventTypes[{i}]", f"{t!r} is not one of {', '.join(sorted(known))}")
           for i, t in enumerate(types) if t not in known]  # fmt: skip
    if len(set(types)) != len(types):
        out.append(FieldError("eventTypes", "lists an event type twice"))
    return out


def parse_schedule(text: str) -> tuple[float, ...]:
    """`0,5,300,…`: the delay before each attempt in seconds (the first is the first attempt's). ValueError if bad."""
    try:
        delays = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of seconds") from None
    if not delays or any(d < 0 or not math.isfinite(d) for d in delays):
        raise ValueError(f"{text!r} needs at least one delay, none negative")
    return delays


def retry_delay(schedule: tuple[float, ...], attempt: int, *, retry_after: float | None = None,
                rng: random.Random | None = None) -> float | None:  # fmt: skip
    """Seconds from a failed attempt (1-based) to the next one, jittered; None when it was the last.

    A receiver's Retry-After (429, 503) is honoured when it asks for longer, up to MAX_RETRY_AFTER_SECONDS.
    """
    if attempt >= len(schedule):
        return None
    base = schedule[attempt] * (1 + JITTER * (2 * (rng or random).random() - 1))
    if retry_after is not None:
        base = max(base, min(retry_after, MAX_RETRY_AFTER_SECONDS))
    return base


def parse_retry_after(value: str | None, now_s: float) -> float | None:
    """A Retry-After header (delta-seconds or an HTTP date) as seconds from now; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now_s)
