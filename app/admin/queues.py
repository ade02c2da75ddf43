"""The queue side of `spatialgen-admin`: `queues` (every arq queue at a glance) and `jobs` (what is queued,
scheduled, running, or kept as a result). Every read is bounded (queue zsets, capped SCANs); never KEYS.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix
from arq.jobs import deserialize_job_raw, deserialize_result
from redis.asyncio import Redis

from app.domain.clock import iso_ms, now_ms
from app.state.jobs import deserialize

UNDECODABLE = "<undecodable>"
MISSING = "<missing>"
UNKNOWN_QUEUE = "<unknown>"
SCAN_LIMIT = 10_000
"""Default bound of every scan: keys a SCAN may visit, or index entries a listing may examine."""
SCAN_COUNT = 1_000
IN_PROGRESS_CHECK = 1_000
"""How many of a queue's due jobs are checked for an in-progress marker."""
BATCH = 500
ARGS_CHARS = 60
RESULT_CHARS = 80


class QueueStats(msgspec.Struct, kw_only=True, rename="camel"):
    """One arq queue at a glance."""

    queue: str
    queued: int
    """Due jobs waiting for a worker (due minus in progress)."""
    scheduled: int
    """Jobs deferred to a later time."""
    in_progress: int
    in_progress_exact: bool
    """False when the queue had more due jobs than were checked (`inProgress` is then a lower bound)."""
    results: int
    """Kept results of this queue found by the result scan."""
    failures: int
    """Kept results with success=False."""
    results_exact: bool
    """False when the result scan hit its limit (`results` and `failures` are then lower bounds)."""
    oldest_queued_age_seconds: float | None
    """Age of the oldest job waiting for a worker (now minus the time it became due)."""


class JobRow(msgspec.Struct, kw_only=True, rename="camel"):
    """A job in a queue, or a kept result of one."""

    job_id: str
    queue: str
    function: str
    args: str
    tries: int
    enqueued_at: str | None
    state: str
    """queued, deferred, in_progress, complete, failed, or unknown (an undecodable result)."""
    run_at: str | None = None
    """When a pending job is (or was) due."""
    finished_at: str | None = None
    result: str | None = None
    """repr of a result or of the exception a failed job ended with (clipped)."""


class JobList(msgspec.Struct, kw_only=True, rename="camel"):
    """Jobs and results of a `jobs` listing."""

    jobs: list[JobRow]
    results_exact: bool


def clip(text: str, limit: int) -> str:
    """Text cut to `limit` characters, with an ellipsis when something was cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _repr(value: Any, limit: int) -> str:
    try:
        return clip(repr(value), limit)
    except Exception:
        return UNDECODABLE


def args_summary(args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    """Positional and keyword arguments as one clipped line."""
    try:
        text = ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])
    except Exception:
        return UNDECODABLE
    return clip(text, ARGS_CHARS)


def _ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


async def scan_keys(redis: Redis, match: str, *, limit: int, type_: str | None = None) -> tuple[list[bytes], bool]:
    """Keys matching `match`, visiting at most about `limit` keys; returns (keys, complete)."""
    keys: list[bytes] = []
    count = max(1, min(SCAN_COUNT, limit))
    cursor, visited = 0, 0
    while True:
        cursor, batch = await redis.scan(cursor, match=match, count=count, _type=type_)
        keys += batch
        visited += count
        if cursor == 0:
            return keys, True
        if visited >= limit:
            return keys, False


async def _get_many(redis: Redis, keys: Sequence[str | bytes]) -> list[bytes | None]:
    out: list[bytes | None] = []
    for start in range(0, len(keys), BATCH):
        async with redis.pipeline(transaction=False) as pipe:
            for k in keys[start : start + BATCH]:
                pipe.get(k)
            out += await pipe.execute()
    return out


def _result_row(key: bytes, blob: bytes | None) -> JobRow | None:
    job_id = key.decode(errors="replace").removeprefix(result_key_prefix)
    if blob is None:
        return None  # expired between the scan and the read
    try:
        r = deserialize_result(blob, deserializer=deserialize)
        return JobRow(
            job_id=job_id, queue=str(r.queue_name), function=str(r.function), args=args_summary(r.args, r.kwargs),
            tries=int(r.job_try or 0), enqueued_at=iso_ms(_ms(r.enqueue_time)),
            state="complete" if r.success else "failed", finished_at=iso_ms(_ms(r.finish_time)),
            # A failed job's result is its exception, which our job format keeps as its repr (a string).
            result=clip(r.result, RESULT_CHARS) if not r.success and isinstance(r.result, str) else _repr(r.result,
                                                                                                      RESULT_CHARS),
        )  # fmt: skip
    except Exception:
        return JobRow(
            job_id=job_id, queue=UNKNOWN_QUEUE, function=UNDECODABLE, args=UNDECODABLE, tries=0, enqueued_at=None,
            state="unknown",
        )  # fmt: skip


async def scan_results(redis: Redis, *, limit: int = SCAN_LIMIT) -> tuple[list[JobRow], bool]:
    """Kept arq results found by a bounded SCAN, newest first; returns (rows, complete)."""
    keys, complete = await scan_keys(redis, result_key_prefix + "*", limit=limit)
    blobs = await _get_many(redis, keys)
    rows = [row for k, b in zip(keys, blobs, strict=True) if (row := _result_row(k, b)) is not None]
    rows.sort(key=lambda r: r.finished_at or "", reverse=True)
    return rows, complete


async def pending_jobs(redis: Redis, queue: str, *, limit: int, now: int | None = None) -> list[JobRow]:
    """The first `limit` jobs of a queue in run order, each with its state and try count."""
    now = now_ms() if now is None else now
    if limit <= 0:
        return []
    members: list[tuple[bytes, float]] = await redis.zrange(queue, 0, limit - 1, withscores=True)
    async with redis.pipeline(transaction=False) as pipe:
        for raw_id, _ in members:
            jid = raw_id.decode(errors="replace")
            pipe.get(job_key_prefix + jid)
            pipe.get(retry_key_prefix + jid)
            pipe.exists(in_progress_key_prefix + jid)
        out = await pipe.execute()
    rows = []
    for i, (raw_id, score) in enumerate(members):
        blob, retries, running = out[3 * i : 3 * i + 3]
        function, args, enqueued, job_try = MISSING, "", None, 0
        if blob is not None:
            try:
                fn, a, kw, t, et = deserialize_job_raw(blob, deserializer=deserialize)
                function, args, enqueued, job_try = str(fn), args_summary(a, kw), iso_ms(int(et)), int(t or 0)
            except Exception:
                function = args = UNDECODABLE
        tries = int(retries) if retries is not None else job_try
        state = "in_progress" if running else ("deferred" if score > now else "queued")
        rows.append(
            JobRow(
                job_id=raw_id.decode(errors="replace"), queue=queue, function=function, args=args, tries=tries,
                enqueued_at=enqueued, state=state, run_at=iso_ms(int(score)),
            )
        )  # fmt: skip
    return rows


async def list_jobs(
    redis: Redis,
    queues: Sequence[str],
    *,
    failed_only: bool = False,
    limit: int = 50,
    scan_limit: int = SCAN_LIMIT,
    now: int | None = None,
) -> JobList:
    """Pending jobs of each queue (up to `limit` each, in run order), then kept results (newest first, up to `limit`).

    With `failed_only`, only the failed results.
    """
    rows: list[JobRow] = []
    if not failed_only:
        for q in queues:
            rows += await pending_jobs(redis, q, limit=limit, now=now)
    results, complete = await scan_results(redis, limit=scan_limit)
    wanted = set(queues)
    kept = [
        r for r in results
        if (r.queue in wanted or r.queue == UNKNOWN_QUEUE) and (not failed_only or r.state == "failed")
    ]  # fmt: skip
    return JobList(jobs=rows + kept[:limit], results_exact=complete)


async def _due_times(redis: Redis, waiting: list[tuple[bytes, float]]) -> list[float]:
    """When each waiting job became due: its score, except that a job enqueued ("et" in its document) after its score
    (a producer may score a job ahead of its time) counts from its enqueue time."""
    async with redis.pipeline(transaction=False) as pipe:
        for raw_id, _ in waiting:
            pipe.get(job_key_prefix + raw_id.decode(errors="replace"))
        docs = await pipe.execute()
    due = []
    for (_, score), doc in zip(waiting, docs, strict=True):
        enqueued = score
        if doc:
            with contextlib.suppress(Exception):  # not our format (another producer's job): its score
                enqueued = float(msgspec.msgpack.decode(doc).get("et") or score)
        due.append(max(score, enqueued))
    return due


async def queue_stats(
    redis: Redis, queues: Sequence[str], *, scan_limit: int = SCAN_LIMIT, now: int | None = None
) -> list[QueueStats]:
    """Counts of each queue; queues only seen in kept results (another arq queue) are added at the end."""
    now = now_ms() if now is None else now
    results, complete = await scan_results(redis, limit=scan_limit)
    kept = Counter(r.queue for r in results)
    failed = Counter(r.queue for r in results if r.state == "failed")
    names = list(dict.fromkeys([*queues, *sorted(kept)]))
    stats = []
    for q in names:
        due = later = running = 0
        oldest: float | None = None
        exact = True
        if not q.startswith("<"):
            async with redis.pipeline(transaction=False) as pipe:
                pipe.zcount(q, "-inf", now)
                pipe.zcount(q, f"({now}", "+inf")
                pipe.zrangebyscore(q, "-inf", now, start=0, num=IN_PROGRESS_CHECK, withscores=True)
                due, later, window = await pipe.execute()
            async with redis.pipeline(transaction=False) as pipe:
                for raw_id, _ in window:
                    pipe.exists(in_progress_key_prefix + raw_id.decode(errors="replace"))
                flags = await pipe.execute() if window else []
            running = sum(1 for f in flags if f)
            exact = due <= len(window)
            waiting = [(raw_id, score) for (raw_id, score), f in zip(window, flags, strict=True) if not f]
            if waiting:
                oldest = round((now - min(await _due_times(redis, waiting))) / 1000, 3)
            elif window and not exact:
                oldest = round((now - window[-1][1]) / 1000, 3)  # all checked are running: at most this old
        stats.append(
            QueueStats(
                queue=q, queued=due - running, scheduled=later, in_progress=running, in_progress_exact=exact,
                results=kept[q], failures=failed[q], results_exact=complete, oldest_queued_age_seconds=oldest,
            )
        )  # fmt: skip
    return stats
