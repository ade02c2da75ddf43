"""Operations routes (no API key): liveness, readiness and Prometheus metrics.

Readiness depends on Redis alone (see app/http/health.py for why storage only reports); /metrics adds the figures
shared through Redis (queue depths, groups, job outcomes) to this process's own.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example

from app.domain import errors
from app.domain.errors import PROBLEM_JSON
from app.http import metrics
from app.http.health import OK
from app.http.openapi import OPS_TAG, ApiOperation, Liveness, NotReadyProblem, Readiness
from app.http.plumbing import JSON, registry, services
from app.http.problems import problem_response
from app.state.keys import MetricField, job_field

_json = msgspec.json.Encoder()


_NOT_READY_EXAMPLE = errors.DEPENDENCY_UNAVAILABLE(
    "Not ready: redis timeout.",
    extra={"checks": {"redis": "timeout", "storage": "ok", "evictionPolicy": "unknown", "redisIdentity": "ok"}},
).problem("/health/ready")


def _metrics_example() -> str:
    """What /metrics shows after two requests, rendered by the real exposition code."""
    reg = metrics.ApiMetrics()
    reg.observe("/api/videos/uploads", "POST", 201, 0.0123)
    reg.observe("/api/videos/uploads/{session_id}", "GET", 200, 0.0031)
    reg.groups_created.inc()
    shared = metrics.SharedCounts(
        {"arq:queue": (2, 1), "spatialgen:processing": (0, 0)}, live=1, completed=41,
        counters={MetricField.GROUPS_EXPIRED: 3, job_field("complete_file", "ok"): 5},
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
                              "redis": "ok", "storage": "ok", "evictionPolicy": "ok", "redisIdentity": "ok"}})]),
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
    err = errors.DEPENDENCY_UNAVAILABLE(f"Not ready: {failed}.", headers={"Retry-After": "5"}, extra={"checks": checks})
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
    hooks = svc.settings.webhooks.queue_name
    shared = await metrics.read_shared(svc.redis, [*svc.settings.worker.queues, hooks], webhook_queue=hooks)
    body, content_type = registry(request).render(shared, request.headers.get("accept", ""))
    # Litestar appends the charset to text/* types itself.
    media_type = content_type.replace("; charset=utf-8", "") if content_type.startswith("text/") else content_type
    return Response(content=body, media_type=media_type)


OPS_ROUTES = [health_live, health_ready, metrics_endpoint]
