"""The one place exceptions become application/problem+json (RFC 9457): domain errors, Litestar's own (unknown
route, wrong method, body over the limit), Redis unavailable (a retryable 503), and anything else (a 500 without
internals, logged).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from app.domain import errors
from app.domain.errors import PROBLEM_JSON, ApiError
from app.http.plumbing import rate_headers, services

log = logging.getLogger("spatialgen.api")
_json = msgspec.json.Encoder()

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
    """Domain errors (with the request's RateLimit headers, once its key was known)."""
    extra = rate_headers(request)
    if extra:
        exc.headers = {**extra, **exc.headers}
    return problem_response(exc, request.url.path)


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """Litestar's own errors (unknown route, wrong method, body over the limit)."""
    spec = _HTTP_STATUS_TO_SPEC.get(exc.status_code)
    if spec is None:
        spec = errors.INTERNAL_ERROR if exc.status_code >= 500 else errors.INVALID_REQUEST
    detail = {
        404: f"No route {request.url.path}.",
        405: f"{request.method} is not allowed on {request.url.path}.",
        413: f"The body is larger than {services(request).settings.api.max_body_bytes} bytes.",
    }.get(exc.status_code, str(exc.detail))
    headers = dict((exc.headers or {}).items())
    return problem_response(errors.ApiError(spec, detail, headers=headers), request.url.path)


def handle_redis_down(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Redis unreachable, restarting, read-only after a failover, out of memory: a retryable 503, never a 500."""
    log.warning("redis unavailable: %r", exc)
    err = errors.DEPENDENCY_UNAVAILABLE("The state store is unavailable; retry shortly.", headers={"Retry-After": "5"})
    return problem_response(err, request.url.path)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Anything else is our bug: log it, answer a problem+json 500 without internals."""
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(errors.INTERNAL_ERROR("An internal error occurred."), request.url.path)
