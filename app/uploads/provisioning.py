"""Step 2, provisioning: open each multipart file's S3 multipart upload and record its id.

Worker half: the create's job (`provision_group`) opens every multipart upload of the group in the background.
API half: a client asking for part URLs of a file not provisioned yet never waits behind that backlog; the API
runs the same idempotent step for that one file itself (`provision_for_client`), racing the worker safely.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from app.domain.contract import UploadStrategy
from app.domain.lifecycle import Reply
from app.domain.records import FileRecord, GroupRecord
from app.state import GroupSnapshot, ScriptReply, UploadState
from app.state.jobs import PROVISION_JOB, JobSpec, provision_job_id
from app.uploads.polling import poll_until
from app.uploads.refusals import script_refusal, storage_not_ready
from app.uploads.service import UploadService

if TYPE_CHECKING:  # the API imports this module; aiobotocore loads in the background there (app/storage/lazy.py)
    from app.storage.s3 import ObjectStore

log = logging.getLogger("spatialgen.uploads")
PROVISION_POLL_SECONDS = 0.1


# --- API half ---------------------------------------------------------------------------------


async def provision_for_client(service: UploadService, snap: GroupSnapshot, f: FileRecord) -> str:
    """The file's S3 upload id, for a client that is waiting for it in part-urls.

    If storage does not answer within SPATIALGEN_PROVISION_WAIT_SECONDS, the worker's job is left to do it
    (503 and Retry-After). A group that ended meanwhile gets its 409.
    """
    wait = service.settings.api.provision_wait_seconds
    if service.storage is None:
        return await _wait_for_worker(service, snap.record.session_id, f.upload_id, wait)
    try:
        async with asyncio.timeout(wait):
            # A worker may have opened this file's upload and stopped (or not yet got) to record it: once the
            # group's provisioning job has been tried, look for that upload first, so it is adopted, not doubled.
            adopt = await service.state.job_tried(provision_job_id(snap.record.session_id))
            store = await service.storage.get()
            s3_id = await provision_file(service.state, store, snap.record, f, adopt=adopt)
    except RedisError:
        raise  # the state store is down: its own 503
    except Exception as exc:  # storage slow or refusing: the worker's job (and its retries) take over
        log.warning("provisioning %s for a waiting client failed: %r", f.upload_id, exc)
        return await _wait_for_worker(service, snap.record.session_id, f.upload_id, 0.0)
    if s3_id is None:  # the group ended meanwhile: its 409
        fresh = await service.state.snapshot(snap.record.session_id)
        service.ensure_live(fresh or snap, service.clock.now_ms())
        raise script_refusal(fresh or snap, ScriptReply(Reply.GONE), f)
    return s3_id


async def _wait_for_worker(service: UploadService, session_id: str, upload_id: str, within: float) -> str:
    # Normally the create's job is queued or running. If it gave up (storage down for hours), queue it
    # again; the deterministic id makes this a no-op while the first is queued or its result is kept.
    job = JobSpec.build(
        PROVISION_JOB, (session_id,), job_id=provision_job_id(session_id),
        queue=service.settings.worker.queue_name,
    )  # fmt: skip
    await service.state.enqueue(job)
    snap, _ = await poll_until(
        lambda: service.state.snapshot(session_id), lambda s: s is None or bool(s.s3_upload_id(upload_id)),
        within=within, interval=PROVISION_POLL_SECONDS,
    )  # fmt: skip
    s3_id = snap.s3_upload_id(upload_id) if snap is not None else None
    if s3_id is None:
        raise storage_not_ready()
    return s3_id


# --- worker half ------------------------------------------------------------------------------


async def provision_file(
    state: UploadState, store: ObjectStore, record: GroupRecord, f: FileRecord, *, adopt: bool = True
) -> str | None:
    """Open (or adopt) the S3 multipart upload of one file and record it; returns the recorded id, or None
    if the group or file no longer takes uploads (then nothing is left open behind it).

    Idempotent and safe to run concurrently (the API runs it for a waiting client while a worker may run
    it too). An earlier try may have created an upload and died before recording it: the oldest open
    upload under the key is adopted rather than a second one opened. Others are never aborted here, since
    a concurrent try may be about to record one; the orphan sweep removes what stays unrecorded.
    adopt=False skips the listing (one storage call instead of two): only when no try of the group's provisioning
    job has begun, so no upload of this file can exist yet.
    """
    key = record.storage_key(f)
    listed = await store.list_open_uploads(key) if adopt else []
    existing = sorted((u for u in listed if u.key == key), key=lambda u: (u.initiated_ms, u.upload_id))
    chosen = existing[0].upload_id if existing else await store.create_multipart(key)
    reply = await state.record_s3_upload(record, f.upload_id, chosen)
    if reply.code is Reply.OK:
        return chosen
    if reply.code is Reply.RECORDED:
        # A concurrent try recorded first: keep its upload, abort ours (unless it adopted the same one).
        if reply.text() != chosen:
            await store.abort_multipart(key, chosen)
        return reply.text()
    # The group or file no longer takes uploads (canceled, expired, gone): leave nothing open behind it.
    await store.abort_multipart(key, chosen)
    return None


async def provision_group(
    state: UploadState, store: ObjectStore, session_id: str, *, adopt: bool = True
) -> dict[str, str]:
    """Open one S3 multipart upload per multipart file of a group (see provision_file).

    adopt=False (a job's first try: no earlier try of it can have opened an upload) skips the listing.
    """
    snap = await state.snapshot(session_id)
    if snap is None:
        return {}
    outcome: dict[str, str] = {}
    for f in snap.record.files:
        if f.strategy is UploadStrategy.MULTIPART and not snap.s3_upload_id(f.upload_id):
            outcome[f.upload_id] = await provision_file(state, store, snap.record, f, adopt=adopt) or "aborted"
    return outcome
