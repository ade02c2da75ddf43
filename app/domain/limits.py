"""Abuse limits: per-key rate limits by route class, per-account quotas, and the headers that announce them.

A request spends tokens in proportion to the work it causes, not one per call: a part-urls call one per URL it
signs, a complete that hands parts to storage one more per 100 parts, a read that refreshes a group's tracking one
more per file it refreshes (`*_cost` below; the units are in COST_UNITS and the README).

Pure: the buckets themselves live in Redis (app/state/lua/lib/ratelimit.lua), so every API process shares them.
The header form is the IETF httpapi draft's (draft-ietf-httpapi-ratelimit-headers): `RateLimit-Policy`
names the policy with its quota and window, `RateLimit` what is left of it and when it is full again.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import NamedTuple


class RouteClass(StrEnum):
    """Which bucket a route draws from."""

    CREATE = "create"
    PART_URLS = "part_urls"
    COMPLETE = "complete"
    READS = "reads"
    WEBHOOKS = "webhooks"


class Rate(NamedTuple):
    """A token bucket: refilled at `per_second`, holding at most `burst` (0 per second: unlimited)."""

    per_second: float
    burst: int


DEFAULT_RATES = "create=5/100,part_urls=1000/20000,complete=50/500,reads=100/1000,webhooks=5/50"
"""Per key: 5 creates a second sustained (432,000 a day) with bursts of 100; 1,000 part URLs signed a second with
bursts of 20,000 (every URL of two 10,000-part files at once); 50 completion and 100 read tokens a second; 5 calls
on webhook endpoints a second (test events and redeliveries cause deliveries)."""

COST_UNITS = {
    RouteClass.CREATE: "groups created",
    RouteClass.PART_URLS: "part URLs signed",
    RouteClass.COMPLETE: "completion tokens (1 per complete or cancel, 1 more per 100 parts handed to storage)",
    RouteClass.READS: "read tokens (1 per read, 1 more per file whose tracking the read refreshes)",
    RouteClass.WEBHOOKS: "calls on webhook endpoints",
}
"""What one token of each route class buys."""

PARTS_PER_COMPLETE_TOKEN = 100


def part_urls_cost(urls: int) -> int:
    """Tokens of a part-urls call: one per URL it signs (its own token, taken first, counts as one of them)."""
    return max(1, urls)


def complete_cost(parts: int) -> int:
    """Tokens of a complete that starts a completion: its own, and one per 100 parts handed to storage (the
    completion job carries the list, and storage assembles that many parts)."""
    return 1 + parts // PARTS_PER_COMPLETE_TOKEN


def refresh_cost(files: int) -> int:
    """Extra tokens of a read that queues a refresh of its group's tracking: one per file storage is asked about."""
    return files


def parse_rates(text: str) -> dict[RouteClass, Rate]:
    """`class=rate/burst,…` (the SPATIALGEN_RATE_LIMITS form); classes not named keep their defaults;
    `off` turns every limit off. Raises ValueError naming what is wrong."""
    rates = dict(_entry(x) for x in DEFAULT_RATES.split(","))
    if text.strip().lower() == "off":
        return {c: Rate(0.0, r.burst) for c, r in rates.items()}
    for item in filter(None, (x.strip() for x in text.split(","))):
        route_class, rate = _entry(item)
        rates[route_class] = rate
    return rates


def _entry(item: str) -> tuple[RouteClass, Rate]:
    name, sep, value = item.partition("=")
    per_second, slash, burst = value.partition("/")
    try:
        route_class = RouteClass(name.strip())
        rate = Rate(float(per_second), int(burst))
    except ValueError:
        raise ValueError(f"{item!r} is not class=rate/burst with class one of {', '.join(RouteClass)}") from None
    if not sep or not slash or rate.per_second < 0 or rate.burst < 1:
        raise ValueError(f"{item!r}: the rate must be >= 0 per second and the burst >= 1")
    return route_class, rate


class RateState(NamedTuple):
    """A key's bucket after a request took (or was refused) its token."""

    allowed: bool
    remaining: int
    retry_ms: int
    per_second: float
    burst: int

    def headers(self, route_class: RouteClass) -> dict[str, str]:
        """RateLimit-Policy and RateLimit (and Retry-After when refused), in the draft's structured form."""
        if self.per_second <= 0:
            return {}
        window = math.ceil(self.burst / self.per_second)
        full_in = math.ceil((self.burst - self.remaining) / self.per_second)
        out = {
            "RateLimit-Policy": f'"{route_class}";q={self.burst};w={window}',
            "RateLimit": f'"{route_class}";r={self.remaining};t={full_in}',
        }
        if not self.allowed and self.retry_ms >= 0:  # -1: a cost the bucket can never hold, retrying will not help
            out["Retry-After"] = str(max(1, math.ceil(self.retry_ms / 1000)))
        return out


class Quota(NamedTuple):
    """An account's live-groups and live-declared-bytes quotas."""

    live_groups: int
    live_bytes: int


class Charge:
    """What one request spends from its key's bucket: its own token when it is authenticated, then, once its work is
    known, the rest of its cost. The RateLimit headers it answers with (errors too) are the bucket's after the last
    take."""

    __slots__ = ("rate", "route_class", "spent")

    def __init__(self, route_class: RouteClass) -> None:
        self.route_class = route_class
        self.rate: RateState | None = None
        self.spent = 0

    def took(self, rate: RateState, tokens: int) -> None:
        """Record a take (allowed or not): the headers follow the bucket's latest state."""
        self.rate = rate
        if rate.allowed:
            self.spent += tokens

    def headers(self) -> dict[str, str]:
        """RateLimit-Policy and RateLimit (and Retry-After when refused) of the latest take; none before one."""
        return self.rate.headers(self.route_class) if self.rate is not None else {}


def charge_spent(charge: Charge | None) -> int:
    """Tokens a request has spent so far (0 outside HTTP)."""
    return charge.spent if charge is not None else 0
