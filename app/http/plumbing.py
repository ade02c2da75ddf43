"""Request plumbing shared by every route: the process's services, headers read off the ASGI scope, the API key
(with its role and rate-limit token), the body, and already-encoded JSON answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any, cast

import msgspec
from litestar import Request
from litestar.exceptions import InternalServerException
from litestar.types import ASGIApp
from redis.asyncio import Redis

from app.domain import errors
from app.domain.limits import Charge, RouteClass
from app.http import metrics
from app.http.encoding import Gzip
from app.http.health import ReadinessProbe
from app.settings import Settings
from app.state.apikeys import KeyCache, Principal, Role
from app.state.webhooks import WebhookStore
from app.uploads.service import UploadService

log = logging.getLogger("spatialgen.api")
APPKEY_HEADER = b"x-spatialgen-appkey"
JSON = "application/json"
CHARGE = "spatialgen.charge"
"""Scope key of this request's Charge: what it spent from its key's bucket, whose RateLimit headers are added to
whatever the request is answered (a create's token is taken by its own script and answered by its route)."""


class Services(msgspec.Struct):
    """What the handlers need, built once per process in the lifespan."""

    settings: Settings
    redis: Redis
    keys: KeyCache
    uploads: UploadService
    probe: ReadinessProbe
    webhooks: WebhookStore


def services(request: Request[Any, Any, Any]) -> Services:
    """The process-wide services (set up by the lifespan)."""
    svc: Services = request.app.state.services
    return svc


def registry(request: Request[Any, Any, Any]) -> metrics.ApiMetrics:
    """This process's metrics (created with the app)."""
    reg: metrics.ApiMetrics = request.app.state.metrics
    return reg


def header(request: Request[Any, Any, Any], name: bytes) -> str | None:
    """One request header by its lowercase name, read straight from the ASGI scope (first occurrence).

    The hot path reads three or four headers; building Litestar's case-insensitive multidict of all of
    them costs more than these few scans.
    """
    for key, value in request.scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def authenticate(
    request: Request[Any, Any, Any], allowed: frozenset[Role], route_class: RouteClass | None = None
) -> Principal:
    """Resolve the API key header, check its role and take the request's token from the key's bucket.

    route_class None: the route's own script takes the token (create), in the same round trip.
    """
    svc = services(request)
    principal = await svc.keys.resolve(header(request, APPKEY_HEADER))
    if principal.role not in allowed:
        raise errors.ROLE_NOT_ALLOWED(
            f"Keys with role {principal.role.value} may not call {request.method} {request.url.path}."
        )
    if route_class is not None:
        charge = Charge(route_class)
        request.scope[CHARGE] = charge  # type: ignore[literal-required]
        await svc.uploads.charge(principal, charge, 1)
    return principal


def request_charge(request: Request[Any, Any, Any]) -> Charge | None:
    """This request's Charge, for a step that takes the rest of its cost once its work is known."""
    return cast(Charge | None, request.scope.get(CHARGE))


def rate_headers(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The RateLimit headers of this request (none before its key is known)."""
    charge = request_charge(request)
    return charge.headers() if charge is not None else {}


async def read_body(request: Request[Any, Any, Any]) -> bytes:
    """The raw body, after checking its declared type (JSON in UTF-8, not compressed, or none)."""
    ctype = header(request, b"content-type") or ""
    media, _, params = ctype.partition(";")
    if ctype and not media.strip().lower().endswith(("/json", "+json")):
        raise errors.UNSUPPORTED_MEDIA_TYPE(f"Send the body as application/json, not {ctype[:60]!r}.")
    charset = params.strip().lower().removeprefix("charset=").strip('" ') if "charset" in params.lower() else ""
    if charset not in ("", "utf-8", "utf8"):
        raise errors.UNSUPPORTED_MEDIA_TYPE(f"Send JSON in UTF-8, not {charset[:30]!r}.")
    encoding = (header(request, b"content-encoding") or "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise errors.UNSUPPORTED_MEDIA_TYPE(f"Content-Encoding {encoding[:30]!r} is not accepted; send plain JSON.")
    timeout = services(request).settings.api.body_timeout_seconds
    try:
        async with asyncio.timeout(timeout):
            return await request.body()
    except TimeoutError:
        raise errors.BODY_TIMEOUT(f"The body did not arrive within {timeout:g} s.") from None
    except InternalServerException:  # Litestar's "client disconnected prematurely": the body is incomplete
        raise errors.BODY_INCOMPLETE("The connection closed before the whole body arrived.") from None


class JsonAnswer:
    """An ASGI app sending one already-encoded JSON body: what the API's handlers return.

    Handlers annotated `-> ASGIApp` skip Litestar's Response-to-ASGI conversion (and this skips even its
    ASGIResponse's header processing), which together cost as much CPU as our own validation on the create
    hot path; the OpenAPI responses are declared explicitly on each route.
    """

    __slots__ = ("body", "headers", "status")

    def __init__(self, body: bytes, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.body = body
        self.status = status
        self.headers = headers

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


SEND_BYTES = 16 * 1024
"""Bytes per send of a streamed answer: the server buffers a few dozen sends at most (granian >= 2.8 waits for the
client beyond that), so a stalled reader holds ~0.5 MB of buffers plus the piece being sent."""
STREAM_DEADLINE_SECONDS = 120.0
"""A streamed answer not read within this is dropped (its connection closed): a 10,000-URL answer is ~7 MB, so a
client reading under ~60 KB/s gets a shorter selection to ask for, not a slot held forever."""


class StreamedJson:
    """An ASGI app sending a JSON object whose last member is a large array made while it is sent: `head` (the
    object up to the array's `[`), the elements of each piece (each piece a JSON array), then `tail`; gzip-coded
    piece by piece when `gzip` is set. `done` runs when the answer ends, however it ends."""

    __slots__ = ("done", "gzip", "head", "headers", "pieces", "tail")

    def __init__(
        self, head: bytes, pieces: AsyncGenerator[bytes], tail: bytes, headers: list[tuple[bytes, bytes]],
        done: Callable[[], None], *, gzip: bool = False,
    ) -> None:  # fmt: skip
        self.head, self.pieces, self.tail, self.headers, self.done = head, pieces, tail, headers, done
        self.gzip = gzip

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        coder = Gzip() if self.gzip else None
        try:
            async with contextlib.aclosing(self.pieces), asyncio.timeout(STREAM_DEADLINE_SECONDS):
                await send({"type": "http.response.start", "status": 200, "headers": self.headers})
                await _send_body(send, self.head, coder)
                first = True
                async for piece in self.pieces:
                    items = piece.strip()[1:-1]  # the elements of one JSON array
                    if not items:
                        continue
                    await _send_body(send, items if first else b"," + items, coder)
                    first = False
                tail = self.tail if coder is None else coder.end(self.tail)
                await send({"type": "http.response.body", "body": tail, "more_body": False})
        finally:
            self.done()


async def _send_body(send: Any, data: bytes, coder: Gzip | None) -> None:
    """Send one piece of a streamed answer (compressed and flushed first when gzip-coded), SEND_BYTES at a time."""
    if coder is not None:
        data = await coder.piece(data)
    for at in range(0, len(data), SEND_BYTES):
        await send({"type": "http.response.body", "body": data[at : at + SEND_BYTES], "more_body": True})


def streamed_json(
    head: bytes, pieces: AsyncGenerator[bytes], tail: bytes, headers: dict[str, str], done: Callable[[], None],
    *, content_type: str = JSON, gzip: bool = False,
) -> ASGIApp:  # fmt: skip
    """A StreamedJson answer with these headers (no Content-Length: it is sent chunked)."""
    raw = [(b"content-type", content_type.encode("latin-1"))]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    return StreamedJson(head, pieces, tail, raw, done, gzip=gzip)


def json_response(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None, *, content_type: str = JSON
) -> ASGIApp:
    """A response carrying already-encoded JSON, handed to the server as is."""
    raw = [(b"content-type", content_type.encode("latin-1")), (b"content-length", b"%d" % len(body))]
    if headers:
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    return JsonAnswer(body, status, raw)
