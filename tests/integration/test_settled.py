"""The completion notification (app/state/settled.py): the scripts that end an attempt publish it, the API's wait is
woken by it instead of polling, and a broken subscription falls back to polling without losing an answer.

Against the real Valkey and moto; the subscription is broken for real (CLIENT KILL of the pub/sub connection).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from app.settings import Settings
from app.state import GroupSnapshot, UploadState
from app.state.apikeys import Principal, Role
from app.state.keys import SETTLED_CHANNEL
from app.state.settled import Settled
from app.storage.s3 import ObjectStore
from app.uploads import complete, start
from app.uploads.service import UploadService
from worker import jobs

ACME = Principal("acme", Role.UPLOAD, "k")
ONE_VIDEO = {"videoName": "v", "layout": "2D", "files": [{"fileName": "v.mp4", "fileRole": "video", "sizeBytes": 5}]}


async def until(check: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.01)


async def test_a_publication_wakes_exactly_the_waits_on_that_file(redis: Redis) -> None:
    settled = Settled(redis)
    settled.start()
    try:
        await until(lambda: settled.listening)
        with settled.waiting("s1:u1") as mine, settled.waiting("s1:u1") as same, settled.waiting("s1:u2") as other:
            await redis.publish(SETTLED_CHANNEL, "s1:u1")
            await asyncio.wait_for(mine.wait(), 5)
            await asyncio.wait_for(same.wait(), 5)
            assert not other.is_set()
    finally:
        await settled.stop()
    assert not settled.listening


async def test_a_broken_subscription_wakes_every_wait_and_comes_back(redis: Redis) -> None:
    settled = Settled(redis)
    settled.start()
    try:
        await until(lambda: settled.listening)
        with settled.waiting("s2:u1") as wait:
            killed = await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            assert killed >= 1
            await asyncio.wait_for(wait.wait(), 5)  # a message may have been missed: the wait looks for itself
        await until(lambda: settled.listening)  # subscribed again
        with settled.waiting("s2:u2") as wait:
            await redis.publish(SETTLED_CHANNEL, "s2:u2")
            await asyncio.wait_for(wait.wait(), 5)
    finally:
        await settled.stop()


async def test_the_completion_wait_is_woken_by_the_finishing_script(
    settings: Settings, state: UploadState, redis: Redis, store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No look of its own within the test's patience: only the message can end the wait in time.
    monkeypatch.setattr(complete, "BACKSTOP_SECONDS", 600.0)
    settled = Settled(redis)
    settled.start()
    listener = redis.pubsub()
    await listener.subscribe(SETTLED_CHANNEL)
    try:
        await until(lambda: settled.listening)
        service = UploadService(settings.override(complete_wait_seconds=600.0), state, settled=settled)
        sid = (await start.start_upload_group(service, ACME, msgspec.json.encode(ONE_VIDEO), None)).session_id
        snap = await state.snapshot(sid)
        assert snap is not None
        f = snap.record.files[0]
        await store.client.put_object(Bucket=settings.storage.bucket, Key=snap.record.storage_key(f), Body=b"12345")

        reads = 0
        load_group = service.load_group

        async def counted(*args: Any) -> GroupSnapshot:
            nonlocal reads
            reads += 1
            return await load_group(*args)

        service.load_group = counted  # type: ignore[method-assign]
        waiting = asyncio.create_task(complete.complete_file_upload(service, ACME, sid, f.upload_id, b""))

        async def completing() -> bool:
            now = await state.snapshot(sid)
            return now is not None and now.file_status(f.upload_id) == "completing"

        for _ in range(1000):
            if await completing():
                break
            await asyncio.sleep(0.01)
        ctx = {"state": state, "store": store, "settings": settings, "job_try": 1, "redis": redis}
        await jobs.complete_file(ctx, sid, f.upload_id, 1, [])
        status, view = await asyncio.wait_for(waiting, 30)  # a hang guard: the backstop is 10 minutes away
    finally:
        await listener.aclose()
        await settled.stop()
    assert status == 200 and view.status == "completed"
    assert reads == 2  # the file as the call found it, then the group once the message came


async def test_the_script_that_ends_an_attempt_publishes_it(
    settings: Settings, state: UploadState, redis: Redis, store: ObjectStore
) -> None:
    listener = redis.pubsub()
    await listener.subscribe(SETTLED_CHANNEL)
    try:
        service = UploadService(settings.override(complete_wait_seconds=0.0), state)  # no Settled: answers 202
        sid = (await start.start_upload_group(service, ACME, msgspec.json.encode(ONE_VIDEO), None)).session_id
        snap = await state.snapshot(sid)
        assert snap is not None
        uid = snap.record.files[0].upload_id
        # Nothing stored: storage refuses the completion and the file is handed back ('reject_complete').
        status, _ = await complete.complete_file_upload(service, ACME, sid, uid, b"")
        assert status == 202
        ctx = {"state": state, "store": store, "settings": settings, "job_try": 1, "redis": redis}
        await jobs.complete_file(ctx, sid, uid, 1, [])
        seen = []
        deadline = time.monotonic() + 10
        while f"{sid}:{uid}" not in seen and time.monotonic() < deadline:
            message = await listener.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                seen.append(message["data"].decode())
    finally:
        await listener.aclose()
    after = await state.snapshot(sid)
    assert after is not None and after.file_status(uid) == "uploading"
    assert f"{sid}:{uid}" in seen
