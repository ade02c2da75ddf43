"""Auto-pipelining of script calls on the hot path: the calls of one event-loop tick leave as one write on
a dedicated connection, and replies come back in order to their callers.

redis-py's per-call machinery (a pool checkout under a lock, an asyncio.timeout around every reply) cost
about 100 µs of CPU per create; this costs a few. Only EVALSHA goes through here; the rest of the service
uses the ordinary redis-py client, whose address, credentials and database this connection shares.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from typing import Any, cast

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ConnectionError,
    MasterDownError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TimeoutError,
)

_ERRORS: dict[str, type[RedisError]] = {
    "NOSCRIPT": NoScriptError,
    "READONLY": ReadOnlyError,
    "OOM": OutOfMemoryError,
    "LOADING": BusyLoadingError,
    "MASTERDOWN": MasterDownError,
    "NOPERM": NoPermissionError,
    "WRONGPASS": AuthenticationError,
    "NOAUTH": AuthenticationError,
}


WAIT_TIMEOUT_MS = 1000
"""How long a replicated write waits for its replicas' acknowledgements."""


class WriteNotReplicated(ConnectionError):
    """The primary took a write but not enough replicas acknowledged it in time: not acknowledged (503)."""


REDIS_UNAVAILABLE: tuple[type[RedisError], ...] = (
    ConnectionError, TimeoutError, BusyLoadingError, ReadOnlyError, MasterDownError, OutOfMemoryError,
)  # fmt: skip
"""Redis errors that mean "not available right now" (down, restarting, failing over, full): retry later."""


def reply_error(message: str) -> RedisError:
    """The redis-py exception for an error reply ("NOSCRIPT No matching script" -> NoScriptError(...))."""
    code, _, rest = message.partition(" ")
    cls = _ERRORS.get(code)
    return cls(rest) if cls is not None else ResponseError(message)


def command(*parts: bytes | str | int) -> bytes:
    """One command in the Redis protocol (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        raw = part if type(part) is bytes else str(part).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(raw), raw))
    return b"".join(out)


class _Connection(asyncio.Protocol):
    """One pipelined connection: writes go out as they come, each reply resolves the oldest waiter."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.reader = hiredis.Reader()
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.progress = 0.0  # when a reply last arrived (or the first waiter was added)
        self._watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport subclasses

    def send(self, payload: bytes, futures: list[asyncio.Future[Any]]) -> None:
        """Write commands and queue their waiters, in the same order."""
        assert self.transport is not None
        if not self.waiters:
            self.progress = time.monotonic()
        self.transport.write(payload)
        self.waiters.extend(futures)
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_later(self.timeout, self._check)

    def _check(self) -> None:
        """No reply for `timeout` seconds while some are owed: the server is gone or hung; drop the connection."""
        self._watchdog = None
        if not self.waiters or self.closed:
            return
        if time.monotonic() - self.progress >= self.timeout:
            self._fail(TimeoutError(f"no reply from Redis within {self.timeout:g} s"))
            if self.transport is not None:
                self.transport.abort()
            return
        self._watchdog = asyncio.get_running_loop().call_later(self.timeout, self._check)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        self.progress = time.monotonic()
        try:
            while (reply := self.reader.gets()) is not False:
                fut = self.waiters.popleft()
                if fut.done():
                    continue  # its caller gave up (cancelled); the reply is dropped in order
                if isinstance(reply, hiredis.ReplyError):
                    fut.set_exception(reply_error(str(reply)))
                else:
                    fut.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or a reply nobody asked for
            self._fail(ConnectionError(f"Redis protocol out of sync: {exc!r}"))
            assert self.transport is not None
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"Redis connection lost: {exc!r}" if exc else "Redis closed the connection"))

    def _fail(self, error: RedisError) -> None:
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(error)

    def close(self) -> None:
        """Close the connection (pending callers get a ConnectionError)."""
        if self.transport is not None:
            self.transport.close()
        self._fail(ConnectionError("closed"))


class ScriptPipeline:
    """EVALSHA calls made in the same event-loop tick share one write on one dedicated connection.

    Each script stays atomic on its own; only the network trip is shared. The connection is opened on
    first use and again after it is lost (callers in flight get a ConnectionError: a 503 for the client).
    A script Redis no longer knows (restart, SCRIPT FLUSH) is loaded and the call sent again.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        kwargs = redis.connection_pool.connection_kwargs
        self.timeout = float(kwargs.get("socket_timeout") or 5.0)
        self.connect_timeout = float(kwargs.get("socket_connect_timeout") or self.timeout)
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._pending: list[tuple[bytes, asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, script: AsyncScript, keys: list[Any], args: list[Any], *, replicas: int = 0) -> Any:
        """Run one script in the next shared write and return its reply.

        replicas > 0: the script's writes must also reach that many replicas (WAIT, on this same connection,
        right behind it) or the call fails with WriteNotReplicated, a ConnectionError (-> 503, retried).
        """
        payload = command(b"EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return await self._run(payload, replicas)
        except NoScriptError:
            await self.redis.script_load(script.script)
            return await self._run(payload, replicas)

    async def _run(self, payload: bytes, replicas: int) -> Any:
        if not replicas:
            return await self._submit(payload)
        replies: tuple[Any, Any] = await asyncio.gather(
            self._submit(payload), self._submit(command(b"WAIT", replicas, WAIT_TIMEOUT_MS)), return_exceptions=True
        )
        reply, acked = replies
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(acked, BaseException):
            raise acked
        if int(acked) < replicas:
            raise WriteNotReplicated(f"{acked} of {replicas} replicas acknowledged within {WAIT_TIMEOUT_MS} ms")
        return reply

    def _submit(self, payload: bytes) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((payload, fut))
        return fut

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        conn = self._conn
        if conn is not None and not conn.closed:
            _send(conn, batch)
            return
        task = asyncio.ensure_future(self._send_when_connected(batch))
        self._tasks.add(task)  # keep a reference until done
        task.add_done_callback(self._tasks.discard)

    async def _send_when_connected(self, batch: list[tuple[bytes, asyncio.Future[Any]]]) -> None:
        try:
            conn = await self._connected()
        except Exception as exc:  # Redis unreachable: every caller of this batch gets it (-> 503)
            _fail_all(batch, exc)
            return
        _send(conn, batch)

    async def _connected(self) -> _Connection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        if self._connecting is None:  # one connection attempt at a time, shared by everyone waiting
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _connect(self) -> _Connection:
        pool = self.redis.connection_pool
        kwargs = pool.connection_kwargs
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            if kwargs.get("path"):
                _, conn = await loop.create_unix_connection(lambda: _Connection(self.timeout), kwargs["path"])
            else:
                get_master = getattr(pool, "get_master_address", None)  # a Sentinel pool knows the primary
                host, port = await get_master() if get_master else (kwargs.get("host", "localhost"),
                                                                     kwargs.get("port", 6379))  # fmt: skip
                _, conn = await loop.create_connection(
                    lambda: _Connection(self.timeout), host, int(port), ssl=_ssl_context(pool.connection_class, kwargs)
                )
            handshake = []
            if kwargs.get("password"):
                user = kwargs.get("username")
                handshake.append(command(b"AUTH", *([user] if user else []), kwargs["password"]))
            if int(kwargs.get("db") or 0):
                handshake.append(command(b"SELECT", int(kwargs["db"])))
            if handshake:
                futures = [loop.create_future() for _ in handshake]
                conn.send(b"".join(handshake), futures)
                await asyncio.gather(*futures)
        self._conn = conn
        return conn

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._connecting is not None:
            self._connecting.cancel()


def _send(conn: _Connection, batch: list[tuple[bytes, asyncio.Future[Any]]]) -> None:
    """Write a batch; whatever goes wrong, its callers hear of it (nobody waits forever)."""
    try:
        conn.send(b"".join(p for p, _ in batch), [f for _, f in batch])
    except Exception as exc:
        _fail_all(batch, exc)


def _fail_all(batch: list[tuple[bytes, asyncio.Future[Any]]], exc: Exception) -> None:
    error = exc if isinstance(exc, RedisError) else ConnectionError(f"cannot reach Redis: {exc!r}")
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(error)


def _ssl_context(connection_class: type, kwargs: dict[str, Any]) -> ssl.SSLContext | None:
    """TLS as the redis-py pool would use it (rediss:// URLs), or None."""
    if not issubclass(connection_class, SSLConnection):
        return None
    context = ssl.create_default_context(cafile=kwargs.get("ssl_ca_certs"))
    if kwargs.get("ssl_cert_reqs") in ("none", ssl.CERT_NONE):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
