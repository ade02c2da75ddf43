"""Is this the Redis the stored objects were written with? Asked before anything deletes storage.

A Redis that lost its data (a restart without AOF, a failover to an empty replica, a FLUSHDB), a worker started
with the wrong database number, or a Redis restored from an old backup would make every group look unknown or
live, and a sweep that trusted it could delete what users sent. Two markers say whether it is the right one:

- in Redis, `sg:instance`: an id written once (SET NX) when a service process first starts on that Redis;
- in the bucket, `{prefix}/_spatialgen/instance.json`: the id of the Redis the objects belong to, bound by the first
  sweep that finds the bucket without one, and the highest libraryId that Redis had handed out (libraryIds only grow,
  so a Redis that went back in time has a lower one).

Missing, different or rewound: destructive work refuses to run, logs why, counts it in the metrics, and readiness
reports it. `spatialgen-admin storage bind-redis --confirm` binds the bucket to the current Redis once an operator has
checked it is the right one.
"""

from __future__ import annotations

import contextlib
import logging
from enum import StrEnum
from typing import TYPE_CHECKING

import msgspec
from redis.asyncio import Redis

from app.domain.clock import iso_ms, now_ms
from app.domain.objectkeys import root_prefix
from app.state.keys import INSTANCE_KEY, LIBRARY_COUNTER, METRICS_KEY, MetricField

if TYPE_CHECKING:
    from app.storage.s3 import ObjectStore

log = logging.getLogger("spatialgen.upkeep")
MARKER_NAME = "_spatialgen/instance.json"
"""Under the key prefix; `_` cannot start an account id, so no upload key ever looks like it."""


class Verdict(StrEnum):
    """What the markers say."""

    OK = "ok"
    BOUND = "bound"
    """The bucket had no marker: it is now bound to this Redis (a new deployment, or after bind-redis)."""
    REDIS_MARKER_MISSING = "redis_marker_missing"
    """This Redis has no identity: it lost its data, or no service process started on it since."""
    MISMATCH = "redis_mismatch"
    """The bucket belongs to another Redis (emptied and claimed again, another database, another server)."""
    REWOUND = "redis_rewound"
    """Same Redis, but it has handed out fewer libraryIds than the bucket saw: restored from an old state."""

    @property
    def allows_deletion(self) -> bool:
        """Whether destructive work may run."""
        return self in (Verdict.OK, Verdict.BOUND)


class BucketMarker(msgspec.Struct, rename="camel", kw_only=True):
    """The bucket's marker document."""

    redis: str
    library_high_water: int
    bound_at: str


def marker_key(key_prefix: str) -> str:
    """Where the bucket's marker lives."""
    return root_prefix(key_prefix) + MARKER_NAME


async def _redis_state(redis: Redis) -> tuple[str | None, int]:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(INSTANCE_KEY)
        pipe.get(LIBRARY_COUNTER)
        rid, counter = await pipe.execute()
    return (rid.decode() if rid else None), int(counter or 0)


async def verify(  # noqa: PLR0911 - one return per verdict
    redis: Redis, store: ObjectStore, key_prefix: str, *, bind: bool = True
) -> Verdict:
    """The markers' verdict; binds an unmarked bucket to this Redis when `bind` (sweeps do; readiness does not)."""
    rid, counter = await _redis_state(redis)
    if rid is None:
        return Verdict.REDIS_MARKER_MISSING
    key = marker_key(key_prefix)
    raw = await store.get_small(key)
    if raw is None:
        if not bind:
            return Verdict.BOUND
        fresh = BucketMarker(redis=rid, library_high_water=counter, bound_at=iso_ms(now_ms()))
        if await store.put_small(key, msgspec.json.encode(fresh), only_if_absent=True):
            log.warning("bucket bound to Redis instance %s (%s)", rid, key)
            return Verdict.BOUND
        raw = await store.get_small(key)  # another process bound it meanwhile: judge by what it wrote
        if raw is None:
            return Verdict.MISMATCH
    try:
        marker = msgspec.json.decode(raw, type=BucketMarker)
    except msgspec.DecodeError:
        return Verdict.MISMATCH
    if marker.redis != rid:
        return Verdict.MISMATCH
    if counter < marker.library_high_water:
        return Verdict.REWOUND
    if bind and counter > marker.library_high_water:  # the high-water mark follows the Redis
        updated = msgspec.structs.replace(marker, library_high_water=counter)
        await store.put_small(key, msgspec.json.encode(updated))
    return Verdict.OK


async def rebind(redis: Redis, store: ObjectStore, key_prefix: str) -> BucketMarker:
    """Bind the bucket to the current Redis (an operator's decision, after checking it is the right one)."""
    rid, counter = await _redis_state(redis)
    if rid is None:
        raise RuntimeError("this Redis has no identity yet: start a service process on it first")
    marker = BucketMarker(redis=rid, library_high_water=counter, bound_at=iso_ms(now_ms()))
    await store.put_small(marker_key(key_prefix), msgspec.json.encode(marker))
    return marker


async def guard(redis: Redis, store: ObjectStore, key_prefix: str, what: str) -> bool:
    """True when `what` (a sweep, a purge) may delete; otherwise logs why, counts it and returns False."""
    verdict = await verify(redis, store, key_prefix)
    if verdict.allows_deletion:
        return True
    log.error("%s refused: %s (the Redis is not the one the stored objects were written with; see "
              "spatialgen-admin storage identity)", what, verdict.value)  # fmt: skip
    with contextlib.suppress(Exception):
        await redis.hincrby(METRICS_KEY, MetricField.SWEEPS_REFUSED, 1)  # type: ignore[misc]
    return False


__all__ = ["BucketMarker", "Verdict", "guard", "marker_key", "rebind", "verify"]
