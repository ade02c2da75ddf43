"""Redis loses its data, or is not the right one: not one stored object or open upload is deleted.

Real processes with the storage sweeps every 5 s and no grace period. Three groups are uploaded and completed and a
fourth is half uploaded; then Redis is emptied (FLUSHALL), restarted empty at its address (a restart without AOF),
a worker is started on the wrong database, or (Sentinel) a replica that lost the data is promoted. The sweeps keep
running and refuse to delete (counted in the metrics, reported by readiness and by `spatialgen-admin storage
identity`); storage is compared before and after, object by object and upload by upload.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from app.admin.cli import run as admin
from app.state.keys import METRICS_KEY, MetricField
from app.storage.s3 import ObjectStore
from app.upkeep.identity import marker_key
from deploy.local.devstack import DevValkey
from tests.faults.conftest import MASTER
from tests.processes import Stack, eventually, report

URL = "/api/videos/uploads"
SWEEPS_EVERY_5_S = {"SPATIALGEN_RECONCILE_SECONDS": "5", "SPATIALGEN_ORPHAN_SWEEP_SECONDS": "5",
                    "SPATIALGEN_ORPHAN_GRACE_SECONDS": "0"}  # fmt: skip
GROUP = {"videoName": "kept", "layout": "2D", "files": [
    {"fileName": "v.mp4", "fileRole": "video", "sizeBytes": 6 * 1024 * 1024},
    {"fileName": "s.srt", "fileRole": "subtitle", "sizeBytes": 100, "languageTag": "en"}]}  # fmt: skip


async def upload(api: httpx.AsyncClient, http: httpx.AsyncClient, key: dict[str, str], *, finish: bool) -> str:
    """One group's bytes PUT to storage; completed, or left half uploaded (an open multipart upload)."""
    doc = (await api.post(URL, json=GROUP, headers=key)).json()
    sid = doc["sessionId"]
    for f in doc["files"]:
        # A client follows Retry-After (503 while the API's S3 client is still starting: it opens uploads itself).
        for _ in range(30):
            r = await api.post(f"{URL}/{sid}/files/{f['uploadId']}/part-urls", headers=key)
            if r.status_code != 503:
                break
            await asyncio.sleep(float(r.headers["retry-after"]))
        assert r.status_code == 200, r.text
        parts = []
        for p in r.json()["parts"][: None if finish else 1]:
            put = await http.put(p["url"], content=os.urandom(p["sizeBytes"]), headers=p["headers"])
            assert put.status_code == 200, put.text
            parts.append({"partNumber": p["partNumber"], "etag": put.headers["etag"]})
        if finish:
            body: dict[str, Any] = {"parts": parts} if f["uploadStrategy"] == "multipart" else {}
            while (c := await api.post(f"{URL}/{sid}/files/{f['uploadId']}/complete", json=body, headers=key)) \
                    .status_code == 202:  # fmt: skip
                pass
            assert c.status_code == 200, c.text
    return sid


async def stored(stack: Stack) -> tuple[dict[str, str], set[tuple[str, str]]]:
    """Every object (key -> ETag) and every open multipart upload (key, id) in the bucket."""
    async with ObjectStore.connect(stack.settings().storage) as store:
        objects = {o.key: str(o.size) async for page in store.object_pages("") for o in page}
        etags = {k: str((await store.client.head_object(Bucket=store.bucket, Key=k))["ETag"]) for k in objects}
        uploads = {(u.key, u.upload_id) for u in await store.list_open_uploads("")}
    # The service's own marker counts by presence: the sweep that bound it may have run before the last completion,
    # and the next one raises its library high-water mark (a rewrite, app/upkeep/identity.py), not a deletion.
    marker = marker_key(stack.settings().storage.key_prefix)
    if marker in etags:
        etags[marker] = "present"
    return etags, uploads


async def prepared(stack: Stack, api_url: str) -> tuple[dict[str, str], set[tuple[str, str]]]:
    """Three completed groups and a half-uploaded one; returns storage once the sweeps have bound the bucket."""
    key = await stack.key("keep")
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as api, httpx.AsyncClient(timeout=30) as http:
        for _ in range(3):
            await upload(api, http, key, finish=True)
        await upload(api, http, key, finish=False)

    async def bound() -> bool:
        async with ObjectStore.connect(stack.settings().storage) as store:
            return await store.get_small(marker_key(stack.settings().storage.key_prefix)) is not None

    await eventually(bound, within=30)  # a first sweep ran and bound the bucket to this Redis
    before = await stored(stack)
    assert len(before[0]) == 3 * 2 + 1 + 1 and len(before[1]) == 1  # 7 files + the marker; 1 open upload
    return before


async def refused_twice(redis: Redis) -> bool:
    """Both storage sweeps have run (and refused) since Redis lost its data."""
    return int(await redis.hget(METRICS_KEY, MetricField.SWEEPS_REFUSED) or 0) >= 2


async def nothing_deleted(
    stack: Stack, redis: Redis, before: Any, what: str, api_url: str, *, api_sees_it: bool = True
) -> None:
    await eventually(lambda: refused_twice(redis), within=60)
    after = await stored(stack)
    assert after == before, f"{what}: storage changed"
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as api:
        checks = (await api.get("/health/ready")).json()["checks"]
    if api_sees_it:  # readiness reports it (and stays ready: it is a report, not a reason to leave rotation)
        assert checks["redisIdentity"] != "ok" and checks["redis"] == "ok", checks
    refused = int(await redis.hget(METRICS_KEY, MetricField.SWEEPS_REFUSED) or 0)
    report(f"{what}: {len(before[0]) - 1} objects and {len(before[1])} open upload intact; the sweeps refused "
           f"{refused} times; readiness redisIdentity: {checks['redisIdentity']!r}")  # fmt: skip


async def test_redis_emptied_by_flushall_deletes_nothing(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    stack.start_stores()
    base = stack.start_api(**SWEEPS_EVERY_5_S)
    stack.start_worker(**SWEEPS_EVERY_5_S)
    before = await prepared(stack, base)
    redis = Redis.from_url(stack.redis_url)
    try:
        await redis.flushall()
        await nothing_deleted(stack, redis, before, "FLUSHALL", base)
        # The operator's view says why (exit 1: deletion not allowed).
        for name, value in stack.env().items():
            if name.startswith("SPATIALGEN_"):
                monkeypatch.setenv(name, value)
        assert await admin(["storage", "identity"]) == 1
    finally:
        await redis.aclose()


async def test_redis_restarted_empty_deletes_nothing(stack: Stack) -> None:
    """A restart without its AOF: the address every process uses answers again, with no data."""
    stack.start_stores()
    base = stack.start_api(**SWEEPS_EVERY_5_S)
    stack.start_worker(**SWEEPS_EVERY_5_S)
    before = await prepared(stack, base)
    assert stack.valkey is not None
    stack.valkey.kill()
    shutil.rmtree(stack.valkey.data_dir)
    stack.valkey.start()
    redis = Redis.from_url(stack.redis_url)
    try:
        await nothing_deleted(stack, redis, before, "Valkey restarted empty", base)
    finally:
        await redis.aclose()


async def test_a_worker_on_the_wrong_database_deletes_nothing(stack: Stack) -> None:
    stack.start_stores()
    base = stack.start_api(**SWEEPS_EVERY_5_S)
    stack.start_worker(**SWEEPS_EVERY_5_S)
    before = await prepared(stack, base)
    wrong = stack.redis_url.rsplit("/", 1)[0] + "/1"
    stack.start_worker(SPATIALGEN_REDIS_URL=wrong, **SWEEPS_EVERY_5_S)  # its database is empty
    redis = Redis.from_url(wrong)
    try:
        await nothing_deleted(stack, redis, before, "a worker on database 1", base, api_sees_it=False)
    finally:
        await redis.aclose()


async def test_a_promoted_replica_that_lost_the_data_deletes_nothing(
    ha: tuple[Stack, DevValkey, list[DevValkey], list[int]],
) -> None:
    stack, primary, replicas, sentinel_ports = ha
    env = {"SPATIALGEN_REDIS_SENTINELS": ",".join(f"127.0.0.1:{p}" for p in sentinel_ports),
           "SPATIALGEN_REDIS_SENTINEL_MASTER": MASTER, **SWEEPS_EVERY_5_S}  # fmt: skip
    base = stack.start_api(**env)
    stack.start_worker(**env)
    before = await prepared(stack, base)
    for replica in replicas:  # each replica loses what it had (it keeps following the primary's new writes)
        client = Redis.from_url(replica.url)
        await client.config_set("replica-read-only", "no")
        await client.flushall()
        await client.aclose()
    primary.kill()  # Sentinel promotes one of them

    async def promoted() -> str | None:
        for replica in replicas:
            client = Redis.from_url(replica.url)
            try:
                if (await client.info("replication"))["role"] == "master":
                    return replica.url
            finally:
                await client.aclose()
        return None

    new_primary = await eventually(promoted, within=60)
    redis = Redis.from_url(new_primary)
    try:
        await nothing_deleted(stack, redis, before, "empty replica promoted by Sentinel", base)
    finally:
        await redis.aclose()
