"""Redis queries behind `spatialgen-admin queues`, `jobs`, `sessions` and `accounts` (the one writer: limits).

Every read is bounded (queue zsets, the per-account indexes, capped SCANs, pipelined point reads); never KEYS.
"""

from __future__ import annotations

import contextlib
import heapq
from collections import Counter
from collections.abc import AsyncGenerator, Sequence
from datetime import datetime
from typing import Any

import msgspec
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix
from arq.jobs import deserialize_job_raw, deserialize_result
from redis.asyncio import Redis

from app.lifecycle import LIVE_GROUP, GroupStatus
from app.limits import Rate, RouteClass
from app.settings import Settings
from app.state import UploadState, decode_group
from app.state.jobs import deserialize
from app.state.keys import (
    Field,
    account_index_key,
    ended_index_key,
    group_key,
    limits_key,
    state_key,
    usage_key,
)
from app.timefmt import iso_ms, now_ms
from app.views import group_status_view

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
ACCOUNT_INDEX_PREFIX = account_index_key("")


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


class SessionRow(msgspec.Struct, kw_only=True, rename="camel"):
    """One upload group in a `sessions list`."""

    session_id: str
    account: str
    status: str
    """As the status endpoint shows it: a live group past its expiresAt is expired."""
    files: int
    created_at: str
    expires_at: str
    video_name: str


class SessionList(msgspec.Struct, kw_only=True, rename="camel"):
    """Sessions of a listing, newest first; complete=False when a scan bound was hit."""

    sessions: list[SessionRow]
    complete: bool


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
    """When each waiting job became due: its score, except that an urgent job is scored ahead of its time
    (JobSpec.build), so a job enqueued ("et" in its document) after its score counts from its enqueue time."""
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


async def _newest_first(redis: Redis, accounts: Sequence[str], page: int) -> AsyncGenerator[tuple[str, str, int]]:
    """(sessionId, account, created ms) across the accounts' index zsets, newest first, read `page` at a time."""
    offsets = dict.fromkeys(accounts, 0)
    buffered = dict.fromkeys(accounts, 0)
    exhausted: set[str] = set()
    heap: list[tuple[float, str, str]] = []

    async def refill(names: Sequence[str]) -> None:
        async with redis.pipeline(transaction=False) as pipe:
            for a in names:
                pipe.zrevrange(account_index_key(a), offsets[a], offsets[a] + page - 1, withscores=True)
            pages = await pipe.execute()
        for a, entries in zip(names, pages, strict=True):
            offsets[a] += len(entries)
            buffered[a] += len(entries)
            if len(entries) < page:
                exhausted.add(a)
            for sid, score in entries:
                heapq.heappush(heap, (-score, sid.decode(errors="replace"), a))

    if accounts:
        await refill(accounts)
    while heap:
        neg, sid, account = heapq.heappop(heap)
        buffered[account] -= 1
        if buffered[account] == 0 and account not in exhausted:
            await refill([account])  # its next entry may be newer than anything left in the heap
        yield sid, account, int(-neg)


async def _session_rows(redis: Redis, batch: Sequence[tuple[str, str, int]], now: int) -> list[SessionRow]:
    async with redis.pipeline(transaction=False) as pipe:
        for sid, _, _ in batch:
            pipe.get(group_key(sid))
            pipe.hget(state_key(sid), Field.STATUS)
        out = await pipe.execute()
    rows = []
    for i, (sid, account, created) in enumerate(batch):
        blob, st = out[2 * i], out[2 * i + 1]
        if blob is None or st is None:
            continue  # the index outlives groups whose keys are gone
        status = st.decode(errors="replace")
        try:
            rec = decode_group(blob)
        except msgspec.DecodeError:
            rows.append(SessionRow(session_id=sid, account=account, status=status, files=0,
                                   created_at=iso_ms(created), expires_at="", video_name=UNDECODABLE))  # fmt: skip
            continue
        if status in LIVE_GROUP and now >= rec.expires_ms:
            status = GroupStatus.EXPIRED.value
        rows.append(
            SessionRow(
                session_id=sid, account=rec.account, status=status, files=len(rec.files),
                created_at=iso_ms(rec.created_ms), expires_at=iso_ms(rec.expires_ms), video_name=rec.video_name,
            )
        )  # fmt: skip
    return rows


async def list_sessions(
    redis: Redis,
    *,
    account: str | None = None,
    status: str | None = None,
    limit: int = 20,
    scan_limit: int = SCAN_LIMIT,
    now: int | None = None,
) -> SessionList:
    """Newest upload groups from the per-account indexes (one account's, or every account's found by SCAN).

    At most `scan_limit` index entries are examined, so a rare --status on a huge Redis may come back short.
    """
    now = now_ms() if now is None else now
    complete = True
    if account is not None:
        accounts = [account]
    else:
        keys, complete = await scan_keys(redis, ACCOUNT_INDEX_PREFIX + "*", limit=scan_limit, type_="zset")
        accounts = sorted({k.decode(errors="replace").removeprefix(ACCOUNT_INDEX_PREFIX) for k in keys})
    page = max(1, min(limit if status is None else max(limit, 100), BATCH))
    rows: list[SessionRow] = []
    examined = 0
    it = _newest_first(redis, accounts, page)
    try:
        while len(rows) < limit:
            batch: list[tuple[str, str, int]] = []
            while len(batch) < page and examined < scan_limit:
                entry = await anext(it, None)
                if entry is None:
                    break
                batch.append(entry)
                examined += 1
            if not batch:
                break
            rows += [r for r in await _session_rows(redis, batch, now) if status is None or r.status == status]
        if len(rows) < limit and examined >= scan_limit and await anext(it, None) is not None:
            complete = False
    finally:
        await it.aclose()
    return SessionList(sessions=rows[:limit], complete=complete)


async def session_document(redis: Redis, session_id: str, *, now: int | None = None) -> dict[str, Any] | None:
    """The status endpoint's document of a group, plus its account and each file's storageKey and s3UploadId."""
    snap = await UploadState(redis).snapshot(session_id)
    if snap is None:
        return None
    view: dict[str, Any] = msgspec.to_builtins(group_status_view(snap, now_ms() if now is None else now))
    for doc, rec in zip(view["files"], snap.record.files, strict=True):
        doc["storageKey"] = snap.record.storage_key(rec)
        doc["s3UploadId"] = snap.s3_upload_id(rec.upload_id)
    return {"sessionId": view["sessionId"], "account": snap.record.account, **view}


class AccountLimits(msgspec.Struct, kw_only=True, rename="camel"):
    """An account's limits (its own where set, else the service defaults) and its live use."""

    account: str
    live_groups: int
    live_bytes: int
    rates: dict[str, str]
    """Route class -> `rate/burst` (per second / tokens); `0/…` is unlimited."""
    overridden: list[str]
    """Which of the above are the account's own (the rest are the defaults)."""
    used_groups: int
    used_bytes: int
    ended_groups: int
    """Groups that ended without completing and are still kept (trimmed to retained_ended_groups)."""
    retained_ended_groups: int


async def account_limits(redis: Redis, settings: Settings, account: str) -> AccountLimits:
    """What limits an account runs under and how much of its quota is in use."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(limits_key(account))
        pipe.hgetall(usage_key(account))
        pipe.zcard(ended_index_key(account))
        own_raw, used_raw, ended = await pipe.execute()
    own = {k.decode(): v.decode() for k, v in own_raw.items()}
    used = {k.decode(): int(v) for k, v in used_raw.items()}
    rates = {}
    for route_class, rate in settings.rates().items():
        per_second = own.get(f"rate:{route_class}", f"{rate.per_second:g}")
        rates[route_class.value] = f"{per_second}/{own.get(f'burst:{route_class}', rate.burst)}"
    quota = settings.quota()
    return AccountLimits(
        account=account, live_groups=int(own.get("live_groups", quota.live_groups)),
        live_bytes=int(own.get("live_bytes", quota.live_bytes)), rates=rates, overridden=sorted(own),
        used_groups=used.get("groups", 0), used_bytes=used.get("bytes", 0), ended_groups=int(ended),
        retained_ended_groups=settings.retained_ended_groups,
    )  # fmt: skip


async def set_account_limits(
    redis: Redis, account: str, *, live_groups: int | None = None, live_bytes: int | None = None,
    rates: dict[RouteClass, Rate] | None = None, reset: bool = False,
) -> None:  # fmt: skip
    """Set (or with reset, first drop) an account's own limits; they apply to its next request."""
    fields: dict[str, str] = {}
    if live_groups is not None:
        fields["live_groups"] = str(live_groups)
    if live_bytes is not None:
        fields["live_bytes"] = str(live_bytes)
    for route_class, rate in (rates or {}).items():
        fields[f"rate:{route_class}"] = f"{rate.per_second:g}"
        fields[f"burst:{route_class}"] = str(rate.burst)
    async with redis.pipeline(transaction=True) as pipe:
        if reset:
            pipe.delete(limits_key(account))
        if fields:
            pipe.hset(limits_key(account), mapping=fields)
        await pipe.execute()
