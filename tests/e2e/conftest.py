"""Shared e2e fixtures for the uploader: a loopback HTTP proxy that can fail requests, and a service stack behind it.

The proxy is plain asyncio in the test process (one request per connection), so tests that use it run the
client in-process or as an asyncio subprocess: a blocking call would stall the proxy too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from app.settings import MIB, Settings
from deploy.local.devstack import api_command, free_port, stop, wait_for_port, worker_command

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Reply:
    """Answer a request without forwarding it (after reading its whole body)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


RESET = "reset"
"""Read half the body, then reset the connection (RST): what a dropped network path looks like."""
FORWARD = "forward"
LOSE_ANSWER = "lose_answer"
"""Forward, then throw the upstream answer away and reply 503: the request took effect, the client cannot know."""
Action = str | Reply


@dataclass
class Seen:
    """One request the proxy handled."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    action: str
    phase: str
    status: int = 0
    """Status storage (or the API) answered, when forwarded; 0 if the client went away first."""

    @property
    def part(self) -> tuple[str, str]:
        """Which part (object path, partNumber; '' for a single PUT) a PUT wrote."""
        return self.path, self.query.get("partNumber", [""])[0]


class LoopbackProxy:
    """An HTTP/1.1 reverse proxy on 127.0.0.1 that forwards to upstream_port unless `decide` says otherwise."""

    def __init__(self, upstream_port: int, decide: Callable[[Seen, int], Action] | None = None) -> None:
        self.upstream_port = upstream_port
        self.decide: Callable[[Seen, int], Action] = decide or (lambda seen, i: FORWARD)
        self.delay = 0.0
        """Seconds to hold each forwarded PUT before sending it on (so a test can kill a client mid-upload)."""
        self.phase = ""
        self.seen: list[Seen] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> LoopbackProxy:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        """http://127.0.0.1:port."""
        return f"http://127.0.0.1:{self.port}"

    def puts(self, phase: str | None = None) -> list[Seen]:
        """The PUTs seen (in one phase)."""
        return [s for s in self.seen if s.method == "PUT" and (phase is None or s.phase == phase)]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away (killed, or it gave up): nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        url = urlsplit(target)
        seen = Seen(method, url.path, parse_qs(url.query), headers, FORWARD, self.phase)
        index = sum(1 for s in self.seen if s.method == method)
        action = self.decide(seen, index)
        seen.action = action if isinstance(action, str) else f"reply {action.status}"
        self.seen.append(seen)
        length = int(headers.get("content-length", "0"))
        if action == RESET:
            await reader.readexactly(length // 2)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        if isinstance(action, Reply):
            await reader.readexactly(length)
            await self._reply(writer, action)
            return
        if method == "PUT" and self.delay:
            await asyncio.sleep(self.delay)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            # One request per connection keeps the relay simple: both sides close after the answer.
            kept = [line for line in lines[1:] if line and not line.lower().startswith(("connection:", "keep-alive:"))]
            up_writer.write(("\r\n".join([lines[0], *kept, "Connection: close"]) + "\r\n\r\n").encode("latin-1"))
            left = length
            while left:
                chunk = await reader.read(min(left, 1 << 20))
                if not chunk:
                    return  # the client died mid-body: upstream gets a short body and a closed connection
                up_writer.write(chunk)
                await up_writer.drain()
                left -= len(chunk)
            answer = await up_reader.read()
            seen.status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
            if action == LOSE_ANSWER:
                await self._reply(writer, Reply(503, {"Retry-After": "0"}))
                return
            writer.write(answer)
            await writer.drain()
        finally:
            up_writer.close()
            with contextlib.suppress(ConnectionError):
                await up_writer.wait_closed()

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, reply: Reply) -> None:
        head = [f"HTTP/1.1 {reply.status} Proxy", f"Content-Length: {len(reply.body)}", "Connection: close"]
        head += [f"{k}: {v}" for k, v in reply.headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body)
        await writer.drain()


@dataclass
class ClientStack:
    """The API and a worker with presigned URLs pointing at a proxy in front of S3."""

    api_url: str
    env: dict[str, str]
    s3_proxy: LoopbackProxy


@pytest.fixture(scope="module")
async def client_stack(settings: Settings) -> AsyncIterator[ClientStack]:
    """API (granian) and worker processes; clients reach storage through `s3_proxy`, workers directly."""
    proxy = await LoopbackProxy(int(settings.storage.endpoint_url.rsplit(":", 1)[1])).start()
    port = free_port()
    env = {
        **os.environ,
        "SPATIALGEN_PORT": str(port),
        "SPATIALGEN_REDIS_URL": settings.redis.url,
        "SPATIALGEN_S3_ENDPOINT_URL": settings.storage.endpoint_url,
        "SPATIALGEN_S3_PUBLIC_ENDPOINT_URL": proxy.url,
        "SPATIALGEN_S3_BUCKET": settings.storage.bucket,
        "SPATIALGEN_S3_ACCESS_KEY_ID": settings.storage.access_key_id,
        "SPATIALGEN_S3_SECRET_ACCESS_KEY": settings.storage.secret_access_key,
        "SPATIALGEN_PART_SIZE_BYTES": str(5 * MIB),
        "SPATIALGEN_KEY_CACHE_SECONDS": "1",
        # GET .../parts lists storage afresh unless its last listing is younger than this: near zero, so a
        # resume right after a kill sees every part storage took (the default 10 s could miss the newest).
        "SPATIALGEN_PARTS_STALENESS_SECONDS": "0.01",
    }
    for name in ("SPATIALGEN_API_URL", "SPATIALGEN_API_KEY", "SPATIALGEN_DATA_DIR"):
        env.pop(name, None)
    Settings.from_env(env)
    procs = await asyncio.to_thread(start_service, env, port)
    try:
        yield ClientStack(f"http://127.0.0.1:{port}", env, proxy)
    finally:
        await asyncio.to_thread(stop, procs)
        await proxy.close()


def start_service(env: dict[str, str], port: int) -> list[subprocess.Popen[bytes]]:
    """Start the API and a worker as `make run` does; returns once the API listens."""
    api = subprocess.Popen(api_command(), env=env, cwd=ROOT)
    worker = subprocess.Popen(worker_command(), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, api)
    except BaseException:
        stop([api, worker])
        raise
    return [api, worker]
