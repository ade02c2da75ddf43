"""Abuse limits: per-key rate limits by route class, per-account quotas, and the headers that announce them.

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


DEFAULT_RATES = "create=5/100,part_urls=50/500,complete=50/500,reads=100/1000,webhooks=5/50"
"""Per key: 5 creates a second sustained (432,000 a day) with bursts of 100; polling and part URLs far more;
managing webhook endpoints (test events and redeliveries cause deliveries) 5 a second."""


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
        if not self.allowed:
            out["Retry-After"] = str(max(1, math.ceil(self.retry_ms / 1000)))
        return out


class Quota(NamedTuple):
    """An account's live-groups and live-declared-bytes quotas."""

    live_groups: int
    live_bytes: int
