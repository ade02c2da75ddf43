"""Work whose job is gone is re-driven; each completed group is handed off exactly once; storage is deleted only on
evidence; every Redis-unavailable answer is a 503.

Against the real Valkey and moto, with unmodified arq consumers: completions stuck in 'completing', processing jobs
that outlive a long pipeline outage, consumers that keep no result or fail, the indexes at volume, the
reconciliation of stored objects, OOM and read-only Redis.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from arq.worker import Worker, func
from redis.asyncio import Redis

from app.admin.cli import run as admin
from app.domain.clock import now_ms
from app.domain.lifecycle import FileStatus, GroupStatus, Reply
from app.settings import Settings
from app.state import UploadState
from app.state.apikeys import Principal, Role
from app.state.jobs import LibraryTemplate, complete_job_id, process_job_id
from app.state.keys import (
    COMPLETING_INDEX,
    HANDOFF_INDEX,
    METRICS_KEY,
    FileField,
    MetricField,
    arq_job_key,
    file_field,
    group_key,
    state_key,
)
from app.storage.s3 import ObjectStore
from app.upkeep.cleanup import reconcile_objects
from app.upkeep.redrive import INTERRUPTED, redrive
from app.uploads import cancel, complete, start
from app.uploads.service import UploadService
from tests.conftest import arq_pool
from tests.integration.conftest import api_client
from tests.integration.test_state_scripts import setup_case

ACME = Principal("acme", Role.UPLOAD, "k")
ONE_VIDEO = {"videoName": "v", "layout": "2D", "files": [{"fileName": "v.mp4", "fileRole": "video", "sizeBytes": 5}]}
LATER = 60_000  # the re-drive judges what is older than REDRIVE_MIN_AGE_MS


async def test_a_completion_whose_job_is_gone_goes_back_to_uploading_and_completes_on_the_next_call(
    settings: Settings, state: UploadState, redis: Redis, store: ObjectStore, burst: Any
) -> None:
    service = UploadService(settings, state)
    sid = (await start.start_upload_group(service, ACME, msgspec.json.encode(ONE_VIDEO), None)).session_id
    snap = await state.snapshot(sid)
    assert snap is not None
    f = snap.record.files[0]
    await store.client.put_object(Bucket=settings.storage.bucket, Key=snap.record.storage_key(f), Body=b"12345")
    quick = settings.override(complete_wait_seconds=0.0)
    status, _ = await complete.complete_file_upload(UploadService(quick, state), ACME, sid, f.upload_id, b"")
    assert status == 202  # no worker ran: the file is 'completing' and its job queued
    # The job is lost (killed past its retries, timed out, or expired unrun): neither job key nor lock.
    job_id = complete_job_id(sid, f.upload_id, 1)
    await redis.delete(arq_job_key(job_id))
    await redis.zrem(settings.worker.queue_name, job_id)
    counts = await redrive(state, settings, now=now_ms() + LATER)
    assert (counts["completions_handed_back"], counts["processing_requeued"]) == (1, 0)
    snap = await state.snapshot(sid)
    assert snap is not None and snap.file_status(f.upload_id) is FileStatus.UPLOADING
    assert snap.reason(f.upload_id) == INTERRUPTED
    # The client's next complete call starts a new attempt, which the worker finishes.
    status, _ = await complete.complete_file_upload(UploadService(quick, state), ACME, sid, f.upload_id, b"")
    await burst()
    status, view = await complete.complete_file_upload(service, ACME, sid, f.upload_id, b"")
    assert status == 200 and view.status == "completed" and view.library_id is not None


async def test_a_running_or_queued_completion_is_left_alone(
    settings: Settings, state: UploadState, redis: Redis
) -> None:
    service = UploadService(settings.override(complete_wait_seconds=0.0), state)
    sid = (await start.start_upload_group(service, ACME, msgspec.json.encode(ONE_VIDEO), None)).session_id
    snap = await state.snapshot(sid)
    assert snap is not None
    uid = snap.record.files[0].upload_id
    assert (await complete.complete_file_upload(service, ACME, sid, uid, b""))[0] == 202
    assert (await redrive(state, settings, now=now_ms() + LATER))["completions_handed_back"] == 0  # queued
    job_id = complete_job_id(sid, uid, 1)
    await redis.delete(arq_job_key(job_id))
    await redis.set(f"arq:in-progress:{job_id}", b"1", px=10_000)  # a worker holds it (its lock is live)
    assert (await redrive(state, settings, now=now_ms() + LATER))["completions_handed_back"] == 0
    snap = await state.snapshot(sid)
    assert snap is not None and snap.file_status(uid) is FileStatus.COMPLETING


async def complete_groups(state: UploadState, settings: Settings, first: int, n: int) -> list[tuple[str, int]]:
    """n groups completed by the completing script itself: (sessionId, libraryId) each, processing job queued."""
    done = []
    for k in range(first, first + n):
        case = await setup_case(state, settings, k, GroupStatus.UPLOADING, FileStatus.COMPLETING, FileStatus.COMPLETED)
        library = LibraryTemplate.build({"sessionId": case.record.session_id}, now_ms=case.now)
        queue = settings.worker.processing_queue_name
        reply = await state.finish_complete(case.record, case.uid, now_ms=case.now, retention_ms=10**6,
                                            library=library, processing_queue=queue)  # fmt: skip
        assert reply.code is Reply.GROUP_COMPLETED
        done.append((case.record.session_id, int(reply.values[0])))
    return done


def consumer(settings: Settings, seen: list[str], *, keep_result: int, fail: bool = False) -> Worker:
    """An unmodified arq worker of the processing queue, configured only through arq's public settings."""

    async def process_asset_set(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
        seen.append(payload["sessionId"])
        if fail:
            raise RuntimeError("the pipeline cannot read this asset set")

    return Worker(functions=[func(process_asset_set, name="process_asset_set", max_tries=1)],
                  queue_name=settings.worker.processing_queue_name, job_serializer=msgspec.msgpack.encode,
                  job_deserializer=msgspec.msgpack.decode, redis_pool=arq_pool(settings.redis.url), burst=True,
                  handle_signals=False, poll_delay=0.02, keep_result=keep_result)  # fmt: skip


async def drain(worker: Worker) -> None:
    try:
        await worker.main()
    finally:
        await worker.close()


async def test_the_processing_job_waits_out_any_outage_and_is_never_queued_twice(
    settings: Settings, state: UploadState, redis: Redis
) -> None:
    [(sid, library_id)] = await complete_groups(state, settings, 3, 1)
    job_key = arq_job_key(process_job_id(sid))
    assert await redis.pttl(job_key) == -1  # no expiry: a pipeline down for days still finds it
    later = now_ms() + LATER
    counts = await redrive(state, settings, now=later)
    assert (counts["processing_waiting"], counts["processing_requeued"]) == (1, 0)  # queued: left alone
    # The document is there but its queue entry is not (never taken: arq removes the document when it finishes a
    # job): the entry is written back, under the same id.
    await redis.zrem(settings.worker.processing_queue_name, process_job_id(sid))
    assert (await redrive(state, settings, now=later))["processing_requeued"] == 1
    assert await redis.zscore(settings.worker.processing_queue_name, process_job_id(sid)) is not None
    seen: list[str] = []
    await drain(consumer(settings, seen, keep_result=3600))
    assert seen == [sid]
    counts = await redrive(state, settings, now=later)
    assert (counts["processing_taken"], counts["processing_requeued"], counts["processing_failed"]) == (1, 0, 0)
    assert await redis.zcard(HANDOFF_INDEX) == 0
    snap = await state.snapshot(sid)
    assert snap is not None and snap.handoff == "taken" and snap.library_id == library_id


@pytest.mark.parametrize("keep_result", [0, 3600], ids=["keep_result=0", "arq's default"])
async def test_each_group_is_processed_exactly_once_whatever_the_consumer_keeps(
    settings: Settings, state: UploadState, redis: Redis, keep_result: int
) -> None:
    groups = await complete_groups(state, settings, 100, 6)
    seen: list[str] = []
    later = now_ms() + LATER
    for i in range(10):  # ten re-drive passes, a consumer draining the queue between some of them
        await redrive(state, settings, now=later)
        if i in (2, 5, 8):
            await drain(consumer(settings, seen, keep_result=keep_result))
    assert sorted(seen) == sorted(sid for sid, _ in groups)  # each exactly once
    assert await redis.zcard(HANDOFF_INDEX) == 0
    assert await redis.zcard(settings.worker.processing_queue_name) == 0


async def test_a_consumer_failure_is_shown_counted_and_retried_by_an_operator_not_a_loop(
    settings: Settings, state: UploadState, redis: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    [(sid, _)] = await complete_groups(state, settings, 7, 1)
    seen: list[str] = []
    await drain(consumer(settings, seen, keep_result=3600, fail=True))  # max_tries=1: it fails for good
    later = now_ms() + LATER
    counts = await redrive(state, settings, now=later)
    assert (counts["processing_taken"], counts["processing_failed"]) == (1, 1)
    snap = await state.snapshot(sid)
    assert snap is not None and snap.handoff == "failed"
    assert await redis.hget(METRICS_KEY, MetricField.HANDOFFS_FAILED) == b"1"
    for _ in range(3):  # no loop queues it again
        await redrive(state, settings, now=later)
    assert not await redis.exists(arq_job_key(process_job_id(sid))) and seen == [sid]
    argv = ["--redis-url", settings.redis.url, "--json", "handoffs"]
    assert await admin([*argv, "list"]) == 0
    assert [f["sessionId"] for f in json.loads(capsys.readouterr().out)["failed"]] == [sid]
    assert await admin([*argv, "retry", sid]) == 0
    capsys.readouterr()
    assert await admin([*argv, "retry", sid]) == 1  # pending again: nothing to retry
    await drain(consumer(settings, seen, keep_result=3600))
    assert seen == [sid, sid]
    assert (await redrive(state, settings, now=later))["processing_taken"] == 1
    snap = await state.snapshot(sid)
    assert snap is not None and snap.handoff == "taken"


async def test_re_drive_indexes_stay_small_and_lost_work_is_found_wherever_it_sits(
    settings: Settings, state: UploadState, redis: Redis
) -> None:
    # 1,200 completions under way (their jobs queued) and three whose job is gone, at the head, the middle and the
    # tail of the index: one pass (pages of 500) hands back all three and keeps the rest.
    sids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(1203)]
    members = {f"{sid}:00000000-0000-4000-9000-{n:012d}": n for n, sid in enumerate(sids)}
    async with redis.pipeline(transaction=False) as pipe:
        for member, n in members.items():
            sid, _, uid = member.partition(":")
            pipe.hset(state_key(sid), mapping={file_field(FileField.STATUS, uid): "completing",
                                               file_field(FileField.ATTEMPT, uid): "1"})  # fmt: skip
            pipe.zadd(COMPLETING_INDEX, {member: 1_000 + n})
            if n not in (0, 600, 1202):
                pipe.set(arq_job_key(complete_job_id(sid, uid, 1)), b"queued")
        await pipe.execute()
    counts = await redrive(state, settings, now=now_ms())
    assert (counts["completions_handed_back"], counts["completions_running"]) == (3, 1200)
    assert await redis.zcard(COMPLETING_INDEX) == 1200

    # Work that ends leaves the indexes at once: a whole group completed through the scripts leaves nothing behind.
    done = await complete_groups(state, settings, 5000, 50)
    assert not [m for m in await redis.zrange(COMPLETING_INDEX, 0, -1) if m.decode().startswith(done[0][0])]
    assert await redis.zcard(HANDOFF_INDEX) == 50
    seen: list[str] = []
    await drain(consumer(settings, seen, keep_result=0))
    await redrive(state, settings, now=now_ms() + LATER)
    assert await redis.zcard(HANDOFF_INDEX) == 0


async def test_reconciliation_deletes_only_on_evidence_and_never_on_absence(
    settings: Settings, state: UploadState, redis: Redis, store: ObjectStore
) -> None:
    service = UploadService(settings, state)
    live, canceled, dropped = [
        (await start.start_upload_group(service, ACME, msgspec.json.encode(ONE_VIDEO), None)).session_id
        for _ in range(3)
    ]  # fmt: skip
    await cancel.cancel_group(service, ACME, canceled)
    await cancel.cancel_group(service, ACME, dropped)
    keys = {}
    for sid in (live, canceled, dropped):
        snap = await state.snapshot(sid)
        assert snap is not None
        keys[sid] = snap.record.storage_key(snap.record.files[0])
    await redis.delete(group_key(dropped), state_key(dropped))  # its keys dropped early: its end record remains
    unknown = "uploads/acme/00000000-0000-4000-8000-00000000dead/00000000-0000-4000-8000-00000000beef.mp4"
    foreign = "uploads/not-ours.txt"
    for key in (*keys.values(), unknown, foreign):
        await store.client.put_object(Bucket=settings.storage.bucket, Key=key, Body=b"x")
    await state.claim_instance()
    no_grace = settings.override(orphan_grace_seconds=0)
    assert await reconcile_objects(state, store, no_grace, now=now_ms() + 1000) == 2
    remaining = {o.key async for page in store.object_pages("") for o in page if "_spatialgen" not in o.key}
    assert remaining == {keys[live], unknown, foreign}


async def test_redis_out_of_memory_or_read_only_answers_503_not_500(settings: Settings, redis: Redis) -> None:
    async with api_client(settings) as api:
        key = {"X-SPATIALGEN-APPKEY": (await _key(redis))}
        r = await api.post("/api/videos/uploads", json=ONE_VIDEO, headers=key)
        assert r.status_code == 201
        await redis.config_set("maxmemory", "1")  # noeviction (the default policy): every write is refused
        try:
            oom = await api.post("/api/videos/uploads", json=ONE_VIDEO, headers=key)
        finally:
            await redis.config_set("maxmemory", "0")
        await redis.execute_command("REPLICAOF", "127.0.0.1", "1")  # a replica of a primary that is gone
        try:
            read_only = await api.post("/api/videos/uploads", json=ONE_VIDEO, headers=key)
        finally:
            await redis.execute_command("REPLICAOF", "NO", "ONE")
    for answer in (oom, read_only):
        assert answer.status_code == 503, answer.text
        assert answer.json()["code"] == "dependency_unavailable" and answer.headers["retry-after"]


async def _key(redis: Redis) -> str:
    from app.state.apikeys import create_key

    secret, _ = await create_key(redis, account="acme", role="upload")
    return secret
