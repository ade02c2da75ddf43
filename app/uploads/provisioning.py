"""Step 2, provisioning: open a multipart file's S3 multipart upload, when it first needs URLs, and record its id.

API half: part-urls of a file not provisioned yet opens its upload itself (`provision_for_client`): one storage call,
and none at all for a group that is canceled before anyone asks for URLs. Worker half: only when storage does not
answer the API in time, the group's provisioning job (`provision_group`) does the same for every multipart file of
the group, with retries. A try that stops after CreateMultipartUpload and before recording it is never doubled: each
try notes that it began, and the next one lists the open uploads of the file and adopts the oldest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from app.domain.clock import now_ms
from app.domain.contract import ChecksumAlgorithm, UploadStrategy, checksum_type, content_type
from app.domain.lifecycle import Reply
from app.domain.records import FileRecord
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


async def provision_for_client(
    service: UploadService, snap: GroupSnapshot, f: FileRecord, algorithm: ChecksumAlgorithm | None
) -> str:
    """The file's S3 upload id, for a client that is waiting for it in part-urls; `algorithm` is the file's checksum
    algorithm as its part-urls call fixed it (snap may predate that).

    If storage does not answer within SPATIALGEN_PROVISION_WAIT_SECONDS, the worker's job is left to do it
    (503 and Retry-After). A group that ended meanwhile gets its 409.
    """
    wait = service.settings.api.provision_wait_seconds
    if service.storage is None:
        return await _wait_for_worker(service, snap.record.session_id, f.upload_id, wait)
    deadline = time.monotonic() + wait
    try:
        async with asyncio.timeout(wait):
            store = await service.storage.get()
            s3_id = await provision_file(service.state, store, snap, f, algorithm=algorithm)
    except RedisError:
        raise  # the state store is down: its own 503
    except Exception as exc:  # storage slow or refusing: the worker's job (and its retries) take over
        log.warning("provisioning %s for a waiting client failed: %r", f.upload_id, exc)
        left = max(0.0, deadline - time.monotonic())  # a quick refusal leaves time to wait for a worker
        return await _wait_for_worker(service, snap.record.session_id, f.upload_id, left)
    if s3_id is None:  # the group ended meanwhile: its 409
        fresh = await service.state.snapshot(snap.record.session_id)
        service.ensure_live(fresh or snap, service.clock.now_ms())
        raise script_refusal(fresh or snap, ScriptReply(Reply.GONE), f)
    return s3_id


async def _wait_for_worker(service: UploadService, session_id: str, upload_id: str, within: float) -> str:
    # The group's provisioning job: its deterministic id makes this a no-op while it is queued or running (many
    # clients of one group waiting at once queue one job); one that finished or gave up is queued again.
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
    state: UploadState,
    store: ObjectStore,
    snap: GroupSnapshot,
    f: FileRecord,
    *,
    adopt: bool = False,
    algorithm: ChecksumAlgorithm | None = None,
) -> str | None:
    """Open (or adopt) the S3 multipart upload of one file and record it; returns the recorded id, or None
    if the group or file no longer takes uploads (then nothing is left open behind it).

    Idempotent and safe to run concurrently (the API and a worker, or two API processes). A try notes that it began
    before it opens an upload; when an earlier try began (or `adopt`), the oldest open upload under the key is
    adopted rather than a second one opened, since that try may have died after opening it. Others are never
    aborted here (a concurrent try may be about to record one); the orphan sweep removes a second upload the record
    does not name. A first try costs one storage call.
    """
    record = snap.record
    key = record.storage_key(f)
    algorithm = algorithm or snap.checksum_algorithm(f.upload_id)
    checksum = (algorithm.value, checksum_type(algorithm, f.strategy).value) if algorithm is not None else None
    listed = await store.list_open_uploads(key) if adopt or snap.provisioning_began(f.upload_id) else []
    existing = sorted((u for u in listed if u.key == key), key=lambda u: (u.initiated_ms, u.upload_id))
    if existing:
        chosen = existing[0].upload_id
    else:
        await state.note_provisioning(record.session_id, f.upload_id, now_ms())
        chosen = await store.create_multipart(key, content_type(f.ext), checksum=checksum)
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

    adopt: a retry of the job (arq counts tries, a killed one included) looks for what an earlier try opened.
    """
    snap = await state.snapshot(session_id)
    if snap is None:
        return {}
    outcome: dict[str, str] = {}
    for f in snap.record.files:
        if f.strategy is UploadStrategy.MULTIPART and not snap.s3_upload_id(f.upload_id):
            outcome[f.upload_id] = await provision_file(state, store, snap, f, adopt=adopt) or "aborted"
    return outcome
