"""Storage work run by the arq workers: provisioning multipart uploads (and, later, completion and cleanup).

Every task is idempotent: a retried or duplicated job converges on the same storage state.
"""

from __future__ import annotations

import logging

from botocore.exceptions import BotoCoreError, ClientError

from app import reasons
from app.lifecycle import LIVE_GROUP, PURGED_GROUP, FileStatus, Reply
from app.models import FileRecord, GroupRecord, UploadStrategy
from app.objectkeys import parse_object_key, root_prefix
from app.reasons import Reason
from app.rules import part_range
from app.settings import Settings
from app.state import GroupSnapshot, Progress, UploadState
from app.state.jobs import LibraryTemplate, processing_job, purge_jobs
from app.state.pipeline import REDIS_UNAVAILABLE
from app.storage.s3 import ObjectStore, StorageDeleteError, error_code
from app.timefmt import iso_ms, now_ms

log = logging.getLogger("spatialgen.worker")


# CompleteMultipartUpload errors that mean "the client's part list doesn't match storage": the
# file goes back to 'uploading' so the client can upload what is missing and complete again.
def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: storage network trouble, throttling and 5xx; Redis unreachable,
    restarting, read-only after a failover or out of memory. False for client errors and our bugs."""
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return status >= 500 or status == 429 or error_code(exc) in ("SlowDown", "RequestTimeout", "InternalError")
    return isinstance(exc, (BotoCoreError, OSError, TimeoutError, StorageDeleteError, *REDIS_UNAVAILABLE))


async def provision_file(
    state: UploadState, store: ObjectStore, record: GroupRecord, f: FileRecord, *, adopt: bool = True
) -> str | None:
    """Open (or adopt) the S3 multipart upload of one file and record it; returns the recorded id, or None
    if the group or file no longer takes uploads (then nothing is left open behind it).

    Idempotent and safe to run concurrently (the API runs it for a waiting client while a worker may run
    it too). An earlier try may have created an upload and died before recording it: the oldest open
    upload under the key is adopted rather than a second one opened. Others are never aborted here, since
    a concurrent try may be about to record one; the orphan sweep removes what stays unrecorded.
    adopt=False skips the listing (one storage call instead of two, for a client that is waiting): an
    unrecorded upload of a crashed try is then left to the orphan sweep instead of being adopted.
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


def library_payload(record: GroupRecord, bucket: str, completed_ms: int) -> dict[str, object]:
    """The library record / processing job payload of a completed group, without its libraryId."""
    return {
        "sessionId": record.session_id,
        "account": record.account,
        "videoName": record.video_name,
        "description": record.description,
        "layout": record.layout.value,
        "perspective": record.perspective.value if record.perspective else None,
        "folderName": record.folder_name,
        "bucket": bucket,
        "createdAt": iso_ms(record.created_ms),
        "completedAt": iso_ms(completed_ms),
        "files": [
            {
                "uploadId": f.upload_id,
                "fileRole": f.role.value,
                "fileName": f.name,
                "storageKey": record.storage_key(f),
                "sizeBytes": f.total_bytes,
                "languageTag": f.language,
            }
            for f in record.files
        ],
    }


async def complete_file(  # noqa: PLR0911 - each return names one outcome of the completion
    state: UploadState,
    store: ObjectStore,
    settings: Settings,
    *,
    session_id: str,
    upload_id: str,
    attempt: int,
    parts: list[tuple[int, str]],
) -> str:
    """Assemble (multipart) and verify one file, then record the outcome atomically.

    Safe to run twice: a try that died after CompleteMultipartUpload finds NoSuchUpload on the
    retry, and then verifies the object that the first try assembled.
    """
    snap = await state.snapshot(session_id)
    f = snap.record.file(upload_id) if snap else None
    if snap is None or f is None:
        return "gone"
    if snap.file_status(upload_id) is not FileStatus.COMPLETING or snap.attempt(upload_id) != attempt:
        return "stale"  # a newer attempt exists, or the group was canceled meanwhile
    key = snap.record.storage_key(f)
    if f.strategy is UploadStrategy.MULTIPART:
        s3_id = snap.s3_upload_id(upload_id)
        if s3_id is None:
            await state.reject_complete(
                session_id, upload_id, attempt=attempt, now_ms=now_ms(), reason=reasons.stored(Reason.NOT_PROVISIONED)
            )
            return "rejected"
        try:
            await store.complete_multipart(key, s3_id, parts)
        except ClientError as exc:
            code = error_code(exc)
            refusal = reasons.from_storage_error(code)
            if code == "NoSuchUpload" and await store.head_size(key) is not None:
                pass  # an earlier try assembled it; verify below
            elif refusal is not None:
                # Storage's own message stays in the log; the client gets the stable reason.
                log.info("complete %s/%s refused by storage: %s %s", session_id, upload_id, code,
                         exc.response.get("Error", {}).get("Message", ""))  # fmt: skip
                await state.reject_complete(session_id, upload_id, attempt=attempt, now_ms=now_ms(), reason=refusal)
                return "rejected"
            else:
                raise
    size = await store.head_size(key)
    if size is None:
        await state.reject_complete(
            session_id,
            upload_id,
            attempt=attempt,
            now_ms=now_ms(),
            reason=reasons.stored(Reason.OBJECT_MISSING),
        )
        return "rejected"
    now = now_ms()
    if size != f.total_bytes:
        reason = reasons.size_mismatch(size, f.total_bytes)
        await state.fail_file(
            snap.record, upload_id, now_ms=now, reason=reason, retention_ms=settings.retention_seconds * 1000,
            purges=purge_jobs(settings, session_id, now, snap.record.key_prefix),
            ended_cap=settings.retained_ended_groups,
        )  # fmt: skip
        await store.delete_objects([key])
        return "failed"
    # Everything the client listed is in the object now: track it as fully received.
    await state.record_parts(session_id, upload_id, None, progress=Progress(f.total_parts, f.total_bytes, now))
    reply = await state.finish_complete(
        snap.record, upload_id, now_ms=now, retention_ms=settings.retention_seconds * 1000,
        library=LibraryTemplate.build(library_payload(snap.record, settings.s3_bucket, now), now_ms=now),
        processing_queue=settings.processing_queue_name,
    )  # fmt: skip
    if reply.code is Reply.GROUP_STATE:
        # Canceled or expired while we assembled it: the purge may already have run, so clean up here.
        await store.delete_objects([key])
    if reply.code is Reply.GROUP_COMPLETED:
        log.info("group %s completed: library %s", session_id, reply.text())
    return reply.code.value


async def purge_group(state: UploadState, store: ObjectStore, session_id: str, key_prefix: str = "") -> dict[str, int]:
    """Abort every open multipart upload and delete every object of a canceled, expired or failed group.

    key_prefix: the group's storage prefix, carried by the job. When the group's keys are gone (its account's
    ended-groups cap dropped it before this purge ran), everything under the prefix goes: purge jobs are only
    queued when a group ends without completing, and session ids are never reused, so nothing live or
    completed is under it.
    """
    snap = await state.snapshot(session_id)
    if snap is None:
        if not key_prefix.endswith(f"/{session_id}/"):
            return {"aborted": 0, "deleted": 0}  # no record and no prefix of this group: nothing to go by
        prefix, keys = key_prefix, [o.key async for page in store.object_pages(key_prefix) for o in page]
    elif snap.status not in PURGED_GROUP:
        return {"aborted": 0, "deleted": 0}  # never purge a live or completed group
    else:
        prefix, keys = snap.record.key_prefix, [snap.record.storage_key(f) for f in snap.record.files]
    aborted = 0
    for u in await store.list_open_uploads(prefix):
        aborted += await store.abort_multipart(u.key, u.upload_id)
    await store.delete_objects(keys)
    return {"aborted": aborted, "deleted": len(keys)}


async def refresh_parts(  # noqa: PLR0911 - one early return per file state with nothing (more) to track
    state: UploadState, store: ObjectStore, session_id: str, upload_id: str
) -> int:
    """Record which parts (and bytes) the store has received for one file; returns the part count."""
    snap = await state.snapshot(session_id)
    f = snap.record.file(upload_id) if snap else None
    if snap is None or f is None:
        return 0
    status = snap.file_status(upload_id)
    if status in (FileStatus.CANCELED, FileStatus.EXPIRED, FileStatus.FAILED):
        return 0
    key = snap.record.storage_key(f)
    now = now_ms()
    if status is FileStatus.COMPLETED:
        await state.record_parts(session_id, upload_id, None, progress=Progress(f.total_parts, f.total_bytes, now))
        return f.total_parts
    if f.strategy is UploadStrategy.SINGLE_PUT:
        size = await store.head_size(key)
        await state.record_parts(
            session_id, upload_id, [(1, "", size)] if size is not None else [],
            progress=Progress(int(size is not None), size or 0, now),
        )  # fmt: skip
        return int(size is not None)
    s3_id = snap.s3_upload_id(upload_id)
    if s3_id is None:
        return 0
    try:
        stored = await store.list_parts(key, s3_id)
    except ClientError as exc:
        if error_code(exc) == "NoSuchUpload":
            return 0  # completed or aborted meanwhile; the next state change records the truth
        raise
    # Count only parts whose size fits their byte range: a short or oversized PUT is not "received".
    fitting = []
    for p in stored:
        lo, hi = part_range(p.part_number, f.part_size, f.total_bytes)
        if p.part_number <= f.total_parts and p.size == hi - lo:
            fitting.append(p)
    await state.record_parts(
        session_id, upload_id, [(p.part_number, p.etag, p.size) for p in stored],
        progress=Progress(len(fitting), sum(p.size for p in fitting), now),
    )  # fmt: skip
    return len(fitting)


SWEEP_BATCH = 500


async def expire_due_groups(state: UploadState, settings: Settings, *, now: int | None = None) -> int:
    """Expire every group past its expiresAt, found through the time-ordered index; returns how many.

    Each group changes in one script, pipelined SWEEP_BATCH at a time. Sweeps racing each other (several
    workers on one cron tick) change each group once; a sweep that dies halfway leaves the rest in the
    index for the next tick.
    """
    now = now_ms() if now is None else now
    expired = 0
    while True:
        due = await state.due_groups(now, SWEEP_BATCH)
        if not due:
            return expired
        found = await state.records(due)
        purges = [purge_jobs(settings, sid, now, r.key_prefix if r else "") for sid, r in zip(due, found, strict=True)]
        outcomes = await state.expire_groups(
            due, now_ms=now, retention_ms=settings.retention_seconds * 1000,
            idle_retention_ms=settings.idle_group_seconds * 1000, purges=purges,
            ended_cap=settings.retained_ended_groups, records=found,
        )  # fmt: skip
        expired += sum(1 for reply in outcomes if reply.code is Reply.OK)
        if len(due) < SWEEP_BATCH:
            return expired


async def abort_orphan_uploads(
    state: UploadState, store: ObjectStore, settings: Settings, *, now: int | None = None
) -> int:
    """Abort multipart uploads under the key prefix that no live file owns and that are past the grace period.

    Such an upload exists when a worker died between CreateMultipartUpload and recording its id, when two
    provisioning tries raced, or when a purge failed for good. An upload of a live file that is not
    recorded yet is left alone: its provisioning adopts it. Each listing page is dealt with before the
    next is read, so a sweep over millions of uploads makes progress even if it is cut short.
    """
    now = now_ms() if now is None else now
    aborted = 0
    async for page in store.open_upload_pages(root_prefix(settings.s3_key_prefix)):
        snapshots: dict[str, GroupSnapshot | None] = {}
        for u in page:
            parsed = parse_object_key(settings.s3_key_prefix, u.key)
            if now - u.initiated_ms < settings.orphan_grace_seconds * 1000 or parsed is None:
                continue  # too young to judge, or not a key this service made (leave it to whoever did)
            if parsed.session_id not in snapshots:
                snapshots[parsed.session_id] = await state.snapshot(parsed.session_id)
            snap = snapshots[parsed.session_id]
            owned = (
                snap is not None
                and snap.status in LIVE_GROUP
                and snap.record.file(parsed.upload_id) is not None
                and snap.s3_upload_id(parsed.upload_id) in (None, u.upload_id)
            )
            if not owned:
                aborted += await store.abort_multipart(u.key, u.upload_id)
    if aborted:
        log.warning("aborted %d orphaned multipart uploads", aborted)
    return aborted


async def reconcile_objects(
    state: UploadState, store: ObjectStore, settings: Settings, *, now: int | None = None
) -> int:
    """Delete stored objects under the key prefix that belong to no live or retained group (past the grace).

    Purges delete a canceled, expired or failed group's objects; this catches what they missed (a PUT
    that landed after the late purge, a purge that gave up) and the objects of groups whose retention has
    lapsed (their keys are gone from Redis). Objects of live and completed groups are kept.
    """
    now = now_ms() if now is None else now
    deleted = 0
    async for page in store.object_pages(root_prefix(settings.s3_key_prefix)):
        snapshots: dict[str, GroupSnapshot | None] = {}
        doomed = []
        for obj in page:
            parsed = parse_object_key(settings.s3_key_prefix, obj.key)
            if now - obj.modified_ms < settings.orphan_grace_seconds * 1000 or parsed is None:
                continue
            if parsed.session_id not in snapshots:
                snapshots[parsed.session_id] = await state.snapshot(parsed.session_id)
            snap = snapshots[parsed.session_id]
            if snap is None or snap.record.file(parsed.upload_id) is None or snap.status in PURGED_GROUP:
                doomed.append(obj.key)
        if doomed:
            await store.delete_objects(doomed)
            deleted += len(doomed)
    if deleted:
        log.warning("deleted %d stored objects no live or retained group owns", deleted)
    return deleted


REDRIVE_MIN_AGE_MS = 30_000
"""A completion or hand-off younger than this is not judged yet (its job is normally just starting)."""
REDRIVE_BATCH = 500
INTERRUPTED = reasons.stored(Reason.INTERRUPTED)
"""The stable reason a file is handed back with when its completion job is gone."""


async def redrive(state: UploadState, settings: Settings, *, now: int | None = None) -> dict[str, int]:
    """Re-drive work whose job is gone: completions stuck in 'completing', and lost processing jobs.

    A file stays 'completing' only while its completion job is queued or running (arq keeps the job key
    until the job ends, after the job has recorded its outcome). A file 'completing' with neither key goes
    back to 'uploading' with a stable reason; the client's next complete starts a new attempt. A completed
    group whose processing job is neither queued, running nor finished gets it queued again, same id.
    """
    now = now_ms() if now is None else now
    counts = {"completions_handed_back": 0, "processing_requeued": 0}
    for sid, uid in await state.completing_since(now - REDRIVE_MIN_AGE_MS, REDRIVE_BATCH):
        snap = await state.snapshot(sid)
        attempt = snap.attempt(uid) if snap is not None else 0
        reply = await state.redrive_completion(sid, uid, attempt=attempt, now_ms=now, reason=INTERRUPTED)
        counts["completions_handed_back"] += reply.code is Reply.OK
    for sid in await state.handoffs_since(now - REDRIVE_MIN_AGE_MS, REDRIVE_BATCH):
        record = await state.library_record(sid)
        job = processing_job(sid, record or {}, settings.processing_queue_name, now_ms())  # due at once
        reply = await state.redrive_handoff(sid, job)
        counts["processing_requeued"] += reply.code is Reply.QUEUED
    if any(counts.values()):
        log.warning("re-drive: %s", counts)
    return counts


__all__ = [
    "abort_orphan_uploads",
    "complete_file",
    "expire_due_groups",
    "is_transient",
    "provision_group",
    "purge_group",
    "reconcile_objects",
    "redrive",
    "refresh_parts",
]
