"""The app factory: the Litestar app with its routes, the one exception mapping, OpenAPI, and the process-wide
services opened in its lifespan (Redis, the key cache, the upload service, the readiness probe).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

from litestar import Litestar, Response, route
from litestar.datastructures import State
from litestar.enums import HttpMethod
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.types import ExceptionHandlersMap, Scope

from app.domain.clock import SYSTEM_CLOCK, Clock
from app.domain.errors import ApiError
from app.http import metrics
from app.http.health import CHECK_TIMEOUT_SECONDS, ReadinessProbe
from app.http.openapi import docs_asset_routers, openapi_config
from app.http.ops import OPS_ROUTES
from app.http.ops_port import serve_ops_port
from app.http.plumbing import Services
from app.http.problems import handle_api_error, handle_http_exception, handle_redis_down, handle_unexpected
from app.http.routes import UPLOAD_ROUTES
from app.http.webhook_openapi import with_webhooks
from app.http.webhook_routes import WEBHOOK_ROUTES
from app.settings import Settings
from app.state import UploadState
from app.state.apikeys import KeyCache
from app.state.connection import redis_client
from app.state.pipeline import REDIS_UNAVAILABLE
from app.state.settled import Settled
from app.state.webhooks import WebhookStore
from app.storage.credentials import CredentialSource, NoStorageCredentials, StorageCredentialsError
from app.storage.lazy import LazyObjectStore
from app.storage.signer import Signer
from app.uploads.service import UploadService

log = logging.getLogger("spatialgen.api")


@asynccontextmanager
async def open_services(settings: Settings, *, clock: Clock = SYSTEM_CLOCK) -> AsyncIterator[Services]:
    """Create the process-wide clients and services, and close them afterwards (clock: where "now" comes from)."""
    redis = redis_client(settings.redis, socket_timeout=5, socket_connect_timeout=3, health_check_interval=30)
    storage = LazyObjectStore(settings.storage, timeout=CHECK_TIMEOUT_SECONDS)
    probe = ReadinessProbe(redis, storage, key_prefix=settings.storage.key_prefix)
    state = UploadState(redis, write_replicas=settings.redis.write_replicas)
    try:
        await state.load_scripts()  # a broken script stops the process here, not on its first call
        await state.claim_instance()  # this Redis's identity, if it has none yet (app/upkeep/identity.py)
    except REDIS_UNAVAILABLE as exc:
        log.warning("Redis unreachable at startup (%r); scripts load on first use", exc)
    signer = Signer.from_settings(settings.storage, offload_min_parts=settings.api.sign_offload_min_parts)
    settled = Settled(redis)  # completion waits are woken, not polled (app/state/settled.py)
    settled.start()
    uploads = UploadService(settings, state, signer, storage, clock=clock, settled=settled)
    webhooks = WebhookStore(redis)
    try:
        yield Services(
            settings=settings, redis=redis, keys=KeyCache(redis, settings.api.key_cache_seconds), uploads=uploads,
            probe=probe, webhooks=webhooks,
        )  # fmt: skip
    finally:
        try:
            await settled.stop()
            webhooks.close()
            signer.close()
            await signer.credentials.aclose()
            state.close()
            await storage.aclose()
        finally:
            await redis.aclose()


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


def options_handlers(handlers: Sequence[HTTPRouteHandler]) -> list[HTTPRouteHandler]:
    """One OPTIONS handler per path, whose `Allow` lists every method served on that path.

    Litestar 2 adds one by itself, but it lists only the methods of the first handler registered on the path
    (`Allow: DELETE, OPTIONS` where GET is served too: litestar-org/litestar#4169, fixed in v3 only). A path that
    already has an OPTIONS handler gets no default one, so these are registered before the routes.
    """
    served: dict[str, set[str]] = {}
    for handler in handlers:
        for path in handler.paths:
            served.setdefault(path, {"OPTIONS"}).update(handler.http_methods)
    return [
        route(path, http_method=[HttpMethod.OPTIONS], include_in_schema=False, sync_to_thread=False)(
            _answer_options(", ".join(sorted(methods)))
        )
        for path, methods in served.items()
    ]


def _answer_options(allow: str) -> Callable[[Scope], Response[None]]:
    def options(scope: Scope) -> Response[None]:
        return Response(content=None, status_code=204, headers={"Allow": allow})

    return options


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the ASGI app for these settings (read from the environment by default).

    With SPATIALGEN_OPS_PORT set, the operations routes are left out of it: the lifespan serves them on that port
    (`ops_app`), from this process, with the same services and metrics.
    """
    settings = settings or Settings.from_env()
    process_metrics = metrics.ApiMetrics()
    ops_apart = settings.server.ops_port != 0
    ops = ops_app(process_metrics) if ops_apart else None

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_services(settings) as svc:
            app.state.services = svc
            svc.probe.storage.warm()
            svc.uploads.signer.start()
            await check_credentials(svc.uploads.signer.credentials)
            async with AsyncExitStack() as stack:
                if ops is not None:
                    ops.state.services = svc
                    await stack.enter_async_context(serve_ops_port(ops, settings.server.host, settings.server.ops_port))
                # Everything built so far lives as long as the process: keep it out of the garbage collector's
                # full passes, which otherwise rescan the whole app (routes, models, OpenAPI) every few thousand
                # requests.
                gc.collect()
                gc.freeze()
                yield

    routes = [*UPLOAD_ROUTES, *WEBHOOK_ROUTES] if ops_apart else [*UPLOAD_ROUTES, *WEBHOOK_ROUTES, *OPS_ROUTES]
    app = Litestar(
        route_handlers=[*options_handlers(routes), *routes, *docs_asset_routers()],
        lifespan=[lifespan],
        request_max_body_size=settings.api.max_body_bytes,
        exception_handlers=exception_handlers(),
        openapi_config=with_webhooks(openapi_config()),
        state=State({"metrics": process_metrics}),
    )
    # Outermost, around the router: unmatched routes (404/405) are counted too, and no per-route middleware stack
    # (with its extra exception-handler layer) is added to the hot path.
    app.asgi_handler = metrics.MetricsMiddleware(app.asgi_handler, process_metrics)
    return app


def ops_app(process_metrics: metrics.ApiMetrics) -> Litestar:
    """The operations routes alone, for SPATIALGEN_OPS_PORT: counted in the API's metrics, no OpenAPI document, and
    no lifespan of their own (the API's lifespan sets `state.services` and serves them)."""
    app = Litestar(
        route_handlers=[*options_handlers(OPS_ROUTES), *OPS_ROUTES],
        exception_handlers=exception_handlers(),
        openapi_config=None,
        state=State({"metrics": process_metrics}),
    )
    app.asgi_handler = metrics.MetricsMiddleware(app.asgi_handler, process_metrics)
    return app


def exception_handlers() -> ExceptionHandlersMap:
    """The one exception mapping (app/http/problems.py), for the API and the operations port alike."""
    return {
        ApiError: handle_api_error,
        HTTPException: handle_http_exception,
        **dict.fromkeys(REDIS_UNAVAILABLE, handle_redis_down),
        Exception: handle_unexpected,
    }
