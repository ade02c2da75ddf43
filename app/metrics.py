"""Prometheus metrics: per-process request counters and latency histograms, plus shared counts read from Redis.

Exposition is hand-written text format 0.0.4; the per-request path is one pure ASGI wrapper that costs a few µs
(two clock reads and two dict updates), and nothing is written to Redis on the hot path.

What comes from where:
- this API process (reset when it restarts): requests by route template / method / status, latency histograms,
  groups created and canceled, file completions by outcome;
- Redis, read once per scrape in one pipelined round trip (the same for every process): queue depths of the two
  arq queues, live groups (the expiry index), groups completed (the libraryId counter) and the counters the
  workers keep in the `METRICS_KEY` hash (groups expired, job outcomes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

import redis.exceptions
from redis.asyncio import Redis

from app.settings import Settings
from app.state import EXPIRY_INDEX, LIBRARY_COUNTER, PREFIX
from app.timefmt import now_ms

log = logging.getLogger("spatialgen.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4"
"""Prometheus text format (Litestar appends `; charset=utf-8` to text/* types)."""
NAMESPACE = "spatialgen"
SCRAPE_TIMEOUT_SECONDS = 0.8
"""Longest wait for the Redis reads of one scrape; past it the scrape answers without them."""

# Latency buckets (seconds): fast JSON answers, and complete / parts / part-urls that wait on workers for seconds.
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "unmatched"
"""Route label of requests that matched no route (404, 405): raw paths are never used as label values."""
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})

# ---------------------------------------------------------------------------------------------
# Counters the workers keep in Redis: one hash, HINCRBY'd by workers, read with one HGETALL per scrape.
# ---------------------------------------------------------------------------------------------
METRICS_KEY = f"{PREFIX}metrics"
"""Hash of shared counters: `groups_expired` and `job:{function}:{outcome}` fields."""
F_GROUPS_EXPIRED = "groups_expired"
"""Field of METRICS_KEY: groups the expiry sweep has expired (HINCRBY by the sweep's count)."""
JOB_OUTCOMES = ("ok", "retried", "failed")
"""ok: returned; retried: raised arq Retry (or a retryable error); failed: raised, or gave up after the last try."""
JOB_FIELD_PREFIX = "job:"


def job_field(function: str, outcome: str) -> str:
    """Field of METRICS_KEY counting one outcome of one job function, e.g. `job:complete_file:ok`."""
    return f"{JOB_FIELD_PREFIX}{function}:{outcome}"


# ---------------------------------------------------------------------------------------------
# Per-process registry.
# ---------------------------------------------------------------------------------------------
class _RouteSeries:
    """Everything observed for one (route template, method): answers by status and a latency histogram."""

    __slots__ = ("buckets", "by_status", "seconds")

    def __init__(self) -> None:
        self.by_status: dict[int, int] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)  # non-cumulative; the last one is +Inf
        self.seconds = 0.0


class Registry:
    """Counters of one API process. Updated from the event loop only, so no locking is needed."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], _RouteSeries] = {}
        self.groups_created = 0
        self.groups_canceled = 0
        self.completions: dict[str, int] = {}
        self.started_at = time.time()

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Record one answered request."""
        key = (route, method)
        series = self.routes.get(key)
        if series is None:
            series = self.routes[key] = _RouteSeries()
        by_status = series.by_status
        by_status[status] = by_status.get(status, 0) + 1
        series.buckets[bisect_left(BUCKETS, seconds)] += 1
        series.seconds += seconds

    def count_completion(self, outcome: str) -> None:
        """A complete call's outcome: `completed` (200), `accepted` (202) or the error code it was refused with."""
        self.completions[outcome] = self.completions.get(outcome, 0) + 1


class MetricsMiddleware:
    """Pure ASGI wrapper timing every HTTP request and counting it by route template, method and status.

    It wraps the app's whole handler (router included), so unmatched routes count too, as route "unmatched".
    The template comes from the scope the router fills in (`path_template`, e.g. `/api/videos/uploads/{session_id}`).
    """

    __slots__ = ("app", "registry")

    def __init__(self, app: Any, registry: Registry) -> None:
        self.app = app
        self.registry = registry

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
            self.registry.observe(
                scope.get("path_template", UNMATCHED),
                method if method in _METHODS else "OTHER",
                status,
                time.perf_counter() - start,
            )


# ---------------------------------------------------------------------------------------------
# Shared counts from Redis.
# ---------------------------------------------------------------------------------------------
class SharedCounts:
    """What one scrape read from Redis."""

    __slots__ = ("completed", "counters", "live", "queues")

    def __init__(self, queues: dict[str, tuple[int, int]], live: int, completed: int, counters: dict[str, int]) -> None:
        self.queues = queues  # queue -> (due jobs, scheduled jobs)
        self.live = live
        self.completed = completed
        self.counters = counters


def queue_names(settings: Settings) -> list[str]:
    """The arq queues whose depth is reported."""
    return list(dict.fromkeys((settings.queue_name, settings.processing_queue_name)))


async def read_shared(
    client: Redis, settings: Settings, *, wait: float = SCRAPE_TIMEOUT_SECONDS
) -> SharedCounts | None:
    """Read queue depths, live/completed groups and the worker counters in one round trip; None if Redis fails."""
    queues = queue_names(settings)
    now = now_ms()
    try:
        async with asyncio.timeout(wait), client.pipeline(transaction=False) as pipe:
            for q in queues:
                pipe.zcount(q, "-inf", now)
                pipe.zcount(q, f"({now}", "+inf")
            pipe.zcard(EXPIRY_INDEX)
            pipe.get(LIBRARY_COUNTER)
            pipe.hgetall(METRICS_KEY)
            out = await pipe.execute()
    except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
        log.warning("metrics: Redis counts unavailable: %r", exc)
        return None
    depths = {q: (int(out[2 * i]), int(out[2 * i + 1])) for i, q in enumerate(queues)}
    live, completed, raw = out[-3:]
    counters: dict[str, int] = {}
    for k, v in raw.items():
        try:
            counters[k.decode()] = int(v)
        except ValueError:
            continue
    return SharedCounts(depths, int(live), int(completed or 0), counters)


# ---------------------------------------------------------------------------------------------
# Exposition.
# ---------------------------------------------------------------------------------------------
def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _float(value: float) -> str:
    return repr(float(value))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[str, str, float | int]]) -> None:
        """One metric family: HELP, TYPE, then (suffix, labels, value) samples."""
        full = f"{NAMESPACE}_{name}"
        self.lines.append(f"# HELP {full} {help_text}")
        self.lines.append(f"# TYPE {full} {kind}")
        for suffix, labels, value in samples:
            shown = str(value) if isinstance(value, int) else _float(value)
            self.lines.append(f"{full}{suffix}{labels} {shown}")


def render(registry: Registry, shared: SharedCounts | None) -> bytes:
    """The whole exposition document."""
    w = _Writer()
    routes = sorted(registry.routes.items())
    w.family(
        "http_requests_total", "counter",
        "HTTP requests answered by this API process, by route template, method and status.",
        (("", _labels(route=r, method=m, status=str(code)), n)
         for (r, m), s in routes for code, n in sorted(s.by_status.items())),
    )  # fmt: skip
    histogram: list[tuple[str, str, float | int]] = []
    for (r, m), s in routes:
        cumulative = 0
        for bound, n in zip((*map(_float, BUCKETS), "+Inf"), s.buckets, strict=True):
            cumulative += n
            histogram.append(("_bucket", _labels(route=r, method=m, le=bound), cumulative))
        histogram.append(("_sum", _labels(route=r, method=m), s.seconds))
        histogram.append(("_count", _labels(route=r, method=m), cumulative))
    w.family(
        "http_request_duration_seconds", "histogram",
        "Time to answer HTTP requests in this API process, by route template and method.", histogram,
    )  # fmt: skip
    w.family(
        "groups_created_total", "counter",
        "Upload groups created through this API process (idempotent replays not counted).",
        [("", "", registry.groups_created)],
    )  # fmt: skip
    w.family(
        "groups_canceled_total", "counter", "Upload groups canceled through this API process (repeats not counted).",
        [("", "", registry.groups_canceled)],
    )  # fmt: skip
    w.family(
        "file_completions_total", "counter",
        "Complete File Upload answers of this API process by outcome: completed (200), accepted (202, worker still "
        "busy) or the error code of a refusal (missing_parts, session_canceled, ...).",
        (("", _labels(outcome=o), n) for o, n in sorted(registry.completions.items())),
    )  # fmt: skip
    w.family(
        "process_start_time_seconds", "gauge", "Start time of this API process (Unix epoch seconds).",
        [("", "", registry.started_at)],
    )  # fmt: skip
    w.family(
        "state_store_up", "gauge", "1 if this scrape could read the shared counts from Redis, else 0.",
        [("", "", 0 if shared is None else 1)],
    )  # fmt: skip
    if shared is not None:
        _render_shared(w, shared)
    w.lines.append("")
    return "\n".join(w.lines).encode()


def _render_shared(w: _Writer, shared: SharedCounts) -> None:
    depth: list[tuple[str, str, float | int]] = []
    for q, (due, scheduled) in shared.queues.items():
        depth.append(("", _labels(queue=q, state="due"), due))
        depth.append(("", _labels(queue=q, state="scheduled"), scheduled))
    w.family(
        "queue_depth", "gauge",
        "Jobs in an arq queue: due (waiting for a worker, or running) or scheduled (deferred to a later time).",
        depth,
    )  # fmt: skip
    w.family(
        "groups_live", "gauge", "Upload groups still accepting uploads (the expiry index; all processes).",
        [("", "", shared.live)],
    )  # fmt: skip
    w.family(
        "groups_completed_total", "counter", "Upload groups completed, ever (the libraryId counter; all processes).",
        [("", "", shared.completed)],
    )  # fmt: skip
    expired = shared.counters.get(F_GROUPS_EXPIRED)
    w.family(
        "groups_expired_total", "counter", "Upload groups expired by the workers' expiry sweep (all workers).",
        [] if expired is None else [("", "", expired)],
    )  # fmt: skip
    jobs: list[tuple[str, str, float | int]] = []
    for field, n in sorted(shared.counters.items()):
        if not field.startswith(JOB_FIELD_PREFIX):
            continue
        function, _, outcome = field.removeprefix(JOB_FIELD_PREFIX).rpartition(":")
        if function and outcome in JOB_OUTCOMES:
            jobs.append(("", _labels(function=function, outcome=outcome), n))
    w.family("jobs_total", "counter", "arq jobs run by the workers, by function and outcome (all workers).", jobs)
