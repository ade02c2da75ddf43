"""Prometheus metrics on prometheus_client: this API process's requests, and shared figures read from Redis.

What comes from where:
- this API process (reset when it restarts): requests by route template / method / status and their latency
  histograms, groups created and canceled, file completions by outcome, and the standard `process_*` metrics;
- Redis, read once per scrape in one pipelined round trip (the same from every process): queue depths of the
  two arq queues, live groups (the expiry index) and the counters kept in `METRICS_KEY` (groups completed,
  groups expired, job outcomes).
The per-request path is one pure ASGI wrapper (two clock reads, two cached metric children); nothing is
written to Redis on the hot path. OpenMetrics is served when the scraper's Accept header asks for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import prometheus_client
import redis.exceptions
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from redis.asyncio import Redis

from app.domain.clock import now_ms
from app.state.keys import (
    EXPIRY_INDEX,
    HANDOFF_FAILED_INDEX,
    HANDOFF_INDEX,
    JOB_FIELD_PREFIX,
    JOB_OUTCOMES,
    METRICS_KEY,
    WEBHOOKS_DISABLED,
    MetricField,
)

log = logging.getLogger("spatialgen.metrics")

# One `_created` sample per series doubles every scrape for no use here (our counters start with the process).
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = "text/plain; version=0.0.4"
"""Prometheus text format, the default answer (Litestar appends `; charset=utf-8` to text/* types)."""
SCRAPE_TIMEOUT_SECONDS = 0.8
"""Longest wait for the Redis reads of one scrape; past it the scrape answers without them."""
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Latency buckets (s): fast JSON answers, and complete / parts / part-urls that wait on workers for seconds."""
UNMATCHED = "unmatched"
"""Route label of requests that matched no route (404, 405): raw paths are never used as label values."""
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})

# Counters kept in Redis (METRICS_KEY): HINCRBY'd by the scripts and workers, read with one HGETALL per scrape.
F_GROUPS_EXPIRED = MetricField.GROUPS_EXPIRED
"""Field of METRICS_KEY: groups the expiry sweep has expired."""
F_GROUPS_COMPLETED = MetricField.GROUPS_COMPLETED
"""Field of METRICS_KEY: groups completed (by the completing script)."""
SAFETY_COUNTERS = (
    (MetricField.HANDOFFS_FAILED, "spatialgen_handoffs_failed",
     "Processing jobs a consumer finished with an error (seen by the re-drive)."),
    (MetricField.SWEEPS_REFUSED, "spatialgen_destructive_work_refused",
     "Sweeps and purges that refused to delete: Redis is not the one the stored objects were written with."),
    (MetricField.DELETIONS_CAPPED, "spatialgen_sweeps_capped",
     "Storage sweep runs that stopped at SPATIALGEN_SWEEP_MAX_DELETIONS."),
)  # fmt: skip


class SharedCounts:
    """What one scrape read from Redis."""

    __slots__ = ("completed", "counters", "handoffs", "live", "queues", "webhooks")

    def __init__(
        self, queues: dict[str, tuple[int, int]], live: int, completed: int, counters: dict[str, int],
        handoffs: tuple[int, int] = (0, 0), *, webhooks: tuple[int, float] = (0, 0.0),
    ) -> None:  # fmt: skip
        self.queues = queues  # queue -> (due jobs, scheduled jobs)
        self.live = live
        self.completed = completed
        self.counters = counters
        self.handoffs = handoffs  # (pending, failed)
        self.webhooks = webhooks  # (disabled endpoints, age of the oldest due delivery in seconds)


async def read_shared(
    client: Redis, queues: list[str], *, wait: float = SCRAPE_TIMEOUT_SECONDS, webhook_queue: str = ""
) -> SharedCounts | None:
    """Read queue depths, live/completed groups and the worker counters in one round trip; None if Redis fails."""
    now = now_ms()
    try:
        async with asyncio.timeout(wait), client.pipeline(transaction=False) as pipe:
            for q in queues:
                pipe.zcount(q, "-inf", now)
                pipe.zcount(q, f"({now}", "+inf")
            pipe.zcard(EXPIRY_INDEX)
            pipe.zcard(HANDOFF_INDEX)
            pipe.zcard(HANDOFF_FAILED_INDEX)
            pipe.hgetall(METRICS_KEY)
            pipe.scard(WEBHOOKS_DISABLED)
            pipe.zrangebyscore(webhook_queue or "-", "-inf", now, start=0, num=1, withscores=True)
            out = await pipe.execute()
    except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
        log.warning("metrics: Redis counts unavailable: %r", exc)
        return None
    depths = {q: (int(out[2 * i]), int(out[2 * i + 1])) for i, q in enumerate(queues)}
    live, pending, failed, raw, disabled, oldest = out[-6:]
    counters: dict[str, int] = {}
    for k, v in raw.items():
        try:
            counters[k.decode()] = int(v)
        except ValueError:
            continue
    age = max(0.0, (now - oldest[0][1]) / 1000) if oldest else 0.0
    return SharedCounts(depths, int(live), counters.get(F_GROUPS_COMPLETED, 0), counters, (int(pending), int(failed)),
                        webhooks=(int(disabled), age))  # fmt: skip


class SharedCollector(Collector):
    """Exposes the figures of the scrape's Redis read (set just before the registry is rendered)."""

    def __init__(self) -> None:
        self.latest: SharedCounts | None = None

    def collect(self) -> Iterator[Metric]:
        """The shared families, and whether Redis could be read at all."""
        shared = self.latest
        up = GaugeMetricFamily("spatialgen_state_store_up", "1 if this scrape could read the shared counts from Redis.")
        up.add_metric([], 0 if shared is None else 1)
        yield up
        if shared is None:
            return
        depth = GaugeMetricFamily(
            "spatialgen_queue_depth",
            "Jobs in an arq queue: due (waiting for a worker, or running) or scheduled (deferred to a later time).",
            labels=["queue", "state"],
        )
        for q, (due, scheduled) in shared.queues.items():
            depth.add_metric([q, "due"], due)
            depth.add_metric([q, "scheduled"], scheduled)
        yield depth
        live = GaugeMetricFamily("spatialgen_groups_live", "Upload groups still accepting uploads (the expiry index).")
        live.add_metric([], shared.live)
        yield live
        completed = CounterMetricFamily("spatialgen_groups_completed", "Upload groups completed, ever.")
        completed.add_metric([], shared.completed)
        yield completed
        expired = CounterMetricFamily("spatialgen_groups_expired", "Upload groups expired by the workers' sweep.")
        if F_GROUPS_EXPIRED in shared.counters:
            expired.add_metric([], shared.counters[F_GROUPS_EXPIRED])
        yield expired
        for field, name, text in SAFETY_COUNTERS:
            family = CounterMetricFamily(name, text)
            family.add_metric([], shared.counters.get(field, 0))
            yield family
        handoffs = GaugeMetricFamily(
            "spatialgen_handoffs", "Completed groups by where their processing job stands: pending (queued, not yet "
            "taken) or failed (the consumer failed; an operator retries it).", labels=["state"],
        )  # fmt: skip
        handoffs.add_metric(["pending"], shared.handoffs[0])
        handoffs.add_metric(["failed"], shared.handoffs[1])
        yield handoffs
        jobs = CounterMetricFamily(
            "spatialgen_jobs", "arq jobs run by the workers, by function and outcome (all workers).",
            labels=["function", "outcome"],
        )  # fmt: skip
        for field, n in sorted(shared.counters.items()):
            function, _, outcome = field.removeprefix(JOB_FIELD_PREFIX).rpartition(":")
            if field.startswith(JOB_FIELD_PREFIX) and function and outcome in JOB_OUTCOMES:
                jobs.add_metric([function, outcome], n)
        yield jobs
        yield from webhook_families(shared)


def webhook_families(shared: SharedCounts) -> Iterator[Metric]:
    """Webhook deliveries by outcome (all workers), disabled endpoints, and the age of the oldest due delivery."""
    deliveries = CounterMetricFamily(
        "spatialgen_webhook_deliveries", "Webhook delivery attempts by outcome: delivered, retrying (another attempt "
        "is scheduled), failed (the last one), disabled (410), skipped (endpoint disabled).", labels=["outcome"],
    )  # fmt: skip
    for field, n in sorted(shared.counters.items()):
        outcome = field.removeprefix(MetricField.WEBHOOK_PREFIX)
        if field.startswith(MetricField.WEBHOOK_PREFIX) and outcome != "endpoints_disabled":
            deliveries.add_metric([outcome], n)
    yield deliveries
    disabled = GaugeMetricFamily("spatialgen_webhook_endpoints_disabled",
                                 "Webhook endpoints the service disabled (410, or failing for days).")  # fmt: skip
    disabled.add_metric([], shared.webhooks[0])
    yield disabled
    age = GaugeMetricFamily("spatialgen_webhook_queue_oldest_seconds",
                            "How long the oldest due webhook delivery has waited (0: none waits).")  # fmt: skip
    age.add_metric([], shared.webhooks[1])
    yield age


class ApiMetrics:
    """The metrics of one API process: its own registry, so several apps in one process never mix."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "spatialgen_http_requests", "HTTP requests answered by this API process, by route template, method "
            "and status.", ["route", "method", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "spatialgen_http_request_duration_seconds", "Time to answer HTTP requests in this API process, by "
            "route template and method.", ["route", "method"], buckets=BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.groups_created = Counter(
            "spatialgen_groups_created", "Upload groups created through this API process (replays not counted).",
            registry=self.registry,
        )  # fmt: skip
        self.groups_canceled = Counter(
            "spatialgen_groups_canceled", "Upload groups canceled through this API process (repeats not counted).",
            registry=self.registry,
        )  # fmt: skip
        self.completions = Counter(
            "spatialgen_file_completions", "Complete File Upload answers of this API process by outcome: completed "
            "(200), accepted (202, worker still busy) or the error code of a refusal.", ["outcome"],
            registry=self.registry,
        )  # fmt: skip
        ProcessCollector(registry=self.registry)
        self.shared = SharedCollector()
        self.registry.register(self.shared)
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Record one answered request (label children are looked up once per series, then cached)."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(route, method, str(status)), self.latency.labels(route, method))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def count_completion(self, outcome: str) -> None:
        """A complete call's outcome: `completed` (200), `accepted` (202) or the error code it was refused with."""
        self.completions.labels(outcome).inc()

    def render(self, shared: SharedCounts | None, accept: str = "") -> tuple[bytes, str]:
        """The exposition document in the format the scraper asked for, and its content type."""
        encoder, content_type = choose_encoder(accept)
        self.shared.latest = shared  # collect() runs synchronously below: nothing can interleave
        try:
            return encoder(self.registry), content_type
        finally:
            self.shared.latest = None


class MetricsMiddleware:
    """Pure ASGI wrapper timing every HTTP request and counting it by route template, method and status.

    It wraps the app's whole handler (router included), so unmatched routes count too, as route "unmatched".
    The template comes from the scope the router fills in (`path_template`, e.g. `/api/videos/uploads/{session_id}`).
    """

    __slots__ = ("app", "metrics")

    def __init__(self, app: Any, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the server answers if the app raises before starting a response

        async def send_and_note_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            method = scope["method"]
            self.metrics.observe(
                scope.get("path_template", UNMATCHED),
                method if method in _METHODS else "OTHER",
                status,
                time.perf_counter() - start,
            )
