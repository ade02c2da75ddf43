"""`spatialgen-admin accounts`: an account's limits (its own or the defaults) and live use, and the one write
of the admin reads: setting an account's own limits.
"""

from __future__ import annotations

import msgspec
from redis.asyncio import Redis

from app.domain.limits import Rate, RouteClass
from app.settings import Settings
from app.state.keys import (
    ended_index_key,
    limits_key,
    usage_key,
)


class AccountLimits(msgspec.Struct, kw_only=True, rename="camel"):
    """An account's limits (its own where set, else the service defaults) and its live use."""

    account: str
    live_groups: int
    live_bytes: int
    rates: dict[str, str]
    """Route class -> `rate/burst` (per second / tokens); `0/…` is unlimited."""
    overridden: list[str]
    """Which of the above are the account's own (the rest are the defaults)."""
    used_groups: int
    used_bytes: int
    ended_groups: int
    """Groups that ended without completing and are still kept (trimmed to retained_ended_groups)."""
    retained_ended_groups: int


async def account_limits(redis: Redis, settings: Settings, account: str) -> AccountLimits:
    """What limits an account runs under and how much of its quota is in use."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(limits_key(account))
        pipe.hgetall(usage_key(account))
        pipe.zcard(ended_index_key(account))
        own_raw, used_raw, ended = await pipe.execute()
    own = {k.decode(): v.decode() for k, v in own_raw.items()}
    used = {k.decode(): int(v) for k, v in used_raw.items()}
    rates = {}
    for route_class, rate in settings.limits.rates().items():
        per_second = own.get(f"rate:{route_class}", f"{rate.per_second:g}")
        rates[route_class.value] = f"{per_second}/{own.get(f'burst:{route_class}', rate.burst)}"
    quota = settings.limits.quota()
    return AccountLimits(
        account=account, live_groups=int(own.get("live_groups", quota.live_groups)),
        live_bytes=int(own.get("live_bytes", quota.live_bytes)), rates=rates, overridden=sorted(own),
        used_groups=used.get("groups", 0), used_bytes=used.get("bytes", 0), ended_groups=int(ended),
        retained_ended_groups=settings.limits.retained_ended_groups,
    )  # fmt: skip


async def set_account_limits(
    redis: Redis, account: str, *, live_groups: int | None = None, live_bytes: int | None = None,
    rates: dict[RouteClass, Rate] | None = None, reset: bool = False,
) -> None:  # fmt: skip
    """Set (or with reset, first drop) an account's own limits; they apply to its next request."""
    fields: dict[str, str] = {}
    if live_groups is not None:
        fields["live_groups"] = str(live_groups)
    if live_bytes is not None:
        fields["live_bytes"] = str(live_bytes)
    for route_class, rate in (rates or {}).items():
        fields[f"rate:{route_class}"] = f"{rate.per_second:g}"
        fields[f"burst:{route_class}"] = str(rate.burst)
    async with redis.pipeline(transaction=True) as pipe:
        if reset:
            pipe.delete(limits_key(account))
        if fields:
            pipe.hset(limits_key(account), mapping=fields)
        await pipe.execute()
