"""`spatialgen-admin sessions`: groups listed newest first through the per-account indexes, and one group's
whole document (the status endpoint's, plus storage keys and S3 upload ids).
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis

from app.admin.queues import SCAN_LIMIT, UNDECODABLE, scan_keys
from app.domain.clock import iso_ms, now_ms
from app.domain.lifecycle import LIVE_GROUP, GroupStatus
from app.state import UploadState, decode_group
from app.state.keys import (
    Field,
    account_index_key,
    group_key,
    state_key,
)
from app.uploads.views import group_status_view

BATCH = 500
ACCOUNT_INDEX_PREFIX = account_index_key("")


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
