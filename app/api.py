"""The HTTP layer: the Litestar app, its routes, and the one place errors become problem+json.

Handlers authenticate, read the body and call the upload service; nothing here builds Redis keys or talks to S3.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import redis.exceptions
from litestar import Litestar, Request, Response, delete, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath
from redis.asyncio import Redis

from app import errors
from app.apikeys import READ_ROLES, WRITE_ROLES, KeyCache, Principal, Role
from app.errors import PROBLEM_JSON, ApiError
from app.settings import Settings
from app.state import UploadState
from app.uploads import UploadService

log = logging.getLogger("spatialgen.api")
APPKEY_HEADER = "x-spatialgen-appkey"
JSON = "application/json"
_json = msgspec.json.Encoder()


class Services(msgspec.Struct):
    """What the handlers need, built once per process in the lifespan."""

    settings: Settings
    redis: Redis
    keys: KeyCache
    uploads: UploadService


def services(request: Request[Any, Any, Any]) -> Services:
    """The process-wide services (set up by the lifespan)."""
    svc: Services = request.app.state.services
    return svc


async def authenticate(request: Request[Any, Any, Any], allowed: frozenset[Role]) -> Principal:
    """Resolve the API key header and check its role."""
    principal = await services(request).keys.resolve(request.headers.get(APPKEY_HEADER))
    if principal.role not in allowed:
        raise errors.ROLE_NOT_ALLOWED(
            f"Keys with role {principal.role.value} may not call {request.method} {request.url.path}."
        )
    return principal


async def read_body(request: Request[Any, Any, Any]) -> bytes:
    """The raw body, after checking its declared type (JSON or none)."""
    ctype = request.headers.get("content-type", "")
    if ctype and not ctype.split(";", 1)[0].strip().lower().endswith(("/json", "+json")):
        raise errors.UNSUPPORTED_MEDIA_TYPE(f"Send the body as application/json, not {ctype[:60]!r}.")
    return await request.body()


def json_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response[bytes]:
    """A response carrying already-encoded JSON."""
    return Response(content=body, status_code=status, media_type=JSON, headers=headers)


@post("/api/videos/uploads", status_code=201)
async def start_upload_group(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Start Upload Group (SPEC 3.1)."""
    principal = await authenticate(request, WRITE_ROLES)
    body = await read_body(request)
    created = await services(request).uploads.start_upload_group(
        principal, body, request.headers.get("idempotency-key")
    )
    headers = {"Location": f"/api/videos/uploads/{created.session_id}"}
    if created.replayed:
        headers["Idempotent-Replayed"] = "true"
    return json_response(created.body, 201, headers)


FILE_PATH = "/api/videos/uploads/{session_id:str}/files/{upload_id:str}"


@post(f"{FILE_PATH}/part-urls", status_code=200)
async def get_part_urls(
    request: Request[Any, Any, Any], session_id: FromPath[str], upload_id: FromPath[str]
) -> Response[bytes]:
    """Get Part URLs (SPEC 3.2)."""
    principal = await authenticate(request, WRITE_ROLES)
    body = await read_body(request)
    view = await services(request).uploads.sign_part_urls(principal, session_id, upload_id, body)
    return json_response(_json.encode(view))


@post(f"{FILE_PATH}/complete", status_code=200)
async def complete_file_upload(
    request: Request[Any, Any, Any], session_id: FromPath[str], upload_id: FromPath[str]
) -> Response[bytes]:
    """Complete File Upload (SPEC 3.3): 200 when done, 202 while a worker is still completing it."""
    principal = await authenticate(request, WRITE_ROLES)
    body = await read_body(request)
    status, view = await services(request).uploads.complete_file(principal, session_id, upload_id, body)
    return json_response(_json.encode(view), status)


@delete("/api/videos/uploads/{session_id:str}", status_code=200)
async def cancel_upload_group(request: Request[Any, Any, Any], session_id: FromPath[str]) -> Response[bytes]:
    """Cancel Upload Group (SPEC 3.4)."""
    principal = await authenticate(request, WRITE_ROLES)
    view = await services(request).uploads.cancel_group(principal, session_id)
    return json_response(_json.encode(view))


@get("/api/videos/uploads/{session_id:str}")
async def get_upload_group(request: Request[Any, Any, Any], session_id: FromPath[str]) -> Response[bytes]:
    """The group with every file's status and upload progress (SPEC 3.5); readonly keys too."""
    principal = await authenticate(request, READ_ROLES)
    view = await services(request).uploads.group_status(principal, session_id)
    return json_response(_json.encode(view))


@get(f"{FILE_PATH}/parts")
async def get_received_parts(
    request: Request[Any, Any, Any], session_id: FromPath[str], upload_id: FromPath[str]
) -> Response[bytes]:
    """Parts storage has received for a file, to resume without kept ETags (SPEC 3.5)."""
    principal = await authenticate(request, READ_ROLES)
    view = await services(request).uploads.received_parts(principal, session_id, upload_id)
    return json_response(_json.encode(view))


@get("/health/live")
async def health_live() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


# ---------------------------------------------------------------------------------------------
# Errors: the single mapping from exceptions to problem+json.
# ---------------------------------------------------------------------------------------------
_HTTP_STATUS_TO_SPEC = {
    400: errors.INVALID_REQUEST,
    401: errors.INVALID_API_KEY,
    403: errors.ROLE_NOT_ALLOWED,
    404: errors.NOT_FOUND,
    405: errors.METHOD_NOT_ALLOWED,
    413: errors.BODY_TOO_LARGE,
    415: errors.UNSUPPORTED_MEDIA_TYPE,
    429: errors.RATE_LIMITED,
}


def problem_response(exc: ApiError, path: str) -> Response[bytes]:
    """Render an ApiError as application/problem+json."""
    return Response(
        content=_json.encode(exc.problem(path)),
        status_code=exc.status,
        media_type=PROBLEM_JSON,
        headers=exc.headers,
    )


def handle_api_error(request: Request[Any, Any, Any], exc: ApiError) -> Response[bytes]:
    """Domain errors."""
    return problem_response(exc, request.url.path)


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """Litestar's own errors (unknown route, wrong method, body over the limit)."""
    spec = _HTTP_STATUS_TO_SPEC.get(exc.status_code)
    if spec is None:
        spec = errors.INTERNAL if exc.status_code >= 500 else errors.INVALID_REQUEST
    detail = {
        404: f"No route {request.url.path}.",
        405: f"{request.method} is not allowed on {request.url.path}.",
        413: f"The body is larger than {services(request).settings.max_body_bytes} bytes.",
    }.get(exc.status_code, str(exc.detail))
    headers = dict((exc.headers or {}).items())
    return problem_response(errors.ApiError(spec, detail, headers=headers), request.url.path)


def handle_redis_down(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Redis unreachable: a retryable 503, never a 500."""
    log.warning("redis unavailable: %s", exc)
    err = errors.DEPENDENCY_DOWN("The state store is unavailable; retry shortly.", headers={"Retry-After": "5"})
    return problem_response(err, request.url.path)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Anything else is our bug: log it, answer a problem+json 500 without internals."""
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(errors.INTERNAL("An internal error occurred."), request.url.path)


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Create the process-wide clients and services, and close them afterwards."""
    redis_client = Redis.from_url(
        settings.redis_url, socket_timeout=5, socket_connect_timeout=3, health_check_interval=30
    )
    try:
        yield Services(
            settings=settings,
            redis=redis_client,
            keys=KeyCache(redis_client, settings.key_cache_seconds),
            uploads=UploadService(settings, UploadState(redis_client)),
        )
    finally:
        await redis_client.aclose()


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the ASGI app for these settings (read from the environment by default)."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_services(settings) as svc:
            app.state.services = svc
            yield

    return Litestar(
        route_handlers=[
            start_upload_group,
            get_part_urls,
            complete_file_upload,
            cancel_upload_group,
            get_upload_group,
            get_received_parts,
            health_live,
        ],
        lifespan=[lifespan],
        request_max_body_size=settings.max_body_bytes,
        exception_handlers={
            ApiError: handle_api_error,
            HTTPException: handle_http_exception,
            redis.exceptions.ConnectionError: handle_redis_down,
            redis.exceptions.TimeoutError: handle_redis_down,
            Exception: handle_unexpected,
        },
    )
