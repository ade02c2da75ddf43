"""ScriptPipeline: script calls of one event-loop tick share one write, stay atomic, and fail cleanly.

Against real Valkey processes: SCRIPT FLUSH, a killed and restarted server, a hung one, a database number.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.state.pipeline import ScriptPipeline, _Connection
from deploy.local.devstack import DevValkey, free_port

INCR_BY = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


async def test_concurrent_calls_share_one_write_and_return_their_own_replies(redis: Redis) -> None:
    pipeline = ScriptPipeline(redis)
    script = redis.register_script(INCR_BY)
    await script(keys=["warm"], args=[0])
    writes = 0
    real_send = _Connection.send

    def counting_send(self: _Connection, payload: bytes, futures: list[asyncio.Future[Any]]) -> None:
        nonlocal writes
        writes += 1
        real_send(self, payload, futures)

    _Connection.send = counting_send  # type: ignore[method-assign]
    try:
        replies = await asyncio.gather(*(pipeline(script, [f"k{i % 3}"], [i]) for i in range(30)))
        again = await asyncio.gather(*(pipeline(script, ["k0"], [0]) for _ in range(5)))
    finally:
        _Connection.send = real_send  # type: ignore[method-assign]
        pipeline.close()
    assert writes == 2  # thirty calls in one write, then five in another, on the one connection
    assert replies[:3] == [0, 1, 2]  # k0 += 0, k1 += 1, k2 += 2: each caller gets its own reply
    assert int(await redis.get("k0")) == sum(range(0, 30, 3)) == again[0]


async def test_script_unknown_to_redis_is_loaded_and_run(redis: Redis) -> None:
    pipeline = ScriptPipeline(redis)
    script = redis.register_script(INCR_BY)
    await redis.script_flush()
    try:
        assert sorted(await asyncio.gather(pipeline(script, ["a"], [5]), pipeline(script, ["a"], [1]))) in (
            [5, 6], [1, 6],
        )  # fmt: skip
    finally:
        pipeline.close()
    assert int(await redis.get("a")) == 6


@pytest.mark.parametrize(
    ("reply", "error"),
    [("NOPE", ResponseError), ("READONLY You cannot write against a read only replica.", ReadOnlyError),
     ("OOM command not allowed", OutOfMemoryError), ("MASTERDOWN Link with MASTER is down", MasterDownError)],
)  # fmt: skip
async def test_error_replies_reach_only_their_caller_as_redis_py_errors(
    redis: Redis, reply: str, error: type[RedisError]
) -> None:
    pipeline = ScriptPipeline(redis)
    good = redis.register_script(INCR_BY)
    bad = redis.register_script(f"return redis.error_reply('{reply}')")
    try:
        ok, failed = await asyncio.gather(pipeline(good, ["g"], [1]), pipeline(bad, [], []), return_exceptions=True)
    finally:
        pipeline.close()
    assert ok == 1 and type(failed) is error


async def test_connection_failure_reaches_every_caller() -> None:
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    pipeline = ScriptPipeline(dead)
    script = dead.register_script(INCR_BY)
    results = await asyncio.gather(*(pipeline(script, ["x"], [1]) for _ in range(3)), return_exceptions=True)
    pipeline.close()
    await dead.aclose()
    assert all(isinstance(r, RedisConnectionError) for r in results), results


@pytest.fixture
async def own_valkey(tmp_path: Path) -> AsyncIterator[DevValkey]:
    server = DevValkey(free_port(), tmp_path, appendonly=True).start()
    yield server
    with contextlib.suppress(Exception):
        os.kill(server.pid, signal.SIGCONT)
    server.stop()


async def test_a_killed_server_fails_calls_in_flight_and_the_next_call_reconnects(own_valkey: DevValkey) -> None:
    client = Redis.from_url(own_valkey.url, socket_timeout=5, socket_connect_timeout=1)
    pipeline = ScriptPipeline(client)
    script = client.register_script(INCR_BY)
    try:
        assert await pipeline(script, ["n"], [1]) == 1
        own_valkey.kill()  # SIGKILL
        with pytest.raises(RedisConnectionError):
            await pipeline(script, ["n"], [1])
        own_valkey.start()  # same port, same AOF
        await asyncio.sleep(1.1)  # appendfsync everysec: the first write reached the AOF
        for _ in range(50):  # the next calls reconnect by themselves
            with contextlib.suppress(RedisConnectionError):
                assert await pipeline(script, ["n"], [1]) >= 1
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the pipeline never reconnected")
    finally:
        pipeline.close()
        await client.aclose()


async def test_a_hung_server_times_out_instead_of_hanging(own_valkey: DevValkey) -> None:
    client = Redis.from_url(own_valkey.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    pipeline = ScriptPipeline(client)
    script = client.register_script(INCR_BY)
    try:
        assert await pipeline(script, ["h"], [1]) == 1
        os.kill(own_valkey.pid, signal.SIGSTOP)
        with pytest.raises(RedisTimeoutError):
            await asyncio.wait_for(pipeline(script, ["h"], [1]), 10)  # wait_for only catches a hang
        os.kill(own_valkey.pid, signal.SIGCONT)
        for _ in range(50):
            with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
                assert await pipeline(script, ["h"], [1]) >= 2
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the pipeline never recovered")
    finally:
        pipeline.close()
        await client.aclose()


async def test_the_database_number_and_password_of_the_url_are_used(own_valkey: DevValkey) -> None:
    admin = Redis.from_url(own_valkey.url)
    await admin.config_set("requirepass", "s3cret")
    client = Redis.from_url(f"redis://:s3cret@127.0.0.1:{own_valkey.port}/3")
    pipeline = ScriptPipeline(client)
    try:
        assert await pipeline(client.register_script(INCR_BY), ["in-db-3"], [7]) == 7
        assert await client.get("in-db-3") == b"7"  # the redis-py client on db 3 sees it
        await client.select(0)  # type: ignore[attr-defined]
    except AttributeError:
        pass
    finally:
        pipeline.close()
        await client.config_set("requirepass", "")
        await client.aclose()
        await admin.aclose()
