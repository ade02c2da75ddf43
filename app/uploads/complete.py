"""Step 4, complete a file and hand the finished group off (SPEC 3.3).

API half: `complete_file_upload` checks the part list, moves the file to `completing` and queues its completion
job in one script, then waits a bounded time for the worker (200 when done, 202 while it runs). Worker half:
`complete_file` runs CompleteMultipartUpload, checks the object's size with HeadObject and records the outcome
in one script; the group's last file takes the libraryId, writes the library record and queues the processing
job in that same script, so a group is handed off exactly once, whatever races it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from app.domain import errors, reasons
from app.domain.answers import CompletedFileView
from app.domain.clock import iso_ms, now_ms
from app.domain.contract import UploadStrategy
from app.domain.lifecycle import LIVE_GROUP, OPEN_FILE, FileStatus, GroupStatus, Reply
from app.domain.limits import Charge, charge_spent, complete_cost
from app.domain.parts import completed_parts
from app.domain.reasons import SENTENCES, Reason
from app.domain.records import FileRecord, GroupRecord
from app.domain.validation import decode_json_body
from app.settings import Settings
from app.state import GroupSnapshot, UploadState
from app.state.apikeys import Principal
from app.state.jobs import COMPLETE_JOB, JobSpec, LibraryTemplate, complete_job_id, ending
from app.uploads.polling import poll_until
from app.uploads.refusals import file_refusal
from app.uploads.service import UploadService
from app.uploads.views import completed_view

if TYPE_CHECKING:
    from app.storage.s3 import ObjectStore

log = logging.getLogger("spatialgen.uploads")
BEGIN_TRIES = 5
"""How often a complete call starts over when another call moved the file meanwhile."""


# --- API half ---------------------------------------------------------------------------------


async def complete_file_upload(
    service: UploadService, principal: Principal, session_id: str, upload_id: str, body: bytes,
    *, charge: Charge | None = None,
) -> tuple[int, CompletedFileView]:  # fmt: skip
    """Finalize one file: 200 when done, 202 while the worker is still at it. A call that starts a completion
    costs one more token per 100 parts (`charge`); a repeat while one runs costs only its own."""
    payload = decode_json_body(body) if body.strip() else None
    snap, f = await service.load_file(principal, session_id, upload_id)
    if _completed(snap, upload_id):
        return 200, completed_view(snap, f)  # a repeat needs no part list
    service.ensure_live(snap, service.clock.now_ms())
    parts = completed_parts(payload, f.total_parts, required=f.strategy is UploadStrategy.MULTIPART)
    if f.strategy is UploadStrategy.MULTIPART and snap.s3_upload_id(upload_id) is None:
        # Nothing can have been uploaded yet; completing now would only race the provisioning.
        raise errors.FILE_NOT_PROVISIONED(
            f"File {upload_id} has no storage upload yet: get its part URLs, upload the parts, then complete."
        )
    started = False
    for _ in range(BEGIN_TRIES):
        status = snap.file_status(upload_id)
        if _completed(snap, upload_id):
            return 200, completed_view(snap, f)
        now = service.clock.now_ms()
        service.ensure_live(snap, now)
        if status is FileStatus.COMPLETING:
            break
        if status is FileStatus.FAILED:
            raise file_refusal(snap, f, status)
        attempt = snap.attempt(upload_id)
        allowed = service.settings.limits.complete_attempts
        if attempt >= allowed:
            raise errors.COMPLETION_ATTEMPTS_EXHAUSTED(
                f"File {upload_id} has started {attempt} completions, the most a file may; cancel the group and "
                "start again.", extra={"attempts": attempt, "maxAttempts": allowed},
            )  # fmt: skip
        await service.charge(principal, charge, complete_cost(len(parts)) - charge_spent(charge))
        job = JobSpec.build(
            COMPLETE_JOB, (session_id, upload_id, attempt + 1, parts),
            job_id=complete_job_id(session_id, upload_id, attempt + 1),
            queue=service.settings.worker.queue_name,
        )  # fmt: skip
        reply = await service.state.begin_complete(snap.record, upload_id, now_ms=now, attempt_seen=attempt, job=job)
        if reply.code is Reply.OK:
            started = True
            break
        # Someone else moved the file meanwhile (a concurrent complete, a cancel): look again.
        snap = await service.load_group(principal, session_id)
    return await _await_completion(service, principal, session_id, f, just_queued=started)


JOB_PICKUP_SECONDS = 0.1
"""When a completion queued a moment ago may first be done: a worker polls its queue every 50 ms, and the job
itself makes two storage calls. Looking sooner costs Redis a read that cannot succeed."""


async def _await_completion(
    service: UploadService, principal: Principal, session_id: str, f: FileRecord, *, just_queued: bool
) -> tuple[int, CompletedFileView]:
    def settled(s: GroupSnapshot) -> bool:
        return s.file_status(f.upload_id) is not FileStatus.COMPLETING or s.status not in LIVE_GROUP

    snap, done = await poll_until(
        lambda: service.load_group(principal, session_id), settled, within=service.settings.api.complete_wait_seconds,
        first_after=JOB_PICKUP_SECONDS if just_queued else 0.0,
    )  # fmt: skip
    if not done:
        return 202, completed_view(snap, f)
    status = snap.file_status(f.upload_id)
    if _completed(snap, f.upload_id):
        return 200, completed_view(snap, f)
    if status in OPEN_FILE:  # handed back by the worker (normally 'uploading')
        code, sentence = snap.failure(f.upload_id) or (Reason.MISSING_PARTS, SENTENCES[Reason.MISSING_PARTS])
        raise errors.MISSING_PARTS(
            f"Storage refused the completion ({code}): {sentence}. "
            "Upload the missing parts (GET .../parts lists what storage has) and complete again.",
            extra={"reason": code.value},
        )
    if status is FileStatus.FAILED:
        raise file_refusal(snap, f, status)
    service.ensure_live(snap, service.clock.now_ms())  # the group died meanwhile: its 409
    raise file_refusal(snap, f, status)


def _completed(snap: GroupSnapshot, upload_id: str) -> bool:
    """The file is completed and its group did not end otherwise (a completed file of a canceled group is not)."""
    return snap.file_status(upload_id) is FileStatus.COMPLETED and snap.status in (*LIVE_GROUP, GroupStatus.COMPLETED)


# --- worker half ------------------------------------------------------------------------------


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


async def _assemble(store: ObjectStore, key: str, s3_id: str | None, parts: list[tuple[int, str]]) -> str | None:
    """CompleteMultipartUpload; None when the object is assembled (now or by an earlier try), else the stored
    reason the file is handed back with (storage refused the part list, or there is no upload to complete)."""
    if s3_id is None:
        return reasons.stored(Reason.STORAGE_NOT_PROVISIONED)
    try:
        await store.complete_multipart(key, s3_id, parts)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code == "NoSuchUpload" and await store.head_size(key) is not None:
            return None  # an earlier try assembled it; the caller verifies it
        refusal = reasons.from_storage_error(code)
        if refusal is None:
            raise
        # Storage's own message stays in the log; the client gets the stable reason.
        log.info("complete %s refused by storage: %s %s", key, code, exc.response.get("Error", {}).get("Message", ""))
        return refusal
    return None


async def complete_file(
    state: UploadState, store: ObjectStore, settings: Settings, *, session_id: str, upload_id: str, attempt: int,
    parts: list[tuple[int, str]],
) -> str:  # fmt: skip
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

    async def hand_back(reason: str) -> str:
        await state.reject_complete(session_id, upload_id, attempt=attempt, now_ms=now_ms(), reason=reason)
        return "rejected"

    key = snap.record.storage_key(f)
    if f.strategy is UploadStrategy.MULTIPART:
        refusal = await _assemble(store, key, snap.s3_upload_id(upload_id), parts)
        if refusal is not None:
            return await hand_back(refusal)
    size = await store.head_size(key)
    if size is None:
        return await hand_back(reasons.stored(Reason.OBJECT_MISSING))
    now = now_ms()
    retention_ms = settings.uploads.retention_seconds * 1000
    if size != f.total_bytes:
        await state.fail_file(
            snap.record, upload_id, now_ms=now, reason=reasons.size_mismatch(size, f.total_bytes),
            end=ending(settings, session_id, snap.record.key_prefix),
        )  # fmt: skip
        await store.delete_objects([key])
        return "failed"
    reply = await state.finish_complete(
        snap.record, upload_id, now_ms=now, retention_ms=retention_ms,
        library=LibraryTemplate.build(library_payload(snap.record, settings.storage.bucket, now), now_ms=now),
        processing_queue=settings.worker.processing_queue_name,
    )  # fmt: skip
    if reply.code is Reply.GROUP_STATE:
        # Canceled or expired while we assembled it: the purge may already have run, so clean up here.
        await store.delete_objects([key])
    if reply.code is Reply.GROUP_COMPLETED:
        log.info("group %s completed: library %s", session_id, reply.text())
    return reply.code.value
