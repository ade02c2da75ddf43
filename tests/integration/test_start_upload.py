"""POST /api/videos/uploads against a real Valkey: the 201 shape, state written, auth, idempotency, bad input."""

from __future__ import annotations

import asyncio
import copy
import json
import re
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from app.settings import Settings
from app.state import UploadState
from app.state.apikeys import create_key
from app.state.keys import EXPIRY_INDEX, account_index_key, group_key, state_key
from deploy.local.devstack import free_port
from tests.conftest import SEED_REQUEST
from tests.integration.conftest import api_client

URL = "/api/videos/uploads"
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
Client = httpx.AsyncClient


def h(key: str, **extra: str) -> dict[str, str]:
    return {"X-SPATIALGEN-APPKEY": key, "Content-Type": "application/json", **extra}


async def test_seed_example_creates_group(client: Client, upload_key: str, redis: Redis, settings: Settings) -> None:
    r = await client.post(URL, json=SEED_REQUEST, headers=h(upload_key))
    assert r.status_code == 201, r.text
    assert r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert list(doc) == ["sessionId", "expiresAt", "videoName", "fileCount", "files"]
    assert UUID4.match(doc["sessionId"])
    assert r.headers["location"] == f"{URL}/{doc['sessionId']}"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["expiresAt"])
    assert doc["videoName"] == "My Spatial Video" and doc["fileCount"] == 4
    got = [(f["fileRole"], f["fileName"], f["totalBytes"], f["partSizeBytes"], f["totalParts"], f["uploadStrategy"])
           for f in doc["files"]]  # fmt: skip
    assert got == [
        ("video_left", "left-eye.mov", 1287340032, 104857600, 13, "multipart"),
        ("video_right", "right-eye.mov", 1287341024, 104857600, 13, "multipart"),
        ("audio", "english-audio.mp4", 187340032, 104857600, 2, "multipart"),
        ("subtitle", "english-subtitles.srt", 2401, 2401, 1, "single_put"),
    ]
    for f in doc["files"]:
        assert list(f) == ["uploadId", "fileRole", "fileName", "totalBytes", "partSizeBytes", "totalParts",
                           "uploadStrategy", "status"]  # fmt: skip
        assert UUID4.match(f["uploadId"]) and f["status"] == "initialized"

    sid = doc["sessionId"]
    snap = await UploadState(redis).snapshot(sid)
    assert snap is not None
    assert snap.record.account == "acme" and snap.status == "initialized"
    exts = [".mov", ".mov", ".mp4", ".srt"]
    expected_keys = [f"uploads/acme/{sid}/{f['uploadId']}{ext}" for f, ext in zip(doc["files"], exts, strict=True)]
    assert [snap.record.storage_key(f) for f in snap.record.files] == expected_keys
    assert all(snap.file_status(f["uploadId"]) == "initialized" for f in doc["files"])
    assert snap.record.expires_ms == snap.record.created_ms + settings.uploads.session_ttl_seconds * 1000
    # Until its first part-urls call the group is idle: it is due for expiry early (keys.EXPIRY_INDEX).
    assert await redis.zscore(EXPIRY_INDEX, sid) == snap.record.created_ms + settings.uploads.idle_group_seconds * 1000
    f = doc["files"][-1]  # the single_put subtitle: no provisioning needed
    r = await client.post(f"{URL}/{sid}/files/{f['uploadId']}/part-urls", headers=h(upload_key))
    assert r.status_code == 200, r.text
    assert await redis.zscore(EXPIRY_INDEX, sid) == snap.record.expires_ms  # in use: the full lifetime
    assert await redis.zscore(account_index_key("acme"), sid) == snap.record.created_ms
    ttl = await redis.pttl(group_key(sid))
    assert 0 < ttl <= (settings.uploads.session_ttl_seconds + settings.uploads.retention_seconds) * 1000
    assert await redis.pttl(state_key(sid)) > 0

    # A create queues no work and touches no storage: uploads are opened when their URLs are first asked for.
    assert await redis.zcard(settings.worker.queue_name) == 0


async def test_unicode_and_trimmed_names_round_trip(client: Client, upload_key: str) -> None:
    req = {"videoName": "  Ünïcødé 🎬 视频  ", "layout": "2D",
           "files": [{"fileName": "видео 1.MP4", "fileRole": "video", "sizeBytes": 5}]}  # fmt: skip
    r = await client.post(URL, json=req, headers=h(upload_key))
    assert r.status_code == 201, r.text
    assert r.json()["videoName"] == "Ünïcødé 🎬 视频"
    assert r.json()["files"][0]["fileName"] == "видео 1.MP4"


async def test_validation_errors_are_problem_json_with_every_path(client: Client, upload_key: str) -> None:
    bad = copy.deepcopy(SEED_REQUEST)
    bad["files"][2]["languageTag"] = "klingon"
    bad["files"][3]["fileName"] = "subs.txt"
    bad["files"].append({"fileName": "x.mov", "fileRole": "video_left", "sizeBytes": 1})
    r = await client.post(URL, json=bad, headers=h(upload_key))
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/problem+json")
    doc = r.json()
    assert doc["status"] == 400 and doc["code"] == "invalid_request" and doc["title"] and doc["detail"]
    assert [e["path"] for e in doc["errors"]] == ["files[2].languageTag", "files[3].fileName", "files[4].fileRole"]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{", "malformed_json"),
        (b"", "malformed_json"),
        (b"\xff\xfe", "malformed_json"),
        (b'{"videoName": 1e999}', "malformed_json"),
        (b"[]", "invalid_request"),
        (b"null", "invalid_request"),
        (b"[" * 100_000, "malformed_json"),
    ],
)
async def test_malformed_bodies(client: Client, upload_key: str, raw: bytes, code: str, redis: Redis) -> None:
    r = await client.post(URL, content=raw, headers=h(upload_key))
    assert r.status_code == 400, r.text
    assert r.json()["code"] == code
    assert await redis.zcard(EXPIRY_INDEX) == 0  # nothing written


async def test_body_over_the_limit_is_413(client: Client, upload_key: str, settings: Settings) -> None:
    big = json.dumps({**SEED_REQUEST, "description": "x" * (settings.api.max_body_bytes + 10)})
    r = await client.post(URL, content=big, headers=h(upload_key))
    assert r.status_code == 413 and r.json()["code"] == "body_too_large"


async def test_non_json_content_type_is_415(client: Client, upload_key: str) -> None:
    r = await client.post(URL, content=b"videoName=x", headers=h(upload_key, **{"Content-Type": "text/plain"}))
    assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type"


async def test_auth(client: Client, redis: Redis) -> None:
    r = await client.post(URL, json=SEED_REQUEST)
    assert r.status_code == 401 and r.json()["code"] == "missing_api_key"
    r = await client.post(URL, json=SEED_REQUEST, headers=h("sgk_nope"))
    assert r.status_code == 401 and r.json()["code"] == "invalid_api_key"
    readonly, _ = await create_key(redis, account="acme", role="readonly")
    r = await client.post(URL, json=SEED_REQUEST, headers=h(readonly))
    assert r.status_code == 403 and r.json()["code"] == "role_not_allowed"
    admin, _ = await create_key(redis, account="acme", role="admin")
    assert (await client.post(URL, json=SEED_REQUEST, headers=h(admin))).status_code == 201


async def test_idempotency_key_replays_and_conflicts(client: Client, upload_key: str, redis: Redis) -> None:
    first = await client.post(URL, json=SEED_REQUEST, headers=h(upload_key, **{"Idempotency-Key": "k-1"}))
    assert first.status_code == 201
    # Same body, reformatted and reordered: still the same request.
    same = json.dumps(dict(reversed(list(SEED_REQUEST.items()))), indent=2)
    again = await client.post(URL, content=same, headers=h(upload_key, **{"Idempotency-Key": "k-1"}))
    assert again.status_code == 201 and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    other = await client.post(URL, json={**SEED_REQUEST, "videoName": "Other"},
                              headers=h(upload_key, **{"Idempotency-Key": "k-1"}))  # fmt: skip
    assert other.status_code == 409 and other.json()["code"] == "idempotency_key_reused"
    assert await redis.zcard(EXPIRY_INDEX) == 1
    # Another account's identical key is a different request.
    theirs, _ = await create_key(redis, account="globex", role="upload")
    r = await client.post(URL, json=SEED_REQUEST, headers=h(theirs, **{"Idempotency-Key": "k-1"}))
    assert r.status_code == 201 and r.json()["sessionId"] != first.json()["sessionId"]


async def test_concurrent_retries_with_one_key_create_one_group(client: Client, upload_key: str, redis: Redis) -> None:
    hdr = h(upload_key, **{"Idempotency-Key": "burst"})
    answers = await asyncio.gather(*(client.post(URL, json=SEED_REQUEST, headers=hdr) for _ in range(20)))
    assert {r.status_code for r in answers} == {201}
    assert len({r.json()["sessionId"] for r in answers}) == 1
    assert await redis.zcard(EXPIRY_INDEX) == 1


@pytest.mark.parametrize("value", [b"", b"x" * 256, "ключ".encode(), b"a\tb"])
async def test_bad_idempotency_key_header(client: Client, upload_key: str, value: bytes, redis: Redis) -> None:
    hdr: dict[str, Any] = {"X-SPATIALGEN-APPKEY": upload_key, "Idempotency-Key": value}
    r = await client.post(URL, content=json.dumps(SEED_REQUEST).encode(), headers=hdr)
    assert r.status_code == 400 and r.json()["code"] == "invalid_header"
    assert await redis.zcard(EXPIRY_INDEX) == 0


async def test_unknown_route_and_wrong_method_are_problem_json(client: Client, upload_key: str) -> None:
    r = await client.get("/api/nope", headers=h(upload_key))
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    r = await client.put(URL, headers=h(upload_key))
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"


async def test_redis_down_is_503_not_500(settings: Settings) -> None:
    dead = settings.override(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with api_client(dead) as c:
        r = await c.post(URL, json=SEED_REQUEST, headers=h("sgk_whatever"))
    assert r.status_code == 503 and r.json()["code"] == "dependency_unavailable"
    assert r.headers["retry-after"] == "5"
