"""The HTTP layer: the Litestar app, its routes, and the one place errors become problem+json.

Handlers authenticate, read the body and call the upload service; nothing here builds Redis keys or talks to S3.
Operations endpoints (health, metrics) live here too; the OpenAPI declarations are in app/openapi_docs.py.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, cast

import msgspec
from litestar import Litestar, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, InternalServerException
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import RedocRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import (
    Components,
    Example,
    SecurityScheme,
    Tag,
)
from litestar.params import FromPath
from litestar.types import ASGIApp
from redis.asyncio import Redis

from app import errors, metrics
from app.apikeys import READ_ROLES, WRITE_ROLES, KeyCache, Principal, Role
from app.errors import PROBLEM_JSON, ApiError
from app.health import CHECK_TIMEOUT_SECONDS, OK, ReadinessProbe
from app.limits import RouteClass
from app.models import (
    CanceledGroupView,
    CompletedFileView,
    GroupStatusView,
    PartUrlsView,
    ReceivedPartsView,
    UploadGroupCreated,
)
from app.openapi_docs import (
    API_DESCRIPTION,
    API_KEY_SCHEME,
    API_TITLE,
    AUTH,
    BODY_ERRORS,
    COMPLETE_BODY,
    CREATED_HEADERS,
    CREATED_LINKS,
    EX_FILE_PATH,
    EX_GROUP_PATH,
    GROUP_GONE,
    IDEMPOTENCY_KEY,
    OPS_TAG,
    PART_URLS_BODY,
    SECURED,
    START_BODY,
    UPLOADS_TAG,
    WRITE_AUTH,
    ApiOperation,
    Liveness,
    NotReadyProblem,
    Readiness,
    api_version,
    operation,
    problems,
    success,
)
from app.settings import Settings
from app.state import UploadState
from app.state.connection import redis_client as redis_client_for
from app.state.pipeline import REDIS_UNAVAILABLE
from app.storage.credentials import CredentialSource, NoStorageCredentials, StorageCredentialsError
from app.storage.lazy import LazyObjectStore
from app.storage.signer import Signer
from app.timefmt import now_ms
from app.uploads import UploadService

log = logging.getLogger("spatialgen.api")
APPKEY_HEADER = b"x-spatialgen-appkey"
JSON = "application/json"
_json = msgspec.json.Encoder()


class Services(msgspec.Struct):
    """What the handlers need, built once per process in the lifespan."""

    settings: Settings
    redis: Redis
    keys: KeyCache
    uploads: UploadService
    probe: ReadinessProbe


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


RATE_HEADERS = "spatialgen.ratelimit"
"""Scope key of the RateLimit headers of this request's bucket, added to whatever the request is answered."""


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
        try:
            rate = await svc.uploads.take_token(principal, route_class)
        except ApiError as exc:
            request.scope[RATE_HEADERS] = exc.headers  # type: ignore[literal-required]
            raise
        request.scope[RATE_HEADERS] = rate.headers(route_class)  # type: ignore[literal-required]
    return principal


def rate_headers(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The RateLimit headers of this request (none before its key is known)."""
    found = cast(dict[str, str] | None, request.scope.get(RATE_HEADERS))
    return found or {}


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
    timeout = services(request).settings.body_timeout_seconds
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


def json_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> ASGIApp:
    """A response carrying already-encoded JSON, handed to the server as is."""
    raw = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if headers:
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    return JsonAnswer(body, status, raw)


# ---------------------------------------------------------------------------------------------
# Routes.
# ---------------------------------------------------------------------------------------------
@post(
    "/api/videos/uploads", status_code=201, tags=[UPLOADS_TAG], security=SECURED, operation_id="startUploadGroup",
    summary="Start Upload Group",
    description="Validate the asset set, plan every file's parts and register the group; storage is prepared in the "
    "background. Roles: admin, upload.",
    operation_class=operation(body=START_BODY, success_headers=CREATED_HEADERS, header_params=[IDEMPOTENCY_KEY],
                              success_links=CREATED_LINKS),
    responses={
        201: success(UploadGroupCreated, "The group was created (or replayed for its Idempotency-Key).", "created"),
        **problems("/api/videos/uploads", *BODY_ERRORS, errors.INVALID_HEADER, *WRITE_AUTH,
                   errors.IDEMPOTENCY_KEY_REUSED, errors.DEPENDENCY_DOWN),
    },
)  # fmt: skip
async def start_upload_group(request: Request[Any, Any, Any]) -> ASGIApp:
    """Start Upload Group (SPEC 3.1)."""
    principal = await authenticate(request, WRITE_ROLES)
    body = await read_body(request)
    created = await services(request).uploads.start_upload_group(principal, body, header(request, b"idempotency-key"))
    headers = {"Location": f"/api/videos/uploads/{created.session_id}"}
    if created.rate is not None:
        headers |= created.rate.headers(RouteClass.CREATE)
    if created.replayed:
        headers["Idempotent-Replayed"] = "true"
    else:
        registry(request).groups_created.inc()
    return json_response(created.body, 201, headers)


FILE_PATH = "/api/videos/uploads/{session_id:str}/files/{upload_id:str}"


@post(
    f"{FILE_PATH}/part-urls", status_code=200, tags=[UPLOADS_TAG], security=SECURED, operation_id="getPartUrls",
    summary="Get Part URLs",
    description="Presigned `PUT` URLs for the selected parts of a file (a single_put file gets one URL for the whole "
    "file). Send each part's bytes [byteStart, byteEnd) to its URL before expiresAt and keep the ETag header storage "
    "answers. May be called again at any time for fresh URLs. Roles: admin, upload.",
    operation_class=operation(body=PART_URLS_BODY),
    responses={
        200: success(PartUrlsView, "The file and its presigned part URLs.", "part-urls"),
        **problems(f"{EX_FILE_PATH}/part-urls", *BODY_ERRORS, *WRITE_AUTH, errors.SESSION_NOT_FOUND,
                    errors.FILE_NOT_FOUND, *GROUP_GONE, errors.FILE_COMPLETED, errors.FILE_COMPLETING,
                    errors.FILE_FAILED, errors.NOT_PROVISIONED, errors.DEPENDENCY_DOWN),
    },
)  # fmt: skip
async def get_part_urls(
    request: Request[Any, Any, Any], session_id: FromPath[str], upload_id: FromPath[str]
) -> ASGIApp:
    """Get Part URLs (SPEC 3.2)."""
    principal = await authenticate(request, WRITE_ROLES, RouteClass.PART_URLS)
    body = await read_body(request)
    view = await services(request).uploads.sign_part_urls(principal, session_id, upload_id, body)
    return json_response(_json.encode(view), headers=rate_headers(request))


@post(
    f"{FILE_PATH}/complete", status_code=200, tags=[UPLOADS_TAG], security=SECURED, operation_id="completeFileUpload",
    summary="Complete File Upload",
    description="Assemble the file from its parts and verify it. 200 when it is completed (with the group's libraryId "
    "once every file is); 202 while a worker is still completing it: call again to follow up. Roles: admin, upload.",
    operation_class=operation(body=COMPLETE_BODY),
    responses={
        200: success(CompletedFileView, "The file is completed.", "completed", "group-completed"),
        202: success(CompletedFileView, "Still being completed; repeat the call.", "completing"),
        **problems(f"{EX_FILE_PATH}/complete", *BODY_ERRORS, *WRITE_AUTH, errors.SESSION_NOT_FOUND,
                   errors.FILE_NOT_FOUND, *GROUP_GONE, errors.FILE_FAILED, errors.MISSING_PARTS,
                   errors.FILE_NOT_PROVISIONED, errors.DEPENDENCY_DOWN),
    },
)  # fmt: skip
async def complete_file_upload(
    request: Request[Any, Any, Any], session_id: FromPath[str], upload_id: FromPath[str]
) -> ASGIApp:
    """Complete File Upload (SPEC 3.3): 200 when done, 202 while a worker is still completing it."""
    principal = await authenticate(request, WRITE_ROLES, RouteClass.COMPLETE)
    body = await read_body(request)
    try:
        status, view = await services(request).uploads.complete_file(principal, session_id, upload_id, body)
    except ApiError as exc:
        registry(request).count_completion(exc.spec.code)
        raise
    registry(request).count_completion("completed" if status == 200 else "accepted")
    return json_response(_json.encode(view), status, rate_headers(request))


@delete(
    "/api/videos/uploads/{session_id:str}", status_code=200, tags=[UPLOADS_TAG], security=SECURED,
    operation_id="cancelUploadGroup", summary="Cancel Upload Group",
    description="Cancel the group: its unfinished files become canceled and their storage is purged. Repeating the "
    "call returns the same answer. Roles: admin, upload.",
    operation_class=ApiOperation,
    responses={
        200: success(CanceledGroupView, "The group is canceled.", "canceled"),
        **problems(EX_GROUP_PATH, *WRITE_AUTH, errors.SESSION_NOT_FOUND, errors.SESSION_COMPLETED,
                    errors.SESSION_EXPIRED, errors.SESSION_FAILED, errors.DEPENDENCY_DOWN, method="DELETE"),
    },
)  # fmt: skip
async def cancel_upload_group(request: Request[Any, Any, Any], session_id: FromPath[str]) -> ASGIApp:
    """Cancel Upload Group (SPEC 3.4)."""
    principal = await authenticate(request, WRITE_ROLES, RouteClass.COMPLETE)
    asked_at = now_ms()
    view = await services(request).uploads.cancel_group(principal, session_id)
    if _epoch_ms(view.canceled_at) >= asked_at:  # canceled by this call, not a repeat answering the first cancel
        registry(request).groups_canceled.inc()
    return json_response(_json.encode(view), headers=rate_headers(request))


_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00Z")


def _epoch_ms(iso: str) -> int:
    return (datetime.fromisoformat(iso) - _EPOCH) // timedelta(milliseconds=1)


@get(
    "/api/videos/uploads/{session_id:str}", tags=[UPLOADS_TAG], security=SECURED, operation_id="getUploadGroup",
    summary="Get Upload Group",
    description="The group with every file's status and upload progress (parts and bytes storage has received). "
    "All roles.",
    operation_class=ApiOperation,
    responses={
        200: success(GroupStatusView, "The group.", "group"),
        **problems(EX_GROUP_PATH, *AUTH, errors.SESSION_NOT_FOUND, errors.DEPENDENCY_DOWN),
    },
)  # fmt: skip
async def get_upload_group(request: Request[Any, Any, Any], session_id: FromPath[str]) -> ASGIApp:
    """The group with every file's status and upload progress (SPEC 3.5); readonly keys too."""
    principal = await authenticate(request, READ_ROLES, RouteClass.READS)
    view = await services(request).uploads.group_status(principal, session_id)
    return json_response(_json.encode(view), headers=rate_headers(request))


@get(
    f"{FILE_PATH}/parts", tags=[UPLOADS_TAG], security=SECURED, operation_id="getReceivedParts",
    summary="Get Received Parts",
    description="The parts storage holds for a file, with their ETags, to resume an upload without kept ETags. "
    "All roles.",
    operation_class=ApiOperation,
    responses={
        200: success(ReceivedPartsView, "The parts storage has received.", "parts"),
        **problems(f"{EX_FILE_PATH}/parts", *AUTH, errors.SESSION_NOT_FOUND, errors.FILE_NOT_FOUND,
                    errors.DEPENDENCY_DOWN),
    },
)  # fmt: skip
async def get_received_parts(
    request: Request[Any, Any, Any], session_id: FromPath[str], upload_id: FromPath[str]
) -> ASGIApp:
    """Parts storage has received for a file, to resume without kept ETags (SPEC 3.5)."""
    principal = await authenticate(request, READ_ROLES, RouteClass.READS)
    view = await services(request).uploads.received_parts(principal, session_id, upload_id)
    return json_response(_json.encode(view), headers=rate_headers(request))


# ---------------------------------------------------------------------------------------------
# Operations: health and metrics (no API key).
# ---------------------------------------------------------------------------------------------
_NOT_READY_EXAMPLE = errors.DEPENDENCY_DOWN(
    "Not ready: redis timeout.", extra={"checks": {"redis": "timeout", "storage": "ok", "evictionPolicy": "unknown"}}
).problem("/health/ready")


def _metrics_example() -> str:
    """What /metrics shows after two requests, rendered by the real exposition code."""
    reg = metrics.ApiMetrics()
    reg.observe("/api/videos/uploads", "POST", 201, 0.0123)
    reg.observe("/api/videos/uploads/{session_id}", "GET", 200, 0.0031)
    reg.groups_created.inc()
    shared = metrics.SharedCounts(
        {"arq:queue": (2, 1), "spatialgen:processing": (0, 0)}, live=1, completed=41,
        counters={metrics.F_GROUPS_EXPIRED: 3, metrics.job_field("complete_file", "ok"): 5},
    )  # fmt: skip
    body, _ = reg.render(shared)
    # Only the service's own families: process_* figures differ on every machine.
    return "\n".join(line for line in body.decode().splitlines() if "process_" not in line) + "\n"


_METRICS_EXAMPLE = _metrics_example()


@get(
    "/health/live", tags=[OPS_TAG], operation_id="healthLive", summary="Liveness",
    description="The process is up and serving requests (checks nothing else).", operation_class=ApiOperation,
    responses={200: ResponseSpec(Liveness, description="Alive.", generate_examples=False,
                                 examples=[Example(id="alive", value={"status": "ok"})])},
)  # fmt: skip
async def health_live() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@get(
    "/health/ready", tags=[OPS_TAG], operation_id="healthReady", summary="Readiness",
    description="Ready when Redis answers (PING). Storage (HeadBucket) and Redis's eviction policy (must be "
    "`noeviction`) are reported but do not decide: an S3 outage must not pull every API process out of rotation "
    "(creates, status and cancel never touch S3). Checks run at once, each for at most 0.8 s; one result answers "
    "every probe for up to a second.",
    operation_class=ApiOperation,
    responses={
        200: ResponseSpec(Readiness, description="Ready (storage may still report trouble).", generate_examples=False,
                          examples=[Example(id="ready", value={"status": "ready", "checks": {
                              "redis": "ok", "storage": "ok", "evictionPolicy": "ok"}})]),
        503: ResponseSpec(NotReadyProblem, description="Redis failed: `dependency_unavailable`, with every "
                          "check's result (ok, timeout, starting, or error: <kind>).", media_type=PROBLEM_JSON,
                          generate_examples=False, examples=[Example(id="not-ready", value=_NOT_READY_EXAMPLE)]),
    },
)  # fmt: skip
async def health_ready(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Ready when Redis answers in time; storage and the eviction policy are reported."""
    result = await services(request).probe.check()
    checks = result.checks
    if result.ready:
        return Response(content=_json.encode({"status": "ready", "checks": checks}), media_type=JSON)
    failed = ", ".join(f"{name} {outcome}" for name, outcome in checks.items() if outcome != OK)
    err = errors.DEPENDENCY_DOWN(f"Not ready: {failed}.", headers={"Retry-After": "5"}, extra={"checks": checks})
    return problem_response(err, request.url.path)


@get(
    "/metrics", tags=[OPS_TAG], operation_id="metrics", summary="Prometheus metrics",
    media_type=metrics.CONTENT_TYPE, operation_class=ApiOperation,
    description="Prometheus text format (OpenMetrics when the Accept header asks for it). Requests by route template, "
    "method and status, latency histograms and process_* figures count this process; queue depths, "
    "live/completed/expired groups and job outcomes are read from Redis (all processes).",
    responses={200: ResponseSpec(str, description="Metrics in Prometheus text format 0.0.4.",
                                 media_type=f"{metrics.CONTENT_TYPE}; charset=utf-8", generate_examples=False,
                                 examples=[Example(id="excerpt", value=_METRICS_EXAMPLE)])},
)  # fmt: skip
async def metrics_endpoint(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The exposition document."""
    svc = services(request)
    shared = await metrics.read_shared(svc.redis, svc.settings)
    body, content_type = registry(request).render(shared, request.headers.get("accept", ""))
    # Litestar appends the charset to text/* types itself.
    media_type = content_type.replace("; charset=utf-8", "") if content_type.startswith("text/") else content_type
    return Response(content=body, media_type=media_type)


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
    """Domain errors (with the request's RateLimit headers, once its key was known)."""
    extra = rate_headers(request)
    if extra:
        exc.headers = {**extra, **exc.headers}
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
    """Redis unreachable, restarting, read-only after a failover, out of memory: a retryable 503, never a 500."""
    log.warning("redis unavailable: %r", exc)
    err = errors.DEPENDENCY_DOWN("The state store is unavailable; retry shortly.", headers={"Retry-After": "5"})
    return problem_response(err, request.url.path)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Anything else is our bug: log it, answer a problem+json 500 without internals."""
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(errors.INTERNAL("An internal error occurred."), request.url.path)


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Create the process-wide clients and services, and close them afterwards."""
    redis_client = redis_client_for(settings, socket_timeout=5, socket_connect_timeout=3, health_check_interval=30)
    storage = LazyObjectStore(settings, timeout=CHECK_TIMEOUT_SECONDS)
    probe = ReadinessProbe(redis_client, storage)
    state = UploadState(redis_client, write_replicas=settings.redis_write_replicas)
    try:
        await state.load_scripts()  # a broken script stops the process here, not on its first call
    except REDIS_UNAVAILABLE as exc:
        log.warning("Redis unreachable at startup (%r); scripts load on first use", exc)
    signer = Signer.from_settings(settings)
    uploads = UploadService(settings, state, signer, storage)
    try:
        yield Services(
            settings=settings,
            redis=redis_client,
            keys=KeyCache(redis_client, settings.key_cache_seconds),
            uploads=uploads,
            probe=probe,
        )
    finally:
        try:
            signer.close()
            await signer.credentials.aclose()
            state.close()
            await storage.aclose()
        finally:
            await redis_client.aclose()


async def check_credentials(credentials: CredentialSource) -> None:
    """Stop the process at start when the provider chain has no S3 credentials at all (a configuration
    error); a failure to fetch them (STS or the metadata service down) is logged, and part-urls answers 503
    until they can be fetched."""
    if not credentials.from_chain:
        return
    try:
        await credentials.current()
    except NoStorageCredentials:
        raise
    except StorageCredentialsError as exc:
        log.warning("S3 credentials unavailable at start: %s", exc)


def openapi_config() -> OpenAPIConfig:
    """The OpenAPI document's metadata and the docs UIs: Swagger UI at /schema, ReDoc at /schema/redoc."""
    return OpenAPIConfig(
        title=API_TITLE,
        version=api_version(),
        description=API_DESCRIPTION,
        path="/schema",
        render_plugins=[SwaggerRenderPlugin(), RedocRenderPlugin()],
        components=Components(
            security_schemes={
                API_KEY_SCHEME: SecurityScheme(
                    type="apiKey",
                    name="X-SPATIALGEN-APPKEY",
                    security_scheme_in="header",
                    description="API key (`sgk_…`) created with `spatialgen-admin keys create`.",
                )
            }
        ),
        tags=[
            Tag(name=UPLOADS_TAG, description="Upload groups and their files."),
            Tag(name=OPS_TAG, description="Health probes and metrics (no API key)."),
        ],
    )


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the ASGI app for these settings (read from the environment by default)."""
    settings = settings or Settings.from_env()
    process_metrics = metrics.ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_services(settings) as svc:
            app.state.services = svc
            svc.probe.storage.warm()
            svc.uploads.signer.start()
            await check_credentials(svc.uploads.signer.credentials)
            # Everything built so far lives as long as the process: keep it out of the garbage collector's
            # full passes, which otherwise rescan the whole app (routes, models, OpenAPI) every few thousand
            # requests.
            gc.collect()
            gc.freeze()
            yield

    app = Litestar(
        route_handlers=[
            start_upload_group,
            get_part_urls,
            complete_file_upload,
            cancel_upload_group,
            get_upload_group,
            get_received_parts,
            health_live,
            health_ready,
            metrics_endpoint,
        ],
        lifespan=[lifespan],
        request_max_body_size=settings.max_body_bytes,
        exception_handlers={
            ApiError: handle_api_error,
            HTTPException: handle_http_exception,
            **dict.fromkeys(REDIS_UNAVAILABLE, handle_redis_down),
            Exception: handle_unexpected,
        },
        openapi_config=openapi_config(),
        state=State({"metrics": process_metrics}),
    )
    # Outermost, around the router: unmatched routes (404/405) are counted too, and no per-route middleware stack
    # (with its extra exception-handler layer) is added to the hot path.
    app.asgi_handler = metrics.MetricsMiddleware(app.asgi_handler, process_metrics)
    return app
