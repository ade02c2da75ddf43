"""provision_group run by a real arq worker against moto: one multipart upload per multipart file, always."""

from __future__ import annotations

import collections
import inspect
from typing import Any

import msgspec
import pytest
from arq import Retry
from arq.constants import retry_key_prefix
from redis.asyncio import Redis

from app.domain.clock import now_ms
from app.domain.lifecycle import Reply
from app.settings import Settings
from app.state import ScriptReply, UploadState
from app.state.apikeys import Principal, Role
from app.state.jobs import PROVISION_JOB, JobSpec, deserialize, provision_job_id
from app.state.keys import METRICS_KEY, arq_job_key, job_field
from app.storage.lazy import LazyObjectStore
from app.storage.s3 import ObjectStore
from app.upkeep.cleanup import abort_orphan_uploads
from app.uploads import cancel, part_urls, start
from app.uploads.cancel import purge_group
from app.uploads.service import UploadService
from deploy.local.devstack import free_port
from tests.conftest import SEED_REQUEST, arq_pool, open_uploads, worst_case_request
from worker import jobs

ACME = Principal("acme", Role.UPLOAD, "test")


async def start_seed_group(settings: Settings, state: UploadState, *, queue_provisioning: bool = True) -> str:
    """A seed group, and (unless told not to) its provisioning job queued, as part-urls does when storage does not
    answer it in time: the worker half of provisioning, which these tests exercise."""
    created = await start.start_upload_group(
        UploadService(settings, state), ACME, msgspec.json.encode(SEED_REQUEST), None
    )
    if queue_provisioning:
        sid, queue = created.session_id, settings.worker.queue_name
        await state.enqueue(JobSpec.build(PROVISION_JOB, (sid,), job_id=provision_job_id(sid), queue=queue))
    return created.session_id


async def test_a_create_touches_no_storage_and_part_urls_opens_only_its_file(
    settings: Settings, state: UploadState, store: ObjectStore, s3: Any, redis: Redis
) -> None:
    sid = await start_seed_group(settings, state, queue_provisioning=False)
    assert await redis.zcard(settings.worker.queue_name) == 0  # no job: nothing runs for a create
    assert open_uploads(s3, settings.storage.bucket) == []
    snap = await state.snapshot(sid)
    assert snap is not None
    left = snap.record.files[0]
    service = UploadService(settings, state, storage=LazyObjectStore(settings.storage, timeout=5.0))
    assert service.storage is not None
    await service.storage.get()  # the client up first, as at API startup (its creation is not what is tested)
    try:
        await part_urls.sign_part_urls(service, ACME, sid, left.upload_id, b"")
    finally:
        assert service.storage is not None
        await service.storage.aclose()
        service.signer.close()
    snap = await state.snapshot(sid)
    assert snap is not None and snap.s3_upload_id(left.upload_id) is not None
    assert [u["Key"] for u in open_uploads(s3, settings.storage.bucket)] == [snap.record.storage_key(left)]


async def test_create_and_cancel_costs_a_bounded_number_of_storage_calls(
    settings: Settings, state: UploadState, store: ObjectStore
) -> None:
    """A 64-file group created and canceled before anyone asked for URLs: both purges together make a handful of
    storage calls (list uploads, delete objects), not one per file."""
    body = msgspec.json.encode(worst_case_request())
    sid = (await start.start_upload_group(UploadService(settings, state), ACME, body, None)).session_id
    await cancel.cancel_group(UploadService(settings, state), ACME, sid)
    await state.claim_instance()
    counting = CountingStore(store)
    assert await purge_group(state, counting, settings, sid) == {"aborted": 0, "deleted": 64}  # now
    assert await purge_group(state, counting, settings, sid) == {"aborted": 0, "deleted": 64}  # the late one
    assert counting.calls["create_multipart"] == 0
    storage_calls = counting.total - counting.calls["get_small"] - counting.calls["put_small"]  # identity check
    assert storage_calls == 4, counting.calls  # per purge: ListMultipartUploads + one DeleteObjects


class CountingStore:
    """An ObjectStore that counts the calls made through it."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.calls: collections.Counter[str] = collections.Counter()

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr
        if inspect.isasyncgenfunction(attr):

            async def pages(*args: Any, **kwargs: Any) -> Any:
                async for page in attr(*args, **kwargs):
                    self.calls[name] += 1
                    yield page

            return pages

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await attr(*args, **kwargs)

        return call


async def test_worker_opens_exactly_one_upload_per_multipart_file(
    settings: Settings, state: UploadState, burst: Any, s3: Any
) -> None:
    sid = await start_seed_group(settings, state)
    worker = await burst()
    assert worker.jobs_complete == 1 and worker.jobs_failed == 0
    assert await state.redis.hget(METRICS_KEY, job_field("provision_group", "ok")) == b"1"

    snap = await state.snapshot(sid)
    assert snap is not None
    multipart = [f for f in snap.record.files if f.strategy == "multipart"]
    assert len(multipart) == 3
    listed = open_uploads(s3, settings.storage.bucket)
    assert sorted((u["Key"], u["UploadId"]) for u in listed) == sorted(
        (snap.record.storage_key(f), snap.s3_upload_id(f.upload_id)) for f in multipart
    )
    single = next(f for f in snap.record.files if f.strategy == "single_put")
    assert snap.s3_upload_id(single.upload_id) is None

    # The same job again (a duplicate or a retry after success) changes nothing.
    pool = arq_pool(settings.redis.url)
    await pool.enqueue_job(
        "provision_group", sid, _job_id=f"provision:{sid}:again", _queue_name=settings.worker.queue_name
    )
    await pool.aclose()
    worker = await burst()
    assert worker.jobs_complete == 1
    assert sorted(u["UploadId"] for u in open_uploads(s3, settings.storage.bucket)) == sorted(
        u["UploadId"] for u in listed
    )


async def test_duplicate_enqueue_of_the_same_job_id_is_a_no_op(
    settings: Settings, state: UploadState, redis: Redis
) -> None:
    sid = await start_seed_group(settings, state)
    pool = arq_pool(settings.redis.url)
    assert await pool.enqueue_job("provision_group", sid, _job_id=f"provision:{sid}") is None
    await pool.aclose()
    assert await redis.zcard(settings.worker.queue_name) == 1


async def test_crash_between_create_and_record_is_adopted_not_duplicated(
    settings: Settings, state: UploadState, store: ObjectStore, burst: Any, s3: Any, redis: Redis
) -> None:
    sid = await start_seed_group(settings, state)
    snap = await state.snapshot(sid)
    assert snap is not None
    left = snap.record.files[0]
    # An earlier try created this upload (twice, even) and died before writing Redis; arq counted its start.
    orphan_a = await store.create_multipart(snap.record.storage_key(left))
    orphan_b = await store.create_multipart(snap.record.storage_key(left))
    await redis.incr(retry_key_prefix + f"provision:{sid}")
    await burst()
    snap = await state.snapshot(sid)
    assert snap is not None
    # The oldest was adopted, no third one was opened; the extra is not aborted by provisioning (a racing
    # provisioner might be about to record it) but by the orphan sweep once it is past the grace period.
    adopted = snap.s3_upload_id(left.upload_id)
    assert adopted in (orphan_a, orphan_b)
    assert len(open_uploads(s3, settings.storage.bucket, snap.record.storage_key(left))) == 2
    assert len(open_uploads(s3, settings.storage.bucket)) == 4
    no_grace = settings.override(orphan_grace_seconds=0)
    assert await abort_orphan_uploads(state, store, no_grace, now=now_ms() + 1000) == 1
    uploads = open_uploads(s3, settings.storage.bucket, snap.record.storage_key(left))
    assert [u["UploadId"] for u in uploads] == [adopted]
    assert len(open_uploads(s3, settings.storage.bucket)) == 3


async def test_a_first_try_opens_uploads_without_listing_and_a_stray_one_is_the_sweeps(
    settings: Settings, state: UploadState, store: ObjectStore, burst: Any, s3: Any
) -> None:
    """A job's first try cannot have an earlier try's upload to adopt, so it does not list (one storage call per
    file); an upload someone else opened and never recorded (the API's on-demand try, killed) is the orphan
    sweep's."""
    sid = await start_seed_group(settings, state)
    snap = await state.snapshot(sid)
    assert snap is not None
    left = snap.record.files[0]
    stray = await store.create_multipart(snap.record.storage_key(left))
    await burst()
    snap = await state.snapshot(sid)
    assert snap is not None and snap.s3_upload_id(left.upload_id) not in (None, stray)
    no_grace = settings.override(orphan_grace_seconds=0)
    assert await abort_orphan_uploads(state, store, no_grace, now=now_ms() + 1000) == 1
    uploads = open_uploads(s3, settings.storage.bucket, snap.record.storage_key(left))
    assert [u["UploadId"] for u in uploads] == [snap.s3_upload_id(left.upload_id)]


async def test_a_group_dropped_by_the_ended_groups_cap_is_still_purged_by_its_end_record(
    settings: Settings, state: UploadState, store: ObjectStore, burst: Any, s3: Any, redis: Redis
) -> None:
    """The account's cap on ended groups can drop a canceled group before its purges run: its end record (kept
    apart from its other keys) names how it ended and where its storage is, so its open uploads and stored objects
    still go, and another group's stay. A group with neither keys nor an end record is never purged."""
    capped = settings.override(retained_ended_groups=1)
    dropped, kept = await start_seed_group(capped, state), await start_seed_group(capped, state)
    await burst()  # provisioned: each group's videos have an open multipart upload
    snaps = [await state.snapshot(sid) for sid in (dropped, kept)]
    assert snaps[0] is not None and snaps[1] is not None
    prefixes = [snap.record.key_prefix for snap in snaps]
    for snap in snaps:
        s3.put_object(Bucket=settings.storage.bucket, Key=snap.record.storage_key(snap.record.files[-1]), Body=b"srt")
    service = UploadService(capped, state)
    for sid in (dropped, kept):
        await cancel.cancel_group(service, ACME, sid)
    job = deserialize(await redis.get(arq_job_key(f"purge:{dropped}")))
    assert job["a"] == [dropped]  # the immediate purge (the late one is the same)
    assert await state.trim_ended(capped.limits.retained_ended_groups) == 1
    assert await state.snapshot(dropped) is None and await state.snapshot(kept) is not None
    assert await state.end_record(dropped) == ("canceled", prefixes[0])

    nobody = "00000000-0000-4000-8000-000000000000"  # no keys, no end record: nothing to go by
    assert await purge_group(state, store, capped, nobody) == {"aborted": 0, "deleted": 0}
    await state.claim_instance()  # a worker's start does this (the storage's identity check needs it)
    assert await purge_group(state, store, capped, dropped) == {"aborted": 3, "deleted": 1}  # 3 multipart files
    assert not open_uploads(s3, settings.storage.bucket, prefixes[0])
    assert not s3.list_objects_v2(Bucket=settings.storage.bucket, Prefix=prefixes[0]).get("Contents")
    assert len(open_uploads(s3, settings.storage.bucket, prefixes[1])) == 3
    assert len(s3.list_objects_v2(Bucket=settings.storage.bucket, Prefix=prefixes[1])["Contents"]) == 1


async def test_a_concurrently_recorded_upload_wins_and_ours_is_aborted(
    settings: Settings, state: UploadState, store: ObjectStore, s3: Any
) -> None:
    sid = await start_seed_group(settings, state)
    snap = await state.snapshot(sid)
    assert snap is not None
    left = snap.record.files[0]
    first = await store.create_multipart(snap.record.storage_key(left))
    assert await state.record_s3_upload(snap.record, left.upload_id, first) == ScriptReply(Reply.OK)
    assert await state.record_s3_upload(snap.record, left.upload_id, "other-id") == (Reply.RECORDED, (first,))


async def test_storage_down_means_retry_with_backoff(settings: Settings, state: UploadState, redis: Redis) -> None:
    sid = await start_seed_group(settings, state)
    dead = settings.override(s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    async with ObjectStore.connect(dead.storage, connect_timeout=1.0) as down:
        ctx = {"state": state, "store": down, "job_try": 3, "redis": redis}
        with pytest.raises(Retry) as info:
            await jobs.provision_group(ctx, sid)
    assert info.value.defer_score == 4000  # third try waits 4 s
    assert await redis.hget(METRICS_KEY, job_field("provision_group", "retried")) == b"1"
    snap = await state.snapshot(sid)
    assert snap is not None and all(snap.s3_upload_id(f.upload_id) is None for f in snap.record.files)


@pytest.mark.parametrize(("job_try", "delay"), [(1, 1), (2, 2), (5, 16), (9, 256), (10, 300), (40, 300)])
def test_backoff_is_exponential_and_capped(job_try: int, delay: int) -> None:
    assert jobs.backoff_seconds(job_try) == delay
