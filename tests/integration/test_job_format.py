"""The job format: what our scripts write is exactly what arq's own enqueue_job writes with our serializer.

arq and redis-py are pinned below their next minor release (pyproject.toml); if a release changes the job
document, its keys or its dedupe rules, these tests fail before production does.
"""

from __future__ import annotations

import pickle
from typing import Any

import msgspec
from arq.worker import Worker, func
from redis.asyncio import Redis

from app.domain.lifecycle import FileStatus, GroupStatus, Reply
from app.settings import Settings
from app.state import UploadState
from app.state.jobs import JobSpec, LibraryTemplate, deserialize, job_document, process_job_id
from app.state.keys import LIBRARY_COUNTER, arq_job_key, arq_result_key
from tests.conftest import arq_pool
from tests.integration.test_state_scripts import setup_case


async def snapshot_job(redis: Redis, queue: str, job_id: str) -> tuple[dict[str, Any], float, int]:
    """(job document, queue score, key TTL ms) as stored."""
    blob = await redis.get(arq_job_key(job_id))
    assert blob is not None
    score = await redis.zscore(queue, job_id)
    assert score is not None
    return deserialize(blob), score, await redis.pttl(arq_job_key(job_id))


async def test_our_enqueue_writes_what_arqs_enqueue_job_writes(settings: Settings, state: UploadState) -> None:
    redis = state.redis
    pool = arq_pool(settings.redis.url)
    try:
        for defer_ms in (0, 90_000):
            await redis.flushall()
            job = await pool.enqueue_job("purge_group", "sid-1", _job_id="j", _queue_name="q",
                                         _defer_by=defer_ms / 1000 if defer_ms else None)  # fmt: skip
            assert job is not None
            theirs, their_score, their_ttl = await snapshot_job(redis, "q", "j")
            await redis.flushall()
            spec = JobSpec.build("purge_group", ("sid-1",), job_id="j", now_ms=theirs["et"], queue="q",
                                 defer_ms=defer_ms)  # fmt: skip
            assert await state.enqueue(spec) == 1
            ours, our_score, our_ttl = await snapshot_job(redis, "q", "j")
            assert ours == theirs  # the same document: t, f, a, k, et
            assert set(ours) == {"t", "f", "a", "k", "et"}
            assert await redis.get(arq_job_key("j")) == job_document("purge_group", ["sid-1"], theirs["et"])
            assert abs(our_score - their_score) < 50  # arq takes its own clock reading for the score
            assert abs(our_ttl - their_ttl) < 1_000
    finally:
        await pool.aclose()


async def test_dedupe_matches_arq_a_queued_or_finished_job_id_is_not_enqueued_again(
    settings: Settings, state: UploadState
) -> None:
    pool = arq_pool(settings.redis.url)
    try:
        spec = JobSpec.build("purge_group", ("s",), job_id="same", now_ms=1, queue="q")
        assert await state.enqueue(spec) == 1
        assert await pool.enqueue_job("purge_group", "s", _job_id="same", _queue_name="q") is None  # arq agrees
        assert await state.enqueue(spec) == 0
        await state.redis.delete(arq_job_key("same"))
        await state.redis.set(arq_result_key("same"), b"kept result")
        assert await state.enqueue(spec) == 0  # a kept result blocks it too, as in arq
        assert await pool.enqueue_job("purge_group", "s", _job_id="same", _queue_name="q") is None
    finally:
        await pool.aclose()


async def test_no_pickle_anywhere_in_our_queues(settings: Settings, state: UploadState) -> None:
    spec = JobSpec.build("refresh_parts", ("s", "u"), job_id="r", now_ms=1, queue="q")
    await state.enqueue(spec)
    blob = await state.redis.get(arq_job_key("r"))
    assert blob is not None and not blob.startswith(b"\x80")  # pickle protocol 2+ marker
    assert msgspec.msgpack.decode(blob) == {"t": None, "f": "refresh_parts", "a": ["s", "u"], "k": {}, "et": 1}
    try:
        pickle.loads(blob)
        unpicklable = False
    except Exception:
        unpicklable = True
    assert unpicklable


def test_the_processing_job_carries_any_library_id_as_a_plain_integer() -> None:
    # The completing script writes the id into the document as an 8-byte (big-endian) msgpack integer.
    template = LibraryTemplate.build({"sessionId": "s", "files": []}, now_ms=7)
    for library_id in (1, 255, 256, 2**31 + 5, 2**40 + 3, 2**53 - 1):
        doc = deserialize(template.job_head + library_id.to_bytes(8, "big") + template.job_tail)
        assert doc["a"] == [{"libraryId": library_id, "sessionId": "s", "files": []}]
        assert doc["f"] == "process_asset_set" and doc["et"] == 7
        record = msgspec.json.decode(b'{"libraryId":' + str(library_id).encode() + template.record_tail)
        assert record == {"libraryId": library_id, "sessionId": "s", "files": []}


async def test_a_downstream_worker_configured_only_through_public_settings_runs_our_processing_job(
    settings: Settings, state: UploadState, redis: Redis
) -> None:
    await redis.set(LIBRARY_COUNTER, 2**50)  # ids far beyond 32 bits go through the script intact
    case = await setup_case(state, settings, 7, GroupStatus.UPLOADING, FileStatus.COMPLETING, FileStatus.COMPLETED)
    library = LibraryTemplate.build({"sessionId": case.record.session_id}, now_ms=case.now)
    reply = await state.finish_complete(case.record, case.uid, now_ms=case.now, retention_ms=10**6, library=library,
                                        processing_queue=settings.worker.processing_queue_name)  # fmt: skip
    assert reply.code is Reply.GROUP_COMPLETED and reply.values[0] == 2**50 + 1
    seen: list[dict[str, Any]] = []

    async def process_asset_set(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
        seen.append(payload)

    pool = arq_pool(settings.redis.url)
    worker = Worker(
        functions=[func(process_asset_set, name="process_asset_set")], queue_name=settings.worker.processing_queue_name,
        job_serializer=msgspec.msgpack.encode, job_deserializer=msgspec.msgpack.decode, redis_pool=pool,
        burst=True, handle_signals=False, poll_delay=0.02,
    )  # fmt: skip
    try:
        await worker.main()
    finally:
        await worker.close()
        await pool.aclose()
    assert seen == [{"libraryId": 2**50 + 1, "sessionId": case.record.session_id}]
    assert (worker.jobs_complete, worker.jobs_failed) == (1, 0)
    assert await redis.exists(arq_job_key(process_job_id(case.record.session_id))) == 0
