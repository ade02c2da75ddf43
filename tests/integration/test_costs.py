"""Requests pay for the work they cause (issue 17), through the HTTP layer on a real Valkey and moto: part-urls one
token per URL, a complete that starts a completion one more per 100 parts, a read that refreshes tracking one more
per file; a bounded number of completion attempts per file; large answers streamed whole and in order."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import httpx
import pytest
from arq.worker import Worker
from redis.asyncio import Redis

from app.settings import MIB, Settings
from app.state.apikeys import create_key
from app.storage.s3 import ObjectStore
from tests.integration.conftest import api_client

URL = "/api/videos/uploads"


@pytest.fixture
async def key(redis: Redis) -> dict[str, str]:
    secret, _ = await create_key(redis, account="acme", role="upload")
    return {"X-SPATIALGEN-APPKEY": secret}


def video(parts: int) -> dict[str, Any]:
    return {"videoName": "v", "layout": "2D",
            "files": [{"fileName": "v.mp4", "fileRole": "video", "sizeBytes": parts * 5 * MIB}]}  # fmt: skip


def left(header: str) -> int:
    """`r` of a RateLimit header: the tokens left."""
    return int(header.split(";r=")[1].split(";", maxsplit=1)[0])


async def start(api: httpx.AsyncClient, key: dict[str, str], body: dict[str, Any]) -> tuple[str, list[str]]:
    r = await api.post(URL, json=body, headers=key)
    assert r.status_code == 201, r.text
    return r.json()["sessionId"], [f["uploadId"] for f in r.json()["files"]]


async def test_part_urls_cost_one_token_per_url(
    settings: Settings, redis: Redis, key: dict[str, str], store: ObjectStore
) -> None:
    tight = settings.override(part_size_bytes=5 * MIB, rate_limits="part_urls=10/100")
    async with api_client(tight) as api:
        sid, (uid,) = await start(api, key, video(60))
        url = f"{URL}/{sid}/files/{uid}/part-urls"
        r = await api.post(url, headers=key)  # every URL: 60 tokens
        assert r.status_code == 200 and len(r.json()["parts"]) == 60
        assert left(r.headers["ratelimit"]) in (40, 41)  # 40, and the refill of the ms it took
        again = await api.post(url, headers=key)
        assert again.status_code == 429 and again.json()["code"] == "rate_limited"
        assert again.json()["cost"] == 60 and "part URLs signed" in again.json()["detail"]
        assert int(again.headers["retry-after"]) >= 2  # 20 more tokens at 10 a second
        batch = await api.post(url, json={"startPartNumber": 31, "count": 30}, headers=key)
        assert batch.status_code == 200 and [p["partNumber"] for p in batch.json()["parts"]] == list(range(31, 61))
        assert left(batch.headers["ratelimit"]) < 15

        big_sid, (big,) = await start(api, key, video(150))
        never = await api.post(f"{URL}/{big_sid}/files/{big}/part-urls", headers=key)  # 150 > the bucket's 100
        assert never.status_code == 400 and never.json()["code"] == "invalid_request", never.text
        assert (never.json()["cost"], never.json()["limit"]) == (150, 100)
        assert "retry-after" not in never.headers and "partNumbers" in never.json()["detail"]


async def test_a_complete_that_starts_a_completion_pays_per_100_parts(
    settings: Settings, redis: Redis, key: dict[str, str], store: ObjectStore
) -> None:
    tight = settings.override(part_size_bytes=5 * MIB, rate_limits="complete=1/20", complete_wait_seconds=0.0)
    async with api_client(tight) as api:
        sid, (uid,) = await start(api, key, video(250))
        assert (await api.post(f"{URL}/{sid}/files/{uid}/part-urls", headers=key)).status_code == 200
        body = {"parts": [{"partNumber": n, "etag": f'"{n:032x}"'} for n in range(1, 251)]}
        first = await api.post(f"{URL}/{sid}/files/{uid}/complete", json=body, headers=key)
        assert first.status_code == 202, first.text  # no worker here: the completion stays queued
        assert left(first.headers["ratelimit"]) == 17  # 1 for the call, 2 for 250 parts
        repeat = await api.post(f"{URL}/{sid}/files/{uid}/complete", json=body, headers=key)
        assert repeat.status_code == 202 and left(repeat.headers["ratelimit"]) == 16  # a follow-up: its own token


async def test_completions_per_file_are_capped(
    settings: Settings, redis: Redis, key: dict[str, str], running_worker: Worker
) -> None:
    capped = settings.override(part_size_bytes=5 * MIB, complete_attempts=3, complete_wait_seconds=10.0)
    async with api_client(capped) as api:
        sid, (uid,) = await start(api, key, video(2))
        assert (await api.post(f"{URL}/{sid}/files/{uid}/part-urls", headers=key)).status_code == 200
        body = {"parts": [{"partNumber": n, "etag": f'"{n:032x}"'} for n in (1, 2)]}  # nothing was uploaded
        for _ in range(3):  # each starts a completion storage refuses
            r = await api.post(f"{URL}/{sid}/files/{uid}/complete", json=body, headers=key)
            assert r.status_code == 409 and r.json()["code"] == "missing_parts", r.text
        over = await api.post(f"{URL}/{sid}/files/{uid}/complete", json=body, headers=key)
        assert over.status_code == 409 and over.json()["code"] == "completion_attempts_exhausted", over.text
        assert (over.json()["attempts"], over.json()["maxAttempts"]) == (3, 3)
        status = (await api.get(f"{URL}/{sid}", headers=key)).json()
        assert status["files"][0]["status"] == "uploading"  # refused before anything changed
        assert (await api.delete(f"{URL}/{sid}", headers=key)).status_code == 200  # the way out: cancel


async def test_a_read_pays_for_the_refresh_it_queues_and_is_answered_without_one_when_it_cannot(
    settings: Settings, redis: Redis, key: dict[str, str], store: ObjectStore
) -> None:
    tight = settings.override(rate_limits="reads=1/8", parts_staleness_seconds=0.0)
    body = {"videoName": "v", "layout": "Separate", "files": [
        {"fileName": "l.mov", "fileRole": "video_left", "sizeBytes": 100},
        {"fileName": "r.mov", "fileRole": "video_right", "sizeBytes": 100},
        {"fileName": "a.m4a", "fileRole": "audio", "sizeBytes": 100, "languageTag": "en"},
        {"fileName": "s.srt", "fileRole": "subtitle", "sizeBytes": 100, "languageTag": "en"}]}  # fmt: skip
    async with api_client(tight) as api:
        sid, uids = await start(api, key, body)
        untouched = await api.get(f"{URL}/{sid}", headers=key)  # no URL issued: nothing to refresh, 1 token
        assert untouched.status_code == 200 and left(untouched.headers["ratelimit"]) == 7
        for uid in uids:
            assert (await api.post(f"{URL}/{sid}/files/{uid}/part-urls", headers=key)).status_code == 200
        refreshed = await api.get(f"{URL}/{sid}", headers=key)  # 1 + 4 files refreshed
        assert refreshed.status_code == 200 and left(refreshed.headers["ratelimit"]) == 2
        assert await redis.zcard(tight.worker.queue_name) == 1
        plain = await api.get(f"{URL}/{sid}", headers=key)  # 1 token left after it: no refresh paid for
        assert plain.status_code == 200 and left(plain.headers["ratelimit"]) == 1
        await asyncio.sleep(0)
        assert await redis.zcard(tight.worker.queue_name) == 1


async def test_a_large_answer_arrives_whole_and_in_order(
    settings: Settings, redis: Redis, key: dict[str, str], store: ObjectStore
) -> None:
    async with api_client(settings.override(part_size_bytes=5 * MIB)) as api:
        sid, (uid,) = await start(api, key, video(2345))
        r = await api.post(f"{URL}/{sid}/files/{uid}/part-urls", headers=key)
        assert r.status_code == 200, r.text
        assert "content-length" not in r.headers  # streamed
        doc = json.loads(r.content)
        assert list(doc)[-1] == "parts" and doc["uploadId"] == uid and doc["totalParts"] == 2345
        parts = doc["parts"]
        assert [p["partNumber"] for p in parts] == list(range(1, 2346))
        assert all(a["byteEnd"] == b["byteStart"] for a, b in itertools.pairwise(parts))
        assert len({p["expiresAt"] for p in parts}) == 1  # one signing time for the whole answer
        assert len({p["url"] for p in parts}) == 2345
        small = await api.post(f"{URL}/{sid}/files/{uid}/part-urls", json={"count": 500}, headers=key)
        assert small.headers["content-length"] == str(small.num_bytes_downloaded)  # up to 500 URLs: one plain answer
