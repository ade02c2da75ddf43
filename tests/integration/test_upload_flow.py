"""Part URLs, complete and cancel against real Valkey + moto, with real bytes PUT to presigned URLs."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from arq.jobs import deserialize_job
from arq.worker import Worker, func
from redis.asyncio import Redis

from app.settings import MIB, Settings
from app.state import UploadState
from app.state.apikeys import create_key
from app.state.jobs import deserialize, process_job_id
from app.state.keys import EXPIRY_INDEX, LIBRARY_COUNTER, METRICS_KEY, MetricField, arq_job_key
from app.storage.s3 import ObjectStore
from deploy.local.devstack import free_port
from tests.conftest import arq_pool, open_uploads, stored_objects
from tests.integration.conftest import api_client

Client = httpx.AsyncClient
URL = "/api/videos/uploads"


@pytest.fixture
def small_settings(settings: Settings) -> Settings:
    """5 MiB parts (S3's minimum) so tests move a few MiB, not gigabytes."""
    return settings.override(part_size_bytes=5 * MIB, provision_wait_seconds=5.0)


@pytest.fixture
async def api(small_settings: Settings, redis: Redis) -> AsyncIterator[Client]:
    async with api_client(small_settings) as c:
        yield c


@pytest.fixture
async def key(redis: Redis) -> dict[str, str]:
    secret, _ = await create_key(redis, account="acme", role="upload")
    return {"X-SPATIALGEN-APPKEY": secret}


def group_body(sizes: dict[str, int]) -> dict[str, Any]:
    names = {"video_left": "l.mov", "video_right": "r.mp4", "audio": "a.m4a", "subtitle": "s.srt"}
    files = []
    for role, size in sizes.items():
        f: dict[str, Any] = {"fileName": names[role], "fileRole": role, "sizeBytes": size}
        if role in ("audio", "subtitle"):
            f["languageTag"] = "en"
        files.append(f)
    return {"videoName": "flow", "layout": "Separate", "files": files}


SIZES = {"video_left": 11 * MIB + 7, "video_right": 5 * MIB + 1, "audio": 3 * MIB, "subtitle": 1234}


async def start(api: Client, key: dict[str, str], sizes: dict[str, int] = SIZES) -> dict[str, Any]:
    r = await api.post(URL, json=group_body(sizes), headers=key)
    assert r.status_code == 201, r.text
    doc: dict[str, Any] = r.json()
    return doc


async def upload_file(
    api: Client, key: dict[str, str], sid: str, f: dict[str, Any], data: bytes
) -> list[dict[str, Any]]:
    """Ask for every part URL, PUT the bytes with a plain HTTP client, return the complete body's parts."""
    r = await api.post(f"{URL}/{sid}/files/{f['uploadId']}/part-urls", headers=key)
    assert r.status_code == 200, r.text
    parts = []
    async with httpx.AsyncClient() as http:
        for p in r.json()["parts"]:
            put = await http.put(p["url"], content=data[p["byteStart"] : p["byteEnd"]], headers=p["headers"])
            assert put.status_code == 200, put.text
            parts.append({"partNumber": p["partNumber"], "etag": put.headers["etag"]})
    return parts


async def complete(
    api: Client, key: dict[str, str], sid: str, uid: str, parts: list[dict[str, Any]] | None
) -> httpx.Response:
    body = {} if parts is None else {"parts": parts}
    for _ in range(20):  # 202 means "still completing": repeating is the way to poll
        r = await api.post(f"{URL}/{sid}/files/{uid}/complete", json=body, headers=key)
        if r.status_code != 202:
            return r
    raise AssertionError("complete stayed 202")


async def test_whole_group_uploads_completes_and_hands_over_exactly_once(
    api: Client, key: dict[str, str], running_worker: Worker, redis: Redis, s3: Any, small_settings: Settings
) -> None:
    doc = await start(api, key)
    sid = doc["sessionId"]
    assert [f["totalParts"] for f in doc["files"]] == [3, 2, 1, 1]
    payloads = {f["uploadId"]: os.urandom(f["totalBytes"]) for f in doc["files"]}
    library_ids = []
    for f in doc["files"]:
        parts = await upload_file(api, key, sid, f, payloads[f["uploadId"]])
        r = await complete(api, key, sid, f["uploadId"], parts if f["uploadStrategy"] == "multipart" else None)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "completed"
        library_ids.append(r.json()["libraryId"])
    assert library_ids[:3] == [None, None, None]
    lib = library_ids[3]
    assert isinstance(lib, int) and lib >= 1
    # A repeat returns the same state, with the libraryId.
    again = await complete(api, key, sid, doc["files"][0]["uploadId"], None)
    assert again.status_code == 200 and again.json()["libraryId"] == lib

    snap = await UploadState(redis).snapshot(sid)
    assert snap is not None and snap.status == "completed" and snap.library_id == lib
    assert await redis.zscore(EXPIRY_INDEX, sid) is None
    for f in snap.record.files:
        head = s3.head_object(Bucket=small_settings.storage.bucket, Key=snap.record.storage_key(f))
        assert head["ContentLength"] == f.total_bytes
        got = s3.get_object(Bucket=small_settings.storage.bucket, Key=snap.record.storage_key(f))["Body"].read()
        assert got == payloads[f.upload_id]
    assert open_uploads(s3, small_settings.storage.bucket) == []

    record = await UploadState(redis).library_record(sid)
    assert record is not None and record["libraryId"] == lib and record["account"] == "acme"
    assert [x["storageKey"] for x in record["files"]] == [snap.record.storage_key(f) for f in snap.record.files]
    assert await redis.zcard(small_settings.worker.processing_queue_name) == 1
    job = deserialize_job(await redis.get(arq_job_key(process_job_id(sid))), deserializer=deserialize)
    assert job.function == "process_asset_set" and job.args == [record]


async def test_processing_job_runs_on_an_unmodified_arq_worker(
    api: Client, key: dict[str, str], running_worker: Worker, redis: Redis, small_settings: Settings
) -> None:
    doc = await start(api, key, {"video_left": 10, "video_right": 20})
    for f in doc["files"]:
        await upload_file(api, key, doc["sessionId"], f, b"x" * f["totalBytes"])
        assert (await complete(api, key, doc["sessionId"], f["uploadId"], None)).status_code == 200
    seen: list[dict[str, Any]] = []

    async def process_asset_set(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
        seen.append(payload)

    pool = arq_pool(small_settings.redis.url)
    # Configured as the README tells a downstream team: our queue name and any msgpack codec.
    downstream = Worker(
        functions=[func(process_asset_set, name="process_asset_set")],
        queue_name=small_settings.worker.processing_queue_name,
        job_serializer=msgspec.msgpack.encode,
        job_deserializer=msgspec.msgpack.decode,
        redis_pool=pool,
        burst=True,
        handle_signals=False,
        poll_delay=0.02,
    )
    await downstream.main()
    await downstream.close()
    await pool.aclose()
    assert len(seen) == 1
    assert seen[0]["sessionId"] == doc["sessionId"] and seen[0]["libraryId"] >= 1
    assert [f["sizeBytes"] for f in seen[0]["files"]] == [10, 20]


async def test_part_urls_shapes_ranges_and_selection(api: Client, key: dict[str, str], running_worker: Worker) -> None:
    doc = await start(api, key)
    sid, left = doc["sessionId"], doc["files"][0]
    base = f"{URL}/{sid}/files/{left['uploadId']}/part-urls"
    r = await api.post(base, headers=key)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "uploading" and body["uploadId"] == left["uploadId"]
    assert [(p["partNumber"], p["byteStart"], p["byteEnd"], p["sizeBytes"]) for p in body["parts"]] == [
        (1, 0, 5 * MIB, 5 * MIB), (2, 5 * MIB, 10 * MIB, 5 * MIB), (3, 10 * MIB, 11 * MIB + 7, MIB + 7)
    ]  # fmt: skip
    assert all(p["expiresAt"] <= doc["expiresAt"] and "X-Amz-Signature=" in p["url"] for p in body["parts"])
    r = await api.post(base, json={"partNumbers": [3, 1]}, headers=key)
    assert [p["partNumber"] for p in r.json()["parts"]] == [3, 1]
    r = await api.post(base, json={"startPartNumber": 2, "count": 10}, headers=key)
    assert [p["partNumber"] for p in r.json()["parts"]] == [2, 3]
    assert [p["headers"] for p in body["parts"]] == [{"Content-Length": str(p["sizeBytes"])} for p in body["parts"]]
    assert all("X-Amz-SignedHeaders=content-length%3Bhost&" in p["url"] for p in body["parts"])
    single = doc["files"][3]
    r = await api.post(f"{URL}/{sid}/files/{single['uploadId']}/part-urls", headers=key)
    assert r.status_code == 200 and len(r.json()["parts"]) == 1 and "uploadId=" not in r.json()["parts"][0]["url"]
    (put,) = r.json()["parts"]
    assert put["headers"] == {"Content-Length": "1234", "If-None-Match": "*", "Content-Type": "application/x-subrip"}
    assert "X-Amz-SignedHeaders=content-length%3Bcontent-type%3Bhost%3Bif-none-match&" in put["url"]


async def test_a_completed_single_put_object_cannot_be_replaced_through_its_url(
    api: Client, key: dict[str, str], running_worker: Worker, redis: Redis, s3: Any, small_settings: Settings
) -> None:
    doc = await start(api, key, {"video_left": 10, "video_right": 20})
    sid, left = doc["sessionId"], doc["files"][0]
    r = await api.post(f"{URL}/{sid}/files/{left['uploadId']}/part-urls", headers=key)
    (part,) = r.json()["parts"]
    async with httpx.AsyncClient() as http:
        first = await http.put(part["url"], content=b"a" * 10, headers=part["headers"])
        assert first.status_code == 200, first.text
        # A retry of a PUT whose answer was lost: storage already has the object and says so.
        retry = await http.put(part["url"], content=b"a" * 10, headers=part["headers"])
        assert retry.status_code == 412, retry.text
        assert (await complete(api, key, sid, left["uploadId"], None)).status_code == 200
        # After verification, the same URL with the headers its signature covers cannot replace the bytes.
        again = await http.put(part["url"], content=b"b" * 10, headers=part["headers"])
        assert again.status_code == 412, again.text
    snap = await UploadState(redis).snapshot(sid)
    assert snap is not None and snap.file_status(left["uploadId"]) == "completed"
    stored = s3.get_object(Bucket=small_settings.storage.bucket, Key=snap.record.storage_key(snap.record.files[0]))
    assert stored["Body"].read() == b"a" * 10


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"partNumbers": [1], "count": 1}, "partNumbers"),
        ({"partNumbers": [0]}, "partNumbers[0]"),
        ({"partNumbers": [4]}, "partNumbers[0]"),
        ({"partNumbers": [1, 1]}, "partNumbers[1]"),
        ({"partNumbers": []}, "partNumbers"),
        ({"partNumbers": ["1"]}, "partNumbers[0]"),
        ({"partNumbers": [True]}, "partNumbers[0]"),
        ({"startPartNumber": 4}, "startPartNumber"),
        ({"count": 0}, "count"),
        ({"count": 10001}, "count"),
        ({"count": 2.5}, "count"),
        ({"pages": 1}, "pages"),
        ([1], "$"),
    ],
)
async def test_part_urls_bad_selection_is_400(api: Client, key: dict[str, str], body: Any, path: str) -> None:
    doc = await start(api, key)
    r = await api.post(
        f"{URL}/{doc['sessionId']}/files/{doc['files'][0]['uploadId']}/part-urls", json=body, headers=key
    )
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"
    assert [e["path"] for e in r.json()["errors"]] == [path]


async def test_unknown_and_foreign_ids_are_404(api: Client, key: dict[str, str], redis: Redis) -> None:
    doc = await start(api, key)
    sid, uid = doc["sessionId"], doc["files"][0]["uploadId"]
    other, _ = await create_key(redis, account="globex", role="upload")
    cases = [
        (f"{URL}/{sid}/files/{uid}/part-urls", {"X-SPATIALGEN-APPKEY": other}, "session_not_found"),
        (f"{URL}/00000000-0000-4000-8000-000000000000/files/{uid}/part-urls", key, "session_not_found"),
        (f"{URL}/not-a-uuid}}x/files/{uid}/part-urls", key, "session_not_found"),
        (f"{URL}/{sid}/files/00000000-0000-4000-8000-000000000000/part-urls", key, "file_not_found"),
        (f"{URL}/{sid}/files/{uid}/complete", {"X-SPATIALGEN-APPKEY": other}, "session_not_found"),
    ]
    for url, headers, code in cases:
        r = await api.post(url, headers=headers)
        assert r.status_code == 404 and r.json()["code"] == code, (url, r.text)
    r = await api.delete(f"{URL}/{sid}", headers={"X-SPATIALGEN-APPKEY": other})
    assert r.status_code == 404


async def test_part_urls_provision_a_waiting_clients_file_at_once_without_any_worker(
    small_settings: Settings, redis: Redis, key: dict[str, str], store: ObjectStore, s3: Any
) -> None:
    async with api_client(small_settings) as api:
        doc = await start(api, key)  # no worker is running; the provisioning job stays queued
        sid, f = doc["sessionId"], doc["files"][0]
        r = await api.post(f"{URL}/{sid}/files/{f['uploadId']}/part-urls", headers=key)
    assert r.status_code == 200, r.text
    snap = await UploadState(redis).snapshot(sid)
    assert snap is not None and (s3_id := snap.s3_upload_id(f["uploadId"])) is not None
    assert [u["UploadId"] for u in open_uploads(s3, small_settings.storage.bucket, snap.record.storage_key(
        snap.record.files[0]))] == [s3_id]  # fmt: skip
    assert f"uploadId={s3_id}" in r.json()["parts"][0]["url"]


async def test_part_urls_503_while_storage_is_not_provisioned(
    small_settings: Settings, redis: Redis, key: dict[str, str]
) -> None:
    # Storage unreachable from the API: it cannot provision on demand, so it leaves it to the worker.
    dead_s3 = f"http://127.0.0.1:{free_port()}"
    quick = small_settings.override(provision_wait_seconds=0.2, s3_endpoint_url=dead_s3)
    async with api_client(quick) as api:
        doc = await start(api, key)  # no worker is running
        sid = doc["sessionId"]
        # The provisioning job is gone (it gave up, its result expired): part-urls queues it again.
        await redis.delete(arq_job_key(f"provision:{sid}"))
        await redis.zrem(small_settings.worker.queue_name, f"provision:{sid}")
        r = await api.post(f"{URL}/{sid}/files/{doc['files'][0]['uploadId']}/part-urls", headers=key)
    assert r.status_code == 503 and r.json()["code"] == "storage_not_ready" and r.headers["retry-after"] == "2"
    assert await redis.zscore(small_settings.worker.queue_name, f"provision:{sid}") is not None


async def test_complete_validation(api: Client, key: dict[str, str]) -> None:
    doc = await start(api, key)
    url = f"{URL}/{doc['sessionId']}/files/{doc['files'][0]['uploadId']}/complete"
    a, b, c = (f'"{ch * 32}"' for ch in "abc")
    cases = [
        ({}, ["parts"]),
        ({"parts": [{"partNumber": 1, "etag": a}, {"partNumber": 2, "etag": b}]}, ["parts"]),
        ({"parts": [{"partNumber": 1, "etag": a}, {"partNumber": 1, "etag": b}, {"partNumber": 3, "etag": c}]},
         ["parts[1].partNumber"]),
        ({"parts": [{"partNumber": 1, "etag": ""}, {"partNumber": 2}, {"partNumber": 9, "etag": c}]},
         ["parts[0].etag", "parts[1].etag", "parts[2].partNumber"]),
        ({"parts": [{"partNumber": n, "etag": "x" * 1000} for n in (1, 2, 3)]},
         ["parts[0].etag", "parts[1].etag", "parts[2].etag"]),
        ({"parts": "all"}, ["parts"]),
    ]  # fmt: skip
    for body, paths in cases:
        r = await api.post(url, json=body, headers=key)
        assert r.status_code == 400, r.text
        assert [e["path"] for e in r.json()["errors"]] == paths
    r = await api.post(url, content=b"{nope", headers=key)
    assert r.status_code == 400 and r.json()["code"] == "malformed_json"


async def test_wrong_etag_is_409_and_the_file_can_be_fixed(
    api: Client, key: dict[str, str], running_worker: Worker
) -> None:
    doc = await start(api, key, {"video_left": 6 * MIB, "video_right": 10})
    sid, left = doc["sessionId"], doc["files"][0]
    data = os.urandom(left["totalBytes"])
    parts = await upload_file(api, key, sid, left, data)
    bad = [parts[0], {"partNumber": 2, "etag": '"0123456789abcdef0123456789abcdef"'}]
    r = await complete(api, key, sid, left["uploadId"], bad)
    assert r.status_code == 409 and r.json()["code"] == "missing_parts", r.text
    # The stable reason and our sentence; storage's own message (moto's, S3's) stays in the worker's log.
    assert r.json()["reason"] == "missing_parts"
    assert "(missing_parts): storage does not hold every listed part with the listed ETag." in r.json()["detail"]
    assert "could not be found" not in r.json()["detail"]
    r = await complete(api, key, sid, left["uploadId"], parts)
    assert r.status_code == 200 and r.json()["status"] == "completed"


async def test_single_put_of_the_wrong_size_fails_the_file_and_group(
    api: Client, key: dict[str, str], running_worker: Worker, redis: Redis, s3: Any, small_settings: Settings
) -> None:
    doc = await start(api, key, {"video_left": 10, "video_right": 20})
    sid, left = doc["sessionId"], doc["files"][0]
    r = await complete(api, key, sid, left["uploadId"], None)  # nothing PUT yet
    assert r.status_code == 409 and r.json()["code"] == "missing_parts"
    await upload_file(api, key, sid, left, b"x" * 20)  # URL's range is 10 bytes; send 9
    r = await api.post(f"{URL}/{sid}/files/{left['uploadId']}/part-urls", headers=key)
    async with httpx.AsyncClient() as http:
        assert (await http.put(r.json()["parts"][0]["url"], content=b"y" * 9)).status_code == 200
    r = await complete(api, key, sid, left["uploadId"], None)
    assert r.status_code == 409 and r.json()["code"] == "file_failed"
    assert "9 bytes" in r.json()["detail"]
    snap = await UploadState(redis).snapshot(sid)
    assert snap is not None and snap.status == "failed" and snap.file_status(left["uploadId"]) == "failed"
    for _ in range(50):
        listed = stored_objects(s3, small_settings.storage.bucket)
        if not listed:
            break
        await asyncio.sleep(0.1)
    assert listed == []
    r = await api.post(f"{URL}/{sid}/files/{doc['files'][1]['uploadId']}/part-urls", headers=key)
    assert r.status_code == 409 and r.json()["code"] == "session_failed"


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_cancel_aborts_uploads_deletes_objects_and_locks_the_group(
    api: Client, key: dict[str, str], running_worker: Worker, s3: Any, small_settings: Settings
) -> None:
    doc = await start(api, key)
    sid = doc["sessionId"]
    left, sub = doc["files"][0], doc["files"][3]
    await upload_file(api, key, sid, left, os.urandom(left["totalBytes"]))
    await upload_file(api, key, sid, sub, b"s" * sub["totalBytes"])
    assert (await complete(api, key, sid, sub["uploadId"], None)).status_code == 200
    right = doc["files"][1]
    r = await api.post(f"{URL}/{sid}/files/{right['uploadId']}/part-urls", headers=key)  # opened, nothing sent
    assert r.status_code == 200, r.text
    # Storage uploads open for the files asked for: left and right eye (the subtitle is a single PUT; the audio's
    # upload is opened only when its URLs are asked for).
    assert len(open_uploads(s3, small_settings.storage.bucket)) == 2

    r = await api.delete(f"{URL}/{sid}", headers=key)
    assert r.status_code == 200, r.text
    first = r.json()
    assert list(first) == ["sessionId", "status", "canceledAt", "fileCount", "canceledFileCount"]
    assert first["status"] == "canceled" and first["fileCount"] == 4 and first["canceledFileCount"] == 3
    again = await api.delete(f"{URL}/{sid}", headers=key)
    assert again.status_code == 200 and again.json() == first

    async def storage_empty() -> bool:
        listed = stored_objects(s3, small_settings.storage.bucket)
        return not open_uploads(s3, small_settings.storage.bucket) and not listed

    await wait_for(storage_empty)
    for url in (f"{URL}/{sid}/files/{left['uploadId']}/part-urls", f"{URL}/{sid}/files/{left['uploadId']}/complete"):
        r = await api.post(url, headers=key)
        assert r.status_code == 409 and r.json()["code"] == "session_canceled", r.text


async def test_completed_group_cannot_be_canceled(api: Client, key: dict[str, str], running_worker: Worker) -> None:
    doc = await start(api, key, {"video_left": 10, "video_right": 20})
    for f in doc["files"]:
        await upload_file(api, key, doc["sessionId"], f, b"x" * f["totalBytes"])
        assert (await complete(api, key, doc["sessionId"], f["uploadId"], None)).status_code == 200
    r = await api.delete(f"{URL}/{doc['sessionId']}", headers=key)
    assert r.status_code == 409 and r.json()["code"] == "session_completed"
    r = await api.post(f"{URL}/{doc['sessionId']}/files/{doc['files'][0]['uploadId']}/part-urls", headers=key)
    assert r.status_code == 409 and r.json()["code"] == "session_completed"


async def test_many_concurrent_completes_make_exactly_one_library_record(
    api: Client, key: dict[str, str], running_worker: Worker, redis: Redis, small_settings: Settings
) -> None:
    doc = await start(api, key)
    sid = doc["sessionId"]
    parts_by_file = {}
    for f in doc["files"]:
        parts = await upload_file(api, key, sid, f, os.urandom(f["totalBytes"]))
        parts_by_file[f["uploadId"]] = parts if f["uploadStrategy"] == "multipart" else None
    calls = [complete(api, key, sid, uid, parts) for uid, parts in parts_by_file.items() for _ in range(8)]
    answers = await asyncio.gather(*calls)
    assert {r.status_code for r in answers} == {200}, [r.text for r in answers if r.status_code != 200]
    libs = {r.json()["libraryId"] for r in answers} - {None}
    assert len(libs) == 1
    # One id minted: the counter holds exactly it, and one group was counted completed.
    assert int(await redis.get(LIBRARY_COUNTER)) == libs.pop()
    assert await redis.hget(METRICS_KEY, MetricField.GROUPS_COMPLETED) == b"1"
    assert await redis.zcard(small_settings.worker.processing_queue_name) == 1


async def test_cancel_racing_the_last_complete_ends_in_exactly_one_outcome(
    api: Client, key: dict[str, str], running_worker: Worker, redis: Redis, small_settings: Settings
) -> None:
    outcomes = []
    for _ in range(6):
        doc = await start(api, key, {"video_left": 10, "video_right": 20})
        sid = doc["sessionId"]
        first, last = doc["files"]
        for f in doc["files"]:
            await upload_file(api, key, sid, f, b"x" * f["totalBytes"])
        assert (await complete(api, key, sid, first["uploadId"], None)).status_code == 200
        done, canceled = await asyncio.gather(
            complete(api, key, sid, last["uploadId"], None), api.delete(f"{URL}/{sid}", headers=key)
        )
        snap = await UploadState(redis).snapshot(sid)
        assert snap is not None
        processing = await redis.zscore(small_settings.worker.processing_queue_name, process_job_id(sid))
        if snap.status == "completed":
            assert done.status_code == 200 and done.json()["libraryId"] == snap.library_id
            assert canceled.status_code == 409 and processing is not None
        else:
            assert snap.status == "canceled" and snap.library_id is None
            assert canceled.status_code == 200 and processing is None
            assert done.status_code == 409
        outcomes.append(snap.status)
    total = await redis.zcard(small_settings.worker.processing_queue_name)
    assert total == outcomes.count("completed")
