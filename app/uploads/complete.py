"""Step 4, complete a file and hand the finished group off (SPEC 3.3).

API half: `complete_file_upload` checks the part list, moves the file to `completing` and queues its completion
job in one script, then waits a bounded time for the worker (200 when done, 202 while it runs). Worker half:
`complete_file` runs CompleteMultipartUpload, checks the object's size with HeadObject and records the outcome
in one script; the group's last file takes the libraryId, writes the library record and queues the processing
job in that same script, so a group is handed off exactly once, whatever races it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import msgspec

from app.domain import errors, reasons
from app.domain.answers import CompletedFileView
from app.domain.checksums import Checksum, completion_checksums
from app.domain.clock import iso_ms, now_ms
from app.domain.contract import UploadStrategy, checksum_type
from app.domain.lifecycle import LIVE_GROUP, OPEN_FILE, FileStatus, GroupStatus, Reply
from app.domain.limits import Charge, charge_spent, complete_cost
from app.domain.parts import completed_parts
from app.domain.reasons import SENTENCES, Reason, mismatch_figures
from app.domain.records import FileRecord, GroupRecord
from app.domain.validation import decode_json_body
from app.settings import Settings
from app.state import GroupSnapshot, ScriptReply, UploadState
from app.state.apikeys import Principal
from app.state.jobs import COMPLETE_JOB, JobSpec, LibraryTemplate, complete_job_id, ending
from app.uploads.assemble import Completion, verified_checksum
from app.uploads.polling import FIRST_INTERVAL, poll_until
from app.uploads.refusals import file_refusal
from app.uploads.service import UploadService
from app.uploads.views import completed_view

if TYPE_CHECKING:
    from app.storage.s3 import HeadResult, ObjectStore

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
    algorithm = snap.checksum_algorithm(upload_id)
    sums = completion_checksums(payload, algorithm, f.strategy, f.total_parts)
    # The job's arguments are what they always were for a file without checksums.
    checks = () if algorithm is None else ({"parts": sums.parts, "whole": sums.whole},)
    if f.strategy is UploadStrategy.MULTIPART and snap.s3_upload_id(upload_id) is None:
        # Nothing can have been uploaded yet; completing now would only race the provisioning.
        raise errors.FILE_NOT_PROVISIONED(
            f"File {upload_id} has no storage upload yet: get its part URLs, upload the parts, then complete."
        )
    with _settle_watch(service, session_id, upload_id) as wake:  # before the job is queued: no message passes by
        return await _begin_and_wait(service, principal, snap, f, parts, checks=checks, charge=charge, wake=wake)


def _settle_watch(service: UploadService, session_id: str, upload_id: str) -> contextlib.AbstractContextManager[
    asyncio.Event | None
]:  # fmt: skip
    if service.settled is None:
        return contextlib.nullcontext()
    return service.settled.waiting(f"{session_id}:{upload_id}")


async def _begin_and_wait(
    service: UploadService, principal: Principal, snap: GroupSnapshot, f: FileRecord, parts: list[tuple[int, str]],
    *, checks: tuple[dict[str, Any], ...], charge: Charge | None, wake: asyncio.Event | None,
) -> tuple[int, CompletedFileView]:  # fmt: skip
    session_id, upload_id = snap.record.session_id, f.upload_id
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
            COMPLETE_JOB, (session_id, upload_id, attempt + 1, parts, *checks),
            job_id=complete_job_id(session_id, upload_id, attempt + 1),
            queue=service.settings.worker.queue_name,
        )  # fmt: skip
        reply = await service.state.begin_complete(snap.record, upload_id, now_ms=now, attempt_seen=attempt, job=job)
        if reply.code is Reply.OK:
            started = True
            break
        # Someone else moved the file meanwhile (a concurrent complete, a cancel): look again.
        snap = await service.load_group(principal, session_id)
    return await _await_completion(service, principal, session_id, f, just_queued=started, wake=wake)


JOB_PICKUP_SECONDS = 0.1
"""When a completion queued a moment ago may first be done: a worker polls its queue every 50 ms, and the job
itself makes two storage calls. Looking sooner costs Redis a read that cannot succeed."""
BACKSTOP_SECONDS = 1.0
"""With the completion notifications up (app/state/settled.py), how often a wait still looks by itself: only a
message lost in a failover, or a group canceled meanwhile (no message), waits for it."""


async def _await_completion(
    service: UploadService, principal: Principal, session_id: str, f: FileRecord, *, just_queued: bool,
    wake: asyncio.Event | None,
) -> tuple[int, CompletedFileView]:  # fmt: skip
    def settled(s: GroupSnapshot) -> bool:
        return s.file_status(f.upload_id) is not FileStatus.COMPLETING or s.status not in LIVE_GROUP

    notified = wake is not None and service.settled is not None and service.settled.listening
    if notified:  # the end of the attempt is announced: look when it is, or now and then
        first, interval = (BACKSTOP_SECONDS if just_queued else 0.0), BACKSTOP_SECONDS
    else:
        first, interval = (JOB_PICKUP_SECONDS if just_queued else 0.0), FIRST_INTERVAL
    snap, done = await poll_until(
        lambda: service.load_group(principal, session_id), settled, within=service.settings.api.complete_wait_seconds,
        first_after=first, interval=interval, wake=wake,
    )  # fmt: skip
    if not done:
        return 202, completed_view(snap, f)
    status = snap.file_status(f.upload_id)
    if _completed(snap, f.upload_id):
        return 200, completed_view(snap, f)
    if status in OPEN_FILE:  # handed back by the worker (normally 'uploading')
        code, sentence = snap.failure(f.upload_id) or (Reason.MISSING_PARTS, SENTENCES[Reason.MISSING_PARTS])
        if code is Reason.CHECKSUM_MISMATCH:
            raise errors.CHECKSUM_MISMATCH(
                f"Storage refused the completion: {sentence}. The file is still uploading: send the part again "
                "(a new part-urls call with its checksum) or correct the checksum, and complete again.",
                extra={"reason": code.value, **mismatch_figures(sentence)},
            )  # fmt: skip
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


def library_payload(
    record: GroupRecord, bucket: str, completed_ms: int, checksums: dict[str, Checksum] | None = None
) -> dict[str, object]:
    """The library record / processing job payload of a completed group, without its libraryId; a file's
    `checksum` only when one was recorded (`checksums` by uploadId)."""
    sums = checksums or {}
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
                **({"checksum": msgspec.to_builtins(sums[f.upload_id])} if f.upload_id in sums else {}),
            }
            for f in record.files
        ],
    }


async def complete_file(
    state: UploadState, store: ObjectStore, settings: Settings, *, session_id: str, upload_id: str, attempt: int,
    parts: list[tuple[int, str]], checks: dict[str, Any] | None = None,
) -> str:  # fmt: skip
    """Assemble (multipart) and verify one file, then record the outcome atomically. `checks`: the checksums the
    complete call carried (`parts`: by part number, `whole`), for a file with a checksum algorithm.

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
    stored = await _stored(store, settings, snap, f, parts=parts, checks=checks or {})
    if isinstance(stored, str):
        return await hand_back(stored)
    head, checksum = stored
    size = head.size
    now = now_ms()
    if size != f.total_bytes:
        await state.fail_file(
            snap.record, upload_id, now_ms=now, reason=reasons.size_mismatch(size, f.total_bytes),
            end=ending(settings, session_id, snap.record.key_prefix),
        )  # fmt: skip
        await store.delete_objects([key])
        return "failed"
    reply = await _finish(state, settings, snap, upload_id, now=now, checksum=checksum)
    if reply.code is Reply.GROUP_STATE:
        # Canceled or expired while we assembled it: the purge may already have run, so clean up here.
        await store.delete_objects([key])
    if reply.code is Reply.GROUP_COMPLETED:
        log.info("group %s completed: library %s", session_id, reply.text())
    return reply.code.value


async def _stored(
    store: ObjectStore, settings: Settings, snap: GroupSnapshot, f: FileRecord, *, parts: list[tuple[int, str]],
    checks: dict[str, Any],
) -> tuple[HeadResult, Checksum | None] | str:  # fmt: skip
    """Assemble a multipart file, then what storage holds and its verified checksum; or the reason to hand the
    file back with (storage refused the parts or a checksum, or holds no object)."""
    key = snap.record.storage_key(f)
    algorithm = snap.checksum_algorithm(f.upload_id)
    kind = checksum_type(algorithm, f.strategy) if algorithm is not None else None
    whole = checks.get("whole")
    if f.strategy is UploadStrategy.MULTIPART:
        refusal = await Completion(
            store, key, snap.s3_upload_id(f.upload_id), parts, algorithm=algorithm, kind=kind,
            part_checksums={int(n): str(v) for n, v in (checks.get("parts") or {}).items()}, whole=whole,
            conditional=settings.storage.conditional_complete,
        ).run()  # fmt: skip
        if refusal is not None:
            return refusal
    head = await store.head(key)
    if head is None:
        return reasons.stored(Reason.OBJECT_MISSING)
    checksum = verified_checksum(head, algorithm, kind)
    if f.strategy is UploadStrategy.SINGLE_PUT and whole and checksum is not None and checksum.value != whole:
        return reasons.checksum_mismatch(None, whole, checksum.value)
    return head, checksum


async def _finish(
    state: UploadState,
    settings: Settings,
    snap: GroupSnapshot,
    upload_id: str,
    *,
    now: int,
    checksum: Checksum | None,
) -> ScriptReply:
    """finish_complete with the library template built from the files' recorded checksums; built again when another
    file's was recorded meanwhile (CHECKSUMS_CHANGED: it completed concurrently)."""
    encoded = checksum.encode() if checksum is not None else ""
    for _ in range(BEGIN_TRIES):
        sums = {g.upload_id: c for g in snap.record.files if (c := snap.checksum(g.upload_id)) is not None}
        if checksum is not None:
            sums[upload_id] = checksum
        payload = library_payload(snap.record, settings.storage.bucket, now, sums)
        reply = await state.finish_complete(
            snap.record, upload_id, now_ms=now, retention_ms=settings.uploads.retention_seconds * 1000,
            library=LibraryTemplate.build(payload, now_ms=now), processing_queue=settings.worker.processing_queue_name,
            checksum=encoded, checksums_seen=_seen(snap, upload_id, encoded),
        )  # fmt: skip
        if reply.code is not Reply.CHECKSUMS_CHANGED:
            return reply
        snap = await state.snapshot(snap.record.session_id) or snap
    raise RuntimeError(f"the checksums of group {snap.record.session_id} kept changing while completing {upload_id}")


def _seen(snap: GroupSnapshot, upload_id: str, encoded: str) -> str:
    """The files' recorded checksums as the library template holds them (this file's: `encoded`), '' when no file of
    the group has a checksum algorithm (finish_complete then checks nothing)."""
    seen = snap.checksums_seen()
    if not seen:
        return ""
    mine = snap.record.index(upload_id)
    return "\n".join(encoded if i == mine else v for i, v in enumerate(seen.split("\n")))
