"""Outbound requests to webhook endpoints, safe against being pointed inwards.

The host is resolved when the connection is made and every address is checked right there; the connection goes to
the checked address (TLS still verifies the endpoint's host name), so a name that resolves to a public address at
registration and to 127.0.0.1 at delivery (DNS rebinding) is refused. Refused unless
SPATIALGEN_WEBHOOK_ALLOW_PRIVATE_TARGETS: loopback, private, link-local, shared, reserved, multicast and
unspecified addresses (IPv4-mapped IPv6 is checked as the IPv4 it carries); the cloud metadata addresses are
refused always. No redirects are followed (httpcore has none), the whole exchange is bounded by the timeout, and
at most RESPONSE_CAP bytes of an answer are read.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Iterable, Mapping
from typing import NamedTuple
from urllib.parse import urlsplit

import httpcore

RESPONSE_CAP = 64 * 1024
"""Bytes of an endpoint's answer read at most (the rest is dropped with the connection)."""
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"),
                                ipaddress.ip_address("100.100.100.200")})  # fmt: skip
"""Cloud instance-metadata services (AWS/GCP/Azure, AWS IPv6, Alibaba): never a target, whatever the setting."""

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class RefusedAddress(OSError):
    """The endpoint's host resolves only to addresses deliveries may not go to."""


def address_allowed(address: Address, *, allow_private: bool) -> bool:
    """Whether a delivery may connect to this address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return False
    if allow_private:
        return not (address.is_multicast or address.is_unspecified)
    return address.is_global and not address.is_multicast


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the address check at connect time (see the module header)."""

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private
        self._inner = httpcore.AnyIOBackend()

    async def resolve(self, host: str, port: int) -> list[str]:
        """The host's addresses, in the resolver's order (an IP literal is itself)."""
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    async def connect_tcp(
        self, host: str, port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None, socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:  # fmt: skip
        """Connect to the first allowed address of the host; refuse when it has none."""
        try:
            found = await self.resolve(host, port)
        except socket.gaierror as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}") from exc
        allowed = [a for a in found if address_allowed(ipaddress.ip_address(a.split("%")[0]),
                                                       allow_private=self.allow_private)]  # fmt: skip
        if not allowed:
            raise RefusedAddress(f"{host} resolves only to addresses deliveries may not reach")
        last: Exception | None = None
        for address in allowed:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self, path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:  # fmt: skip
        """Never: endpoints are URLs."""
        raise RefusedAddress("unix sockets are not webhook targets")

    async def sleep(self, seconds: float) -> None:
        """As the wrapped backend."""
        await self._inner.sleep(seconds)


class Answer(NamedTuple):
    """What an endpoint did with one delivery."""

    status: int | None
    """HTTP status; None when there was no answer (error says why)."""
    headers: dict[str, str]
    latency_ms: int
    error: str | None


class Sender:
    """POSTs deliveries through one connection pool per worker process (keep-alive per endpoint host)."""

    def __init__(self, *, timeout: float, allow_private: bool, max_connections: int = 200) -> None:
        self.timeout = timeout
        self.allow_private = allow_private
        self._pool = httpcore.AsyncConnectionPool(
            network_backend=GuardedBackend(allow_private=allow_private), max_connections=max_connections,
            keepalive_expiry=30.0, retries=0,
        )  # fmt: skip

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> Answer:
        """POST body to url; never raises for what the endpoint or the network does (see Answer)."""
        start = time.perf_counter()
        parts = urlsplit(url)
        if parts.scheme != "https" and not (parts.scheme == "http" and self.allow_private):
            return Answer(None, {}, 0, "refused: only https:// endpoints are allowed")
        sent = [(b"host", parts.netloc.rpartition("@")[2].encode()), (b"content-length", str(len(body)).encode())]
        sent += [(k.encode(), v.encode()) for k, v in headers.items()]
        t = self.timeout
        limits = {"connect": t, "read": t, "write": t, "pool": t}
        try:
            async with asyncio.timeout(t):
                async with self._pool.stream("POST", url, headers=sent, content=body,
                                             extensions={"timeout": limits}) as response:  # fmt: skip
                    read = 0
                    async for chunk in response.aiter_stream():
                        read += len(chunk)
                        if read >= RESPONSE_CAP:
                            break
                    got = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers}
                    return Answer(response.status, got, _ms(start), None)
        except RefusedAddress as exc:
            return Answer(None, {}, _ms(start), f"refused: {exc}")
        except (TimeoutError, httpcore.TimeoutException):
            return Answer(None, {}, _ms(start), f"timeout after {t:g} s")
        except httpcore.ConnectError as exc:
            return Answer(None, {}, _ms(start), f"connection failed: {_short(exc)}")
        except (httpcore.ProtocolError, httpcore.NetworkError, httpcore.UnsupportedProtocol, OSError) as exc:
            return Answer(None, {}, _ms(start), f"{type(exc).__name__}: {_short(exc)}")

    async def aclose(self) -> None:
        """Close the pool's connections."""
        await self._pool.aclose()


def _ms(start: float) -> int:
    return round((time.perf_counter() - start) * 1000)


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__
