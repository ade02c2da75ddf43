"""Work whose job is gone is re-driven; storage never leaks; every Redis-unavailable answer is a 503.

Against the real Valkey and moto: completions stuck in 'completing', processing jobs that outlive a long
pipeline outage (and one that was lost), the reconciliation of stored objects, OOM and read-only Redis.
"""

from __future__ import annotations

from typing import Any

import msgspec
from arq.worker import Worker, func
from redis.asyncio import Redis

from app.domain.clock import now_ms
from app.domain.lifecycle import FileStatus, GroupStatus, Reply
from app.settings import Settings
from app.state import UploadState
from app.state.apikeys import Principal, Role
from app.state.jobs import LibraryTemplate, complete_job_id, process_job_id
from app.state.keys import HANDOFF_INDEX, arq_job_key, arq_result_key
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
    assert (await redrive(state, settings, now=now_ms() + LATER)) == {
        "completions_handed_back": 1, "processing_requeued": 0,
    }  # fmt: skip
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


async def test_the_processing_job_waits_out_any_outage_and_a_lost_one_is_queued_again_once(
    settings: Settings, state: UploadState, redis: Redis
) -> None:
    case = await setup_case(state, settings, 3, GroupStatus.UPLOADING, FileStatus.COMPLETING, FileStatus.COMPLETED)
    sid = case.record.session_id
    library = LibraryTemplate.build({"sessionId": sid}, now_ms=case.now)
    reply = await state.finish_complete(case.record, case.uid, now_ms=case.now, retention_ms=10**6, library=library,
                                        processing_queue=settings.worker.processing_queue_name)  # fmt: skip
    assert reply.code is Reply.GROUP_COMPLETED
    job_key = arq_job_key(process_job_id(sid))
    assert await redis.pttl(job_key) == -1  # no expiry: a pipeline down for days still finds it
    later = now_ms() + LATER
    assert (await redrive(state, settings, now=later))["processing_requeued"] == 0  # still queued
    # Lost (a restore from an old backup, an operator's mistake): the re-drive queues it again, same id.
    await redis.delete(job_key)
    await redis.zrem(settings.worker.processing_queue_name, process_job_id(sid))
    assert (await redrive(state, settings, now=later))["processing_requeued"] == 1
    assert await redis.zscore(settings.worker.processing_queue_name, process_job_id(sid)) is not None
    assert await redis.pttl(job_key) == -1
    seen: list[dict[str, Any]] = []

    async def process_asset_set(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
        seen.append(payload)

    pool = arq_pool(settings.redis.url)
    worker = Worker(functions=[func(process_asset_set, name="process_asset_set")],
                    queue_name=settings.worker.processing_queue_name, job_serializer=msgspec.msgpack.encode,
                    job_deserializer=msgspec.msgpack.decode, redis_pool=pool, burst=True, handle_signals=False,
                    poll_delay=0.02)  # fmt: skip
    try:
        await worker.main()
    finally:
        await worker.close()
        await pool.aclose()
    assert [p["libraryId"] for p in seen] == [reply.values[0]]
    assert await redis.exists(arq_result_key(process_job_id(sid)))
    # Picked up: the group leaves the hand-off index and is never queued again.
    assert (await redrive(state, settings, now=later))["processing_requeued"] == 0
    assert await redis.zcard(HANDOFF_INDEX) == 0
    assert (await redrive(state, settings, now=later))["processing_requeued"] == 0


async def test_reconciliation_deletes_objects_no_live_or_retained_group_owns(
    settings: Settings, state: UploadState, redis: Redis, store: ObjectStore
) -> None:
    service = UploadService(settings, state)
    live, canceled = [(await start.start_upload_group(service, ACME, msgspec.json.encode(ONE_VIDEO), None)).session_id
                      for _ in range(2)]  # fmt: skip
    await cancel.cancel_group(service, ACME, canceled)
    keys = {}
    for sid in (live, canceled):
        snap = await state.snapshot(sid)
        assert snap is not None
        keys[sid] = snap.record.storage_key(snap.record.files[0])
    gone = "uploads/acme/00000000-0000-4000-8000-00000000dead/00000000-0000-4000-8000-00000000beef.mp4"
    foreign = "uploads/not-ours.txt"
    for key in (*keys.values(), gone, foreign):
        await store.client.put_object(Bucket=settings.storage.bucket, Key=key, Body=b"x")
    no_grace = settings.override(orphan_grace_seconds=0)
    assert await reconcile_objects(state, store, no_grace, now=now_ms() + 1000) == 2
    remaining = {o.key async for page in store.object_pages("") for o in page}
    assert remaining == {keys[live], foreign}


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
