"""Expiry sweep, orphan sweep, parts tracking and the status endpoints, against real Valkey + moto."""

from __future__ import annotations

import asyncio
import copy
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from arq.worker import Worker
from redis.asyncio import Redis

from app.domain.clock import ManualClock
from app.settings import MIB, Settings
from app.state import UploadState
from app.state.apikeys import Principal, Role, create_key
from app.state.jobs import PROVISION_JOB, JobSpec, ending, provision_job_id, refresh_job_id
from app.state.keys import EXPIRY_INDEX, group_key, parts_key, state_key
from app.storage.s3 import ObjectStore
from app.upkeep.cleanup import abort_orphan_uploads
from app.upkeep.expiry import expire_due_groups
from app.uploads import cancel, start
from app.uploads.service import UploadService
from app.uploads.status import refresh_parts
from tests.conftest import SEED_REQUEST, open_uploads, stored_objects
from tests.integration.conftest import api_client

URL = "/api/videos/uploads"
ACME = Principal("acme", Role.UPLOAD, "test")


@pytest.fixture
def small(settings: Settings) -> Settings:
    return settings.override(part_size_bytes=5 * MIB, parts_staleness_seconds=0.0)


@pytest.fixture
async def api(small: Settings, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(small) as c:
        yield c


@pytest.fixture
async def key(redis: Redis) -> dict[str, str]:
    secret, _ = await create_key(redis, account="acme", role="upload")
    return {"X-SPATIALGEN-APPKEY": secret}


async def new_groups(settings: Settings, state: UploadState, n: int) -> list[str]:
    service = UploadService(settings, state)
    body = msgspec.json.encode(SEED_REQUEST)
    return [(await start.start_upload_group(service, ACME, body, None)).session_id for _ in range(n)]


async def eventually(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_short_ttl_group_expires_and_leaves_nothing_in_storage(
    small: Settings, redis: Redis, key: dict[str, str], running_worker: Worker, s3: Any
) -> None:
    short = small.override(session_ttl_seconds=60)
    clock = ManualClock()  # the API's "now": moved past expiresAt below instead of waiting for it
    async with api_client(short, clock=clock) as api:
        body = {"videoName": "short", "layout": "Separate", "files": [
            {"fileName": "l.mov", "fileRole": "video_left", "sizeBytes": 6 * MIB},
            {"fileName": "r.mov", "fileRole": "video_right", "sizeBytes": 100}]}  # fmt: skip
        doc = (await api.post(URL, json=body, headers=key)).json()
        sid, left, right = doc["sessionId"], doc["files"][0], doc["files"][1]
        async with httpx.AsyncClient() as http:
            for f, size in ((left, 5 * MIB), (right, 100)):
                part = (await api.post(f"{URL}/{sid}/files/{f['uploadId']}/part-urls", headers=key)).json()["parts"][0]
                assert (await http.put(part["url"], content=os.urandom(size))).status_code == 200
        assert len(open_uploads(s3, short.storage.bucket)) == 1
        snap = await UploadState(redis).snapshot(sid)
        assert snap is not None
        clock.ms = snap.record.expires_ms  # the moment it expires
        # Past expiresAt: 409 expired even though no sweep has run yet.
        r = await api.post(f"{URL}/{sid}/files/{left['uploadId']}/part-urls", headers=key)
        assert r.status_code == 409 and r.json()["code"] == "session_expired"
        assert (await api.get(f"{URL}/{sid}", headers=key)).json()["status"] == "expired"

    assert await expire_due_groups(UploadState(redis), short, now=clock.now_ms()) == 1
    snap = await UploadState(redis).snapshot(sid)
    assert snap is not None and snap.status == "expired"
    assert {snap.file_status(f["uploadId"]) for f in doc["files"]} == {"expired"}
    assert await redis.zscore(EXPIRY_INDEX, sid) is None
    assert 0 < await redis.pttl(state_key(sid)) <= short.uploads.retention_seconds * 1000

    async def storage_empty() -> bool:
        objects = stored_objects(s3, short.storage.bucket)
        return not objects and not open_uploads(s3, short.storage.bucket)

    await eventually(storage_empty)


async def test_concurrent_sweeps_expire_each_group_once(settings: Settings, state: UploadState, redis: Redis) -> None:
    sids = await new_groups(settings, state, 40)
    later = int(time.time() * 1000) + settings.uploads.session_ttl_seconds * 1000 + 1
    counts = await asyncio.gather(*(expire_due_groups(state, settings, now=later) for _ in range(4)))
    assert sum(counts) == 40
    assert await redis.zcard(EXPIRY_INDEX) == 0
    for sid in sids:
        assert (await state.snapshot(sid)).status == "expired"  # type: ignore[union-attr]
        assert await redis.zscore(settings.worker.queue_name, f"purge:{sid}") is not None
    # One immediate and one late purge per group, never duplicated (a create queues nothing).
    assert await redis.zcard(settings.worker.queue_name) == 40 * 2


async def test_a_sweep_that_died_halfway_is_finished_by_the_next(settings: Settings, state: UploadState) -> None:
    sids = await new_groups(settings, state, 10)
    later = int(time.time() * 1000) + settings.uploads.session_ttl_seconds * 1000 + 1
    half = sids[:5]
    await state.expire_groups(half, now_ms=later, idle_retention_ms=1000, ends=[ending(settings, s, "") for s in half])
    assert await expire_due_groups(state, settings, now=later) == 5
    assert {(await state.snapshot(s)).status for s in sids} == {"expired"}  # type: ignore[union-attr]


async def test_index_never_keeps_dead_entries(settings: Settings, state: UploadState, redis: Redis) -> None:
    sids = await new_groups(settings, state, 3)
    await redis.delete(group_key(sids[0]), state_key(sids[0]))  # keys gone (retention TTL)
    assert await expire_due_groups(state, settings) == 0  # nothing due yet
    later = int(time.time() * 1000) + settings.uploads.session_ttl_seconds * 1000 + 1
    assert await expire_due_groups(state, settings, now=later) == 2
    assert await redis.zcard(EXPIRY_INDEX) == 0


async def test_uploads_are_aborted_on_evidence_and_never_on_absence(
    settings: Settings, state: UploadState, store: ObjectStore, burst: Any, s3: Any
) -> None:
    (sid,) = await new_groups(settings, state, 1)
    queue = settings.worker.queue_name
    await state.enqueue(JobSpec.build(PROVISION_JOB, (sid,), job_id=provision_job_id(sid), queue=queue))
    await burst()
    snap = await state.snapshot(sid)
    assert snap is not None
    left = snap.record.files[0]
    owned = snap.s3_upload_id(left.upload_id)
    extra = await store.create_multipart(snap.record.storage_key(left))  # a second upload for a live file
    # A group Redis has no record of (its data lost, or another Redis's): never judged by absence.
    unknown = await store.create_multipart(f"uploads/acme/00000000-0000-4000-8000-000000000000/{left.upload_id}.mov")
    foreign = await store.create_multipart("uploads/not-ours.bin")
    # A group recorded as canceled whose keys are gone: its end record is the evidence.
    (ended_sid,) = await new_groups(settings, state, 1)
    await cancel.cancel_group(UploadService(settings, state), ACME, ended_sid)
    ended_snap = await state.snapshot(ended_sid)
    assert ended_snap is not None
    ended_upload = await store.create_multipart(ended_snap.record.storage_key(ended_snap.record.files[0]))
    await state.redis.delete(group_key(ended_sid), state_key(ended_sid))
    grace0 = settings.override(orphan_grace_seconds=0)
    assert await abort_orphan_uploads(state, store, grace0) == 2
    left_open = {u["UploadId"] for u in open_uploads(s3, settings.storage.bucket)}
    assert {owned, foreign, unknown} <= left_open
    assert extra not in left_open and ended_upload not in left_open
    # Within the grace period nothing is touched.
    await store.create_multipart(f"uploads/acme/00000000-0000-4000-8000-000000000001/{left.upload_id}.mov")
    young = settings.override(orphan_grace_seconds=10**9)
    assert await abort_orphan_uploads(state, store, young) == 0


async def test_status_and_parts_show_what_storage_received(
    api: httpx.AsyncClient, key: dict[str, str], redis: Redis, running_worker: Worker, small: Settings
) -> None:
    body = {"videoName": "progress", "layout": "2D", "files": [
        {"fileName": "v.mp4", "fileRole": "video", "sizeBytes": 12 * MIB},
        {"fileName": "s.srt", "fileRole": "subtitle", "sizeBytes": 50, "languageTag": "EN"}]}  # fmt: skip
    doc = (await api.post(URL, json=body, headers=key)).json()
    sid, video = doc["sessionId"], doc["files"][0]
    parts = (await api.post(f"{URL}/{sid}/files/{video['uploadId']}/part-urls", headers=key)).json()["parts"]
    etags = {}
    async with httpx.AsyncClient() as http:
        for p in parts[:2]:
            r = await http.put(p["url"], content=os.urandom(p["sizeBytes"]))
            etags[p["partNumber"]] = r.headers["etag"]

    readonly, _ = await create_key(redis, account="acme", role="readonly")
    ro = {"X-SPATIALGEN-APPKEY": readonly}

    async def tracked() -> bool:
        doc = (await api.get(f"{URL}/{sid}", headers=ro)).json()
        return bool(doc["files"][0]["uploadedParts"] == 2)

    await eventually(tracked)
    status = (await api.get(f"{URL}/{sid}", headers=ro)).json()
    assert status["status"] == "uploading" and status["fileCount"] == 2 and status["libraryId"] is None
    f0 = status["files"][0]
    assert (f0["status"], f0["totalParts"], f0["uploadedParts"], f0["uploadedBytes"]) == ("uploading", 3, 2, 10 * MIB)
    assert status["files"][1]["languageTag"] == "en" and status["files"][1]["uploadedParts"] == 0

    r = await api.get(f"{URL}/{sid}/files/{video['uploadId']}/parts", headers=ro)
    assert r.status_code == 200
    got = r.json()
    assert got["refreshedAt"] is not None and got["totalParts"] == 3
    assert [(p["partNumber"], p["etag"], p["sizeBytes"]) for p in got["parts"]] == [
        (1, etags[1], 5 * MIB), (2, etags[2], 5 * MIB)
    ]  # fmt: skip
    # The part list is a cache: once it lapses, the next read refreshes it even when the summary is fresh.
    await redis.delete(parts_key(sid, video["uploadId"]))
    async with api_client(small.override(parts_staleness_seconds=3600)) as patient:
        again = (await patient.get(f"{URL}/{sid}/files/{video['uploadId']}/parts", headers=ro)).json()
    assert [p["partNumber"] for p in again["parts"]] == [1, 2]
    # Readonly keys may read but not write.
    r = await api.post(f"{URL}/{sid}/files/{video['uploadId']}/part-urls", headers=ro)
    assert r.status_code == 403

    # Resume from another machine: the etags come from GET .../parts, then the last part, then complete.
    async with httpx.AsyncClient() as http:
        last = await http.put(parts[2]["url"], content=os.urandom(parts[2]["sizeBytes"]))
    body_parts = [{"partNumber": p["partNumber"], "etag": p["etag"]} for p in got["parts"]]
    body_parts.append({"partNumber": 3, "etag": last.headers["etag"]})
    r = await api.post(f"{URL}/{sid}/files/{video['uploadId']}/complete", json={"parts": body_parts}, headers=key)
    assert r.status_code == 200, r.text
    done = (await api.get(f"{URL}/{sid}", headers=ro)).json()["files"][0]
    assert (done["status"], done["uploadedParts"], done["uploadedBytes"]) == ("completed", 3, 12 * MIB)


async def test_many_pollers_of_many_files_queue_one_refresh_per_group(
    api: httpx.AsyncClient, key: dict[str, str], redis: Redis, small: Settings
) -> None:
    small_files = copy.deepcopy(SEED_REQUEST)
    for f in small_files["files"]:
        f["sizeBytes"] = 1000  # single PUTs: URLs without provisioning (no worker runs here)
    doc = (await api.post(URL, json=small_files, headers=key)).json()
    sid = doc["sessionId"]
    empty = await asyncio.gather(*(api.get(f"{URL}/{sid}", headers=key) for _ in range(5)))
    assert {r.status_code for r in empty} == {200}
    assert await redis.zcard(small.worker.queue_name) == 0  # no URL issued yet: storage holds nothing to look at
    for f in doc["files"]:
        assert (await api.post(f"{URL}/{sid}/files/{f['uploadId']}/part-urls", headers=key)).status_code == 200
    answers = await asyncio.gather(*(api.get(f"{URL}/{sid}", headers=key) for _ in range(25)))
    assert {r.status_code for r in answers} == {200}
    queued = [m.decode() for m in await redis.zrange(small.worker.queue_name, 0, -1)]
    refreshes = [q for q in queued if q.startswith("parts:")]
    assert refreshes == [refresh_job_id(sid)]  # four files receiving bytes, 25 readers: one job


async def test_refresh_of_a_single_put_file_uses_head_object(
    small: Settings, state: UploadState, store: ObjectStore, s3: Any
) -> None:
    service = UploadService(small, state)
    body = {"videoName": "x", "layout": "2D", "files": [{"fileName": "v.mp4", "fileRole": "video", "sizeBytes": 7}]}
    sid = (await start.start_upload_group(service, ACME, msgspec.json.encode(body), None)).session_id
    snap0 = await state.snapshot(sid)
    assert snap0 is not None
    f = snap0.record.files[0]
    assert await refresh_parts(state, store, sid, f.upload_id) == 0
    s3.put_object(Bucket=small.storage.bucket, Key=snap0.record.storage_key(f), Body=b"1234567")
    assert await refresh_parts(state, store, sid, f.upload_id) == 1
    assert (await state.snapshot(sid)).progress(f.upload_id)[:2] == (1, 7)  # type: ignore[union-attr]
