"""ScriptBatcher: scripts called in one event-loop tick share a pipeline, stay atomic, survive SCRIPT FLUSH."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from app.state.batcher import ScriptBatcher
from deploy.local.devstack import free_port

INCR_BY = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


async def test_concurrent_calls_share_one_round_trip_and_return_their_own_replies(redis: Redis) -> None:
    batcher = ScriptBatcher(redis)
    script = redis.register_script(INCR_BY)
    await script(keys=["warm"], args=[0])
    checkouts = 0
    real_get = redis.connection_pool.get_connection

    async def counting_get(*args: Any, **kwargs: Any) -> Any:
        nonlocal checkouts
        checkouts += 1
        return await real_get(*args, **kwargs)

    redis.connection_pool.get_connection = counting_get  # type: ignore[method-assign]
    try:
        replies = await asyncio.gather(*(batcher(script, [f"k{i % 3}"], [i]) for i in range(30)))
    finally:
        redis.connection_pool.get_connection = real_get  # type: ignore[method-assign]
    assert checkouts == 1  # one connection, one write, thirty replies
    assert replies[:3] == [0, 1, 2]  # k0 += 0, k1 += 1, k2 += 2: each caller gets its own reply
    assert int(await redis.get("k0")) == sum(range(0, 30, 3))


async def test_script_unknown_to_redis_is_loaded_and_run(redis: Redis) -> None:
    batcher = ScriptBatcher(redis)
    script = redis.register_script(INCR_BY)
    await redis.script_flush()
    assert await asyncio.gather(batcher(script, ["a"], [5]), batcher(script, ["a"], [1])) in ([5, 6], [6, 1], [1, 6])
    assert int(await redis.get("a")) == 6


async def test_script_errors_reach_only_their_caller(redis: Redis) -> None:
    batcher = ScriptBatcher(redis)
    good = redis.register_script(INCR_BY)
    bad = redis.register_script("return redis.call('NOPE')")
    ok, failed = await asyncio.gather(batcher(good, ["g"], [1]), batcher(bad, [], []), return_exceptions=True)
    assert ok == 1 and isinstance(failed, ResponseError)


async def test_connection_failure_reaches_every_caller() -> None:
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    batcher = ScriptBatcher(dead)
    script = dead.register_script(INCR_BY)
    results = await asyncio.gather(*(batcher(script, ["x"], [1]) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, RedisConnectionError) for r in results)
    await dead.aclose()
    with pytest.raises(RedisConnectionError):
        raise results[0]  # type: ignore[misc]
