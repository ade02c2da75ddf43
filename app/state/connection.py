"""How every process reaches Redis: the URL's server, or the primary that Redis Sentinel names.

The API, the workers (arq's pool) and the admin CLI all connect through here, so a Sentinel deployment is one
setting for all of them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from arq.connections import ArqRedis
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

from app.settings import RedisConfig


def sentinel_addresses(config: RedisConfig) -> list[tuple[str, int]]:
    """SPATIALGEN_REDIS_SENTINELS as (host, port) pairs (empty: no Sentinel)."""
    out = []
    for item in config.sentinels.split(","):
        host, _, port = item.strip().rpartition(":")
        if host:
            out.append((host.strip("[]"), int(port)))
    return out


def _url_auth(config: RedisConfig) -> dict[str, Any]:
    """Password, user and database of SPATIALGEN_REDIS_URL (its host is the Sentinels' business)."""
    parts = urlsplit(config.url)
    db = parts.path.strip("/") or "0"
    return {
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "db": int(db) if db.isdigit() else 0,
    }


def redis_client(config: RedisConfig, **kwargs: Any) -> Redis:
    """A redis-py client for the primary: the URL's server, or whichever the Sentinels name now.

    With Sentinel, every new connection asks the Sentinels for the current primary, so after a failover
    the clients follow the promoted replica by themselves.
    """
    sentinels = sentinel_addresses(config)
    if not sentinels:
        direct: Redis = Redis.from_url(config.url, **kwargs)
        return direct
    timeouts = {k: v for k, v in kwargs.items() if k in ("socket_timeout", "socket_connect_timeout")}
    sentinel = Sentinel(sentinels, sentinel_kwargs=timeouts, **_url_auth(config), **kwargs)  # type: ignore[no-untyped-call]
    client: Redis = sentinel.master_for(config.sentinel_master, redis_class=Redis)
    return client


OUTAGE_RETRIES = 150
"""Tries of one worker command through a Redis outage: 0.05 s doubling to 2 s apart, about five minutes in all."""


def worker_pool(config: RedisConfig) -> ArqRedis:
    """The workers' Redis client (arq's pool): every command retried through an outage, so a worker polls on through
    a Redis restart or a Sentinel failover instead of exiting, however it is started (arq's CLI included)."""
    sentinels = sentinel_addresses(config)
    errors: tuple[type[Exception], ...] = (ConnectionError, TimeoutError, BusyLoadingError)
    if not sentinels:
        # OSError too: a refused connection (Redis restarting) surfaces as one while a new connection is made. Not
        # with Sentinel: its connection retries by asking the Sentinels for the primary again (a ConnectionError),
        # where retrying the refused address itself would keep calling a primary that is gone.
        errors += (OSError,)
    retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), OUTAGE_RETRIES, supported_errors=errors)  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {"retry": retry, "retry_on_error": list(errors), "socket_connect_timeout": 3}
    if not sentinels:
        direct: ArqRedis = ArqRedis.from_url(config.url, **kwargs)
        return direct
    sentinel = Sentinel(sentinels, sentinel_kwargs={"socket_connect_timeout": 3}, **_url_auth(config), **kwargs)  # type: ignore[no-untyped-call]
    pool: ArqRedis = sentinel.master_for(config.sentinel_master, redis_class=ArqRedis)
    return pool
