"""Scale-out: two API processes and three workers on one Valkey and one S3; 200 groups through the whole flow
with every request going to the other API process than the one before (no stickiness), and one worker SIGKILLed
midway. Every group must end completed, with exactly one libraryId and one processing job, and storage must hold
no duplicate or orphan multipart upload.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from typing import Any

import httpx
from redis.asyncio import Redis

from app.domain.clock import now_ms
from app.settings import MIB
from app.state import UploadState
from app.state.keys import METRICS_KEY, MetricField
from app.storage.s3 import ObjectStore
from app.upkeep.cleanup import abort_orphan_uploads
from app.upkeep.identity import MARKER_NAME
from tests.processes import Stack, report, sigkill

GROUPS = 200
CONCURRENCY = 16


class RoundRobin:
    """Each call goes to the next API process: consecutive requests of one group never share a process."""

    def __init__(self, clients: list[httpx.AsyncClient]) -> None:
        self._next = itertools.cycle(clients)
        self.calls = 0

    def __call__(self) -> httpx.AsyncClient:
        self.calls += 1
        return next(self._next)


async def one_group(api: RoundRobin, http: httpx.AsyncClient, key: dict[str, str], i: int) -> tuple[str, int]:
    """Create, get part URLs, PUT the bytes, complete (following 202s); returns (sessionId, libraryId)."""
    size = 6 * MIB if i % 10 == 0 else 1000 + i  # every tenth group multipart (2 parts), the rest single PUT
    body = {"videoName": f"scale {i}", "layout": "2D",
            "files": [{"fileName": "v.mp4", "fileRole": "video", "sizeBytes": size}]}  # fmt: skip
    r = await api().post("/api/videos/uploads", json=body, headers=key)
    assert r.status_code == 201, r.text
    doc = r.json()
    sid, uid = doc["sessionId"], doc["files"][0]["uploadId"]
    while True:
        r = await api().post(f"/api/videos/uploads/{sid}/files/{uid}/part-urls", headers=key)
        if r.status_code != 503:
            break
        await asyncio.sleep(float(r.headers["retry-after"]))
    assert r.status_code == 200, r.text
    data = os.urandom(size)
    parts = []
    for p in r.json()["parts"]:
        put = await http.put(p["url"], content=data[p["byteStart"] : p["byteEnd"]])
        assert put.status_code == 200, put.text
        parts.append({"partNumber": p["partNumber"], "etag": put.headers["etag"]})
    complete: dict[str, Any] = {"parts": parts} if doc["files"][0]["uploadStrategy"] == "multipart" else {}
    while True:
        r = await api().post(f"/api/videos/uploads/{sid}/files/{uid}/complete", json=complete, headers=key)
        if r.status_code == 200:
            return sid, r.json()["libraryId"]
        assert r.status_code == 202, r.text
        await asyncio.sleep(0.2)


async def test_two_apis_three_workers_one_killed_every_group_exactly_once(stack: Stack, worker_way: str) -> None:
    stack.start_stores()
    bases = [
        stack.start_api(SPATIALGEN_COMPLETE_WAIT_SECONDS="1"),
        stack.start_api(SPATIALGEN_COMPLETE_WAIT_SECONDS="1"),
    ]
    workers = [stack.start_worker() for _ in range(3)]
    key = await stack.key("scale")
    results: list[tuple[str, int]] = []
    started = time.monotonic()
    async with contextlib_clients(bases) as clients, httpx.AsyncClient(timeout=60) as http:
        api = RoundRobin(clients)
        gate = asyncio.Semaphore(CONCURRENCY)
        killed_after = 0

        async def run(i: int) -> None:
            nonlocal killed_after
            async with gate:
                results.append(await one_group(api, http, key, i))
                if len(results) == GROUPS // 2 and not killed_after:
                    sigkill(workers[0])  # midway: jobs in flight die with it
                    killed_after = len(results)

        await asyncio.gather(*(run(i) for i in range(GROUPS)))
    elapsed = time.monotonic() - started
    assert killed_after == GROUPS // 2 and workers[0].poll() is not None
    redis = Redis.from_url(stack.redis_url)
    try:
        state = UploadState(redis)
        sids = [sid for sid, _ in results]
        assert len(set(sids)) == GROUPS
        snaps = [await state.snapshot(sid) for sid in sids]
        assert all(s is not None and s.status == "completed" for s in snaps)
        libraries = dict(results)
        assert all(isinstance(lib, int) for lib in libraries.values())
        assert len(set(libraries.values())) == GROUPS  # one libraryId per group, never two groups one id
        assert all(s is not None and s.library_id == libraries[s.record.session_id] for s in snaps)
        assert await redis.zcard(stack.settings().worker.processing_queue_name) == GROUPS  # one processing job each
        assert await redis.hget(METRICS_KEY, MetricField.GROUPS_COMPLETED) == str(GROUPS).encode()
        settings = stack.settings().override(orphan_grace_seconds=0)
        async with ObjectStore.connect(settings.storage) as store:
            assert await store.list_open_uploads("") == []  # no duplicate or orphan multipart upload, before any sweep
            swept = await abort_orphan_uploads(state, store, settings, now=now_ms() + 1000)
            stored = [o async for page in store.object_pages("") for o in page if MARKER_NAME not in o.key]
        assert len(stored) == GROUPS  # one object per file, nothing extra
    finally:
        await redis.aclose()
    report(f"[{worker_way}] scale-out: {GROUPS} groups ({api.calls} API calls alternating over 2 API processes, "
           f"3 workers, one SIGKILLed after {killed_after}) completed in {elapsed:.1f} s; "
           f"{swept} stray uploads swept")  # fmt: skip


class contextlib_clients:
    """httpx clients for several base URLs, closed together."""

    def __init__(self, bases: list[str]) -> None:
        self.clients = [httpx.AsyncClient(base_url=b, timeout=60) for b in bases]

    async def __aenter__(self) -> list[httpx.AsyncClient]:
        return self.clients

    async def __aexit__(self, *exc: object) -> None:
        for c in self.clients:
            await c.aclose()
