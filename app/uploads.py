"""The upload service: the use cases behind the HTTP routes (start, part URLs, complete, cancel, status, parts).

Handlers call these methods with an authenticated principal; storage work is handed to workers.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
from typing import assert_never, cast

import msgspec
from redis.exceptions import RedisError

from app import errors
from app.apikeys import Principal
from app.lifecycle import LIVE_GROUP, OPEN_FILE, TRACKED_FILE, FileStatus, GroupStatus, Reply
from app.limits import RateState, RouteClass
from app.models import (
    CanceledGroupView,
    CompletedFileView,
    FileRecord,
    GroupRecord,
    GroupStatusView,
    PartUrl,
    PartUrlsView,
    ReceivedPart,
    ReceivedPartsView,
    StartUploadRequest,
    UploadStrategy,
)
from app.objectkeys import group_prefix
from app.polling import poll_until
from app.reasons import SENTENCES, Reason
from app.rules import (
    completed_parts,
    decode_json_body,
    file_extension,
    parse_start_request,
    plan_parts,
    select_parts,
)
from app.settings import Settings
from app.state import GroupSnapshot, ScriptReply, UploadState
from app.state.jobs import (
    COMPLETE_JOB,
    PROVISION_JOB,
    REFRESH_PARTS_JOB,
    JobSpec,
    complete_job_id,
    provision_job_id,
    purge_jobs,
    refresh_job_id,
)
from app.state.keys import idempotency_key
from app.storage.credentials import StorageCredentialsError
from app.storage.lazy import LazyObjectStore
from app.storage.signer import SignBatch, Signer
from app.timefmt import iso_ms, now_ms
from app.views import completed_view, created_view, file_fields, group_status_view, shown_status

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
log = logging.getLogger("spatialgen.api")
MAX_IDEMPOTENCY_KEY_CHARS = 255
PROVISION_POLL_SECONDS = 0.1

_json = msgspec.json.Encoder()


def _check_idempotency_key(value: str) -> str:
    if not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY_CHARS or not value.isascii() or not value.isprintable():
        raise errors.INVALID_HEADER(
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters.",
            errors=[errors.FieldError("Idempotency-Key", "must be 1-255 printable ASCII characters")],
        )
    return hashlib.sha256(value.encode()).hexdigest()


def new_uuid4s(n: int) -> list[str]:
    """n random (version 4, RFC 4122 variant) UUID strings from one urandom call (cheaper than n uuid4())."""
    raw = bytearray(os.urandom(16 * n))
    out = []
    for i in range(0, 16 * n, 16):
        raw[i + 6] = (raw[i + 6] & 0x0F) | 0x40
        raw[i + 8] = (raw[i + 8] & 0x3F) | 0x80
        h = raw[i : i + 16].hex()
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


def rate_limited(route_class: RouteClass, rate: RateState) -> errors.ApiError:
    """The 429 of an empty bucket (Retry-After and the RateLimit headers say when to come back)."""
    return errors.RATE_LIMITED(
        f"Too many {route_class.value} requests for this API key: at most {rate.burst} at once and "
        f"{rate.per_second:g} a second; retry after the Retry-After delay.",
        headers=rate.headers(route_class),
    )


def quota_exceeded(account: str, reply: ScriptReply, rate: RateState) -> errors.ApiError:
    """The 429 of an account at a quota, naming the limit and the current use."""
    limit, maximum, current = reply.text(0), int(reply.text(1)), int(reply.text(2))
    what = "live upload groups" if limit == "liveGroups" else "declared bytes of live upload groups"
    return errors.QUOTA_EXCEEDED(
        f"Account {account} is at its quota of {maximum} {what} ({current} in use); complete or cancel groups "
        "first, or ask for a higher quota.",
        headers={**rate.headers(RouteClass.CREATE), "Retry-After": "60"},
        extra={"limit": limit, "max": maximum, "current": current},
    )


def group_refusal(snap: GroupSnapshot, status: GroupStatus) -> errors.ApiError:
    """The 409 of a group that no longer accepts uploads."""
    sid = snap.record.session_id
    match status:
        case GroupStatus.CANCELED:
            return errors.SESSION_CANCELED(f"Upload group {sid} was canceled; start a new group.")
        case GroupStatus.EXPIRED:
            expired_at = iso_ms(snap.record.expires_ms)
            return errors.SESSION_EXPIRED(f"Upload group {sid} expired at {expired_at}; start a new group.")
        case GroupStatus.COMPLETED:
            return errors.SESSION_COMPLETED(f"Upload group {sid} is already completed.")
        case GroupStatus.FAILED:
            return errors.SESSION_FAILED(f"Upload group {sid} failed; start a new group.")
        case GroupStatus.INITIALIZED | GroupStatus.UPLOADING:
            raise AssertionError(f"group {sid} is live; nothing to refuse")
        case _:  # pragma: no cover - mypy proves every status is handled
            assert_never(status)


def file_refusal(snap: GroupSnapshot, f: FileRecord, status: FileStatus) -> errors.ApiError:
    """The 409 of a file whose status forbids the call (canceled/expired files share their group's fate)."""
    match status:
        case FileStatus.COMPLETING:
            return errors.FILE_COMPLETING(f"File {f.upload_id} is being completed; repeat complete to poll.")
        case FileStatus.COMPLETED:
            return errors.FILE_COMPLETED(f"File {f.upload_id} is already completed.")
        case FileStatus.FAILED:
            failure = snap.failure(f.upload_id)
            code, sentence = failure or (Reason.UNSPECIFIED, SENTENCES[Reason.UNSPECIFIED])
            return errors.FILE_FAILED(f"File {f.upload_id} failed ({code}): {sentence}.", extra={"reason": code.value})
        case FileStatus.CANCELED:
            return group_refusal(snap, GroupStatus.CANCELED)
        case FileStatus.EXPIRED:
            return group_refusal(snap, GroupStatus.EXPIRED)
        case FileStatus.INITIALIZED | FileStatus.UPLOADING:
            raise AssertionError(f"file {f.upload_id} is open; nothing to refuse")
        case _:  # pragma: no cover - mypy proves every status is handled
            assert_never(status)


def script_refusal(snap: GroupSnapshot, reply: ScriptReply, f: FileRecord | None = None) -> errors.ApiError:
    """The 409 for a state script that said no (its GONE / EXPIRED / GROUP_STATE / FILE_STATE reply)."""
    if reply.code is Reply.FILE_STATE and f is not None:
        return file_refusal(snap, f, FileStatus(reply.text()))
    if reply.code is Reply.GROUP_STATE:
        return group_refusal(snap, GroupStatus(reply.text()))
    return group_refusal(snap, GroupStatus.EXPIRED)  # GONE or EXPIRED: its lifetime is over


class Created(msgspec.Struct, frozen=True):
    """Outcome of a start call: the JSON answer, whether it replays an earlier one, and the key's rate state."""

    session_id: str
    body: bytes
    replayed: bool
    rate: RateState | None = None


class UploadService:
    """Use cases of the upload API over Redis state; never touches object storage itself."""

    def __init__(
        self, settings: Settings, state: UploadState, signer: Signer | None = None,
        storage: LazyObjectStore | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.state = state
        self.storage = storage  # to provision a file a client is waiting for (None: leave it to workers)
        self.rates = settings.rates()
        self.signer = signer or Signer.from_settings(settings)

    # --- start -------------------------------------------------------------------------------------

    async def start_upload_group(self, principal: Principal, body: bytes, idem_header: str | None) -> Created:
        """Validate a start request, register the group and its files, and queue their provisioning."""
        request = parse_start_request(
            body, max_file_bytes=self.settings.max_file_bytes, max_files=self.settings.max_files_per_group
        )
        idem_key = None
        body_digest = b""
        if idem_header is not None:
            idem_key = idempotency_key(principal.account, _check_idempotency_key(idem_header))
            # The body is compared after canonical re-encoding: whitespace or key order don't make it "different".
            canonical = msgspec.json.encode(decode_json_body(body), order="sorted")
            body_digest = hashlib.sha256(canonical).hexdigest().encode()

        settings = self.settings
        for _ in range(3):  # a uuid4 collision is astronomically unlikely; retrying keeps it harmless
            record = self._new_group(principal.account, request)
            job = JobSpec.build(
                PROVISION_JOB, (record.session_id,), job_id=provision_job_id(record.session_id),
                now_ms=record.created_ms, queue=settings.queue_name,
            )  # fmt: skip
            # The idempotency answer is only the body's digest and the sessionId: a replay re-renders the answer
            # from the group's record (the same document), instead of keeping a second copy of it for a day.
            reply, rate = await self.state.create_group(
                record, key_id=principal.key_id, rate=self.rates[RouteClass.CREATE], quota=settings.quota(),
                idle_expires_ms=record.created_ms + settings.idle_group_seconds * 1000,
                key_ttl_ms=(settings.session_ttl_seconds + settings.retention_seconds) * 1000, job=job,
                idem_key=idem_key, idem_value=body_digest + b"\n" + record.session_id.encode(),
                idem_ttl_ms=settings.idempotency_ttl_seconds * 1000,
            )  # fmt: skip
            if reply.code is Reply.CREATED:
                return Created(record.session_id, _json.encode(created_view(record)), replayed=False, rate=rate)
            if reply.code is Reply.REPLAY:
                return await self._replay(cast(bytes, reply.values[0]), body_digest, rate)
            if reply.code is Reply.RATE_LIMITED:
                raise rate_limited(RouteClass.CREATE, rate)
            if reply.code is Reply.QUOTA_EXCEEDED:
                raise quota_exceeded(principal.account, reply, rate)
        raise RuntimeError("could not allocate a unique session id")

    async def _replay(self, stored: bytes, body_digest: bytes, rate: RateState) -> Created:
        """The first answer for a reused Idempotency-Key, or a 409 if the body differs."""
        first_digest, _, session_id = stored.partition(b"\n")
        if first_digest != body_digest:
            raise errors.IDEMPOTENCY_KEY_REUSED(
                "This Idempotency-Key was already used with a different request body; use a new key."
            )
        snap = await self.state.snapshot(session_id.decode())
        if snap is None:  # the group's keys are gone (its retention lapsed): nothing to replay
            raise errors.SESSION_EXPIRED(f"Upload group {session_id.decode()} no longer exists; use a new key.")
        return Created(snap.record.session_id, _json.encode(created_view(snap.record)), replayed=True, rate=rate)

    async def take_token(self, principal: Principal, route_class: RouteClass) -> RateState:
        """One request's token from the caller's bucket for this route class, or a 429."""
        rate = await self.state.take_token(principal.key_id, principal.account, route_class, self.rates[route_class])
        if not rate.allowed:
            raise rate_limited(route_class, rate)
        return rate

    def _new_group(self, account: str, request: StartUploadRequest) -> GroupRecord:
        session_id, *upload_ids = new_uuid4s(1 + len(request.files))
        created = now_ms()
        files = []
        part_size = self.settings.part_size_bytes
        for spec, upload_id in zip(request.files, upload_ids, strict=True):
            plan = plan_parts(spec.size_bytes, part_size)
            files.append(FileRecord(upload_id, spec.file_role, spec.file_name, spec.size_bytes, plan.part_size,
                                    plan.total_parts, plan.strategy, spec.language_tag,
                                    file_extension(spec.file_name)))  # fmt: skip
        return GroupRecord(
            session_id=session_id, account=account,
            key_prefix=group_prefix(self.settings.s3_key_prefix, account, session_id),
            video_name=request.video_name, description=request.description, layout=request.layout,
            perspective=request.perspective, folder_name=request.folder_name, created_ms=created,
            expires_ms=created + self.settings.session_ttl_seconds * 1000, files=tuple(files),
        )  # fmt: skip

    # --- lookups and state checks --------------------------------------------------------------

    async def load_group(self, principal: Principal, session_id: str) -> GroupSnapshot:
        """The caller's group, or 404 (also for another account's group: its existence is not revealed)."""
        snap = await self.state.snapshot(session_id) if UUID_RE.fullmatch(session_id) else None
        if snap is None or snap.record.account != principal.account:
            raise errors.SESSION_NOT_FOUND(f"No upload group {session_id[:64]!r} for this account.")
        return snap

    async def load_file(
        self, principal: Principal, session_id: str, upload_id: str
    ) -> tuple[GroupSnapshot, FileRecord]:
        """The caller's group and one of its files, or 404."""
        snap = await self.load_group(principal, session_id)
        f = snap.record.file(upload_id)
        if f is None:
            raise errors.FILE_NOT_FOUND(f"No file {upload_id[:64]!r} in upload group {session_id}.")
        return snap, f

    @staticmethod
    def ensure_live(snap: GroupSnapshot, now: int) -> None:
        """409 unless the group still accepts uploads (past expiresAt counts as expired, swept or not)."""
        status = shown_status(snap, now)
        if status not in LIVE_GROUP:
            raise group_refusal(snap, status)

    # --- part URLs ---------------------------------------------------------------------------

    async def sign_part_urls(self, principal: Principal, session_id: str, upload_id: str, body: bytes) -> PartUrlsView:
        """Presign PUT URLs for the requested parts of a file (SPEC 3.2)."""
        payload = decode_json_body(body) if body.strip() else None
        snap, f = await self.load_file(principal, session_id, upload_id)
        now = now_ms()
        self.ensure_live(snap, now)  # a dead group answers 409 whatever the body says
        numbers = select_parts(payload, f.total_parts)
        if snap.file_status(upload_id) is not FileStatus.UPLOADING or snap.status is GroupStatus.INITIALIZED:
            reply = await self.state.mark_uploading(snap.record, upload_id, now)
            if reply.code is not Reply.OK:
                raise script_refusal(snap, reply, f)
        s3_upload_id = None
        if f.strategy is UploadStrategy.MULTIPART:
            s3_upload_id = snap.s3_upload_id(upload_id) or await self._provision_now(snap, f)

        # SigV4 time has second precision; every URL of one answer shares one timestamp.
        signed_at = now // 1000
        expires_in = min(self.settings.part_url_ttl_seconds, (snap.record.expires_ms // 1000) - signed_at)
        if expires_in < 1:
            raise errors.SESSION_EXPIRED(f"Upload group {session_id} expires now; start a new group.")
        batch = SignBatch(
            bucket=self.settings.s3_bucket, key=snap.record.storage_key(f), upload_id=s3_upload_id,
            part_numbers=numbers, part_size=f.part_size, total_bytes=f.total_bytes, expires_in=expires_in,
            signed_at=signed_at,
        )  # fmt: skip
        try:
            parts_json = await self.signer.sign(batch)
        except StorageCredentialsError as exc:  # the provider chain has nothing usable right now
            log.warning("part-urls %s/%s: %s", session_id, upload_id, exc)
            raise errors.DEPENDENCY_DOWN(
                "Storage credentials are unavailable right now; try again shortly.", headers={"Retry-After": "5"}
            ) from None
        # Track what arrives: a refresh a little later coalesces with any already queued for this file.
        await self.state.enqueue(self._refresh_job(session_id, upload_id, now, later=True))
        # The parts arrive as encoded JSON; msgspec splices Raw into the answer as is.
        return PartUrlsView(**file_fields(f, FileStatus.UPLOADING), parts=cast(list[PartUrl], msgspec.Raw(parts_json)))

    async def _provision_now(self, snap: GroupSnapshot, f: FileRecord) -> str:
        """The file's S3 upload id, for a client that is waiting for it.

        The client should never wait behind other groups' provisioning backlog, so the API runs the
        workers' idempotent step for this one file itself (it races safely with the worker's job). If
        storage does not answer within the wait, the worker's job is left to do it (-> 503 and Retry-After).
        """
        if self.storage is not None:
            try:
                async with asyncio.timeout(self.settings.provision_wait_seconds):
                    from app.storage_tasks import provision_file  # the storage side: imported once storage is up

                    store = await self.storage.get()
                    s3_id = await provision_file(self.state, store, snap.record, f, adopt=False)
            except RedisError:
                raise  # the state store is down: its own 503
            except Exception as exc:  # storage slow or refusing: the worker's job (and its retries) take over
                log.warning("provisioning %s for a waiting client failed: %r", f.upload_id, exc)
                return await self._wait_for_provisioning(snap.record.session_id, f.upload_id, 0.0)
            if s3_id is None:  # the group ended meanwhile: its 409
                fresh = await self.state.snapshot(snap.record.session_id)
                self.ensure_live(fresh or snap, now_ms())
                raise script_refusal(fresh or snap, ScriptReply(Reply.GONE), f)
            return s3_id
        return await self._wait_for_provisioning(
            snap.record.session_id, f.upload_id, self.settings.provision_wait_seconds
        )

    async def _wait_for_provisioning(self, session_id: str, upload_id: str, within: float) -> str:
        # Normally the create's job is queued or running. If it gave up (storage down for hours), queue it
        # again; the deterministic id makes this a no-op while the first is queued or its result is kept.
        job = JobSpec.build(
            PROVISION_JOB, (session_id,), job_id=provision_job_id(session_id), now_ms=now_ms(),
            queue=self.settings.queue_name,
        )  # fmt: skip
        await self.state.enqueue(job)
        snap, _ = await poll_until(
            lambda: self.state.snapshot(session_id), lambda s: s is None or bool(s.s3_upload_id(upload_id)),
            within=within, interval=PROVISION_POLL_SECONDS,
        )  # fmt: skip
        s3_id = snap.s3_upload_id(upload_id) if snap is not None else None
        if s3_id is None:
            raise _not_provisioned()
        return s3_id

    # --- complete ----------------------------------------------------------------------------

    async def complete_file(
        self, principal: Principal, session_id: str, upload_id: str, body: bytes
    ) -> tuple[int, CompletedFileView]:
        """Finalize one file (SPEC 3.3): 200 when done, 202 while the worker is still at it."""
        payload = decode_json_body(body) if body.strip() else None
        snap, f = await self.load_file(principal, session_id, upload_id)
        if _completed(snap, upload_id):
            return 200, completed_view(snap, f)  # a repeat needs no part list
        self.ensure_live(snap, now_ms())
        parts = completed_parts(payload, f.total_parts, required=f.strategy is UploadStrategy.MULTIPART)
        if f.strategy is UploadStrategy.MULTIPART and snap.s3_upload_id(upload_id) is None:
            # Nothing can have been uploaded yet; completing now would only race the provisioning.
            raise errors.FILE_NOT_PROVISIONED(
                f"File {upload_id} has no storage upload yet: get its part URLs, upload the parts, then complete."
            )
        for _ in range(5):
            status = snap.file_status(upload_id)
            if _completed(snap, upload_id):
                return 200, completed_view(snap, f)
            now = now_ms()
            self.ensure_live(snap, now)
            if status is FileStatus.COMPLETING:
                break
            if status is FileStatus.FAILED:
                raise file_refusal(snap, f, status)
            attempt = snap.attempt(upload_id)
            job = JobSpec.build(
                COMPLETE_JOB, (session_id, upload_id, attempt + 1, parts),
                job_id=complete_job_id(session_id, upload_id, attempt + 1), now_ms=now, queue=self.settings.queue_name,
                urgent=True,
            )  # fmt: skip
            reply = await self.state.begin_complete(snap.record, upload_id, now_ms=now, attempt_seen=attempt, job=job)
            if reply.code is Reply.OK:
                break
            # Someone else moved the file meanwhile (a concurrent complete, a cancel): look again.
            snap = await self.load_group(principal, session_id)
        return await self._await_completion(principal, session_id, f)

    async def _await_completion(
        self, principal: Principal, session_id: str, f: FileRecord
    ) -> tuple[int, CompletedFileView]:
        def settled(s: GroupSnapshot) -> bool:
            return s.file_status(f.upload_id) is not FileStatus.COMPLETING or s.status not in LIVE_GROUP

        snap, done = await poll_until(
            lambda: self.load_group(principal, session_id), settled, within=self.settings.complete_wait_seconds
        )
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
        self.ensure_live(snap, now_ms())  # the group died meanwhile: its 409
        raise file_refusal(snap, f, status)

    # --- status and tracking -------------------------------------------------------------------

    def _refresh_job(self, session_id: str, upload_id: str, now: int, *, later: bool = False) -> JobSpec:
        defer = int(self.settings.parts_staleness_seconds * 1000) if later else 0
        return JobSpec.build(
            REFRESH_PARTS_JOB, (session_id, upload_id), job_id=refresh_job_id(session_id, upload_id, later=later),
            now_ms=now, queue=self.settings.queue_name, defer_ms=defer, urgent=not later,
        )  # fmt: skip

    def _stale(self, snap: GroupSnapshot, f: FileRecord, now: int) -> bool:
        """True if a live file's tracking is older than the staleness bound."""
        if snap.status not in LIVE_GROUP or snap.file_status(f.upload_id) not in TRACKED_FILE:
            return False
        refreshed = snap.progress(f.upload_id).refreshed_ms
        return refreshed is None or now - refreshed > self.settings.parts_staleness_seconds * 1000

    async def group_status(self, principal: Principal, session_id: str) -> GroupStatusView:
        """The group with every file's state and progress (SPEC 3.5); stale tracking is refreshed in the background."""
        snap = await self.load_group(principal, session_id)
        now = now_ms()
        stale = [
            self._refresh_job(session_id, f.upload_id, now) for f in snap.record.files if self._stale(snap, f, now)
        ]
        if stale:
            await self.state.enqueue(*stale)
        return group_status_view(snap, now)

    async def received_parts(self, principal: Principal, session_id: str, upload_id: str) -> ReceivedPartsView:
        """What storage holds for a file, refreshed now (bounded wait) if the tracking is stale."""
        snap, f = await self.load_file(principal, session_id, upload_id)
        now = now_ms()
        parts = await self.state.received_parts(session_id, upload_id)
        # The part list is a short-lived cache; a summary saying parts exist but no list means it lapsed.
        lapsed = not parts and snap.progress(upload_id).parts > 0 and snap.file_status(upload_id) in TRACKED_FILE
        if lapsed or self._stale(snap, f, now):
            await self.state.enqueue(self._refresh_job(session_id, upload_id, now))

            def fresh(s: GroupSnapshot | None) -> bool:
                refreshed = s.progress(upload_id).refreshed_ms if s is not None else now
                return refreshed is not None and refreshed >= now

            latest, _ = await poll_until(
                lambda: self.state.snapshot(session_id), fresh, within=self.settings.parts_wait_seconds
            )
            snap = latest or snap
            parts = await self.state.received_parts(session_id, upload_id)
        refreshed = snap.progress(upload_id).refreshed_ms
        return ReceivedPartsView(
            upload_id=upload_id, status=snap.file_status(upload_id).value, total_parts=f.total_parts,
            refreshed_at=iso_ms(refreshed) if refreshed else None,
            parts=[ReceivedPart(part_number=n, etag=etag, size_bytes=size) for n, etag, size in parts],
        )  # fmt: skip

    # --- cancel ------------------------------------------------------------------------------

    async def cancel_group(self, principal: Principal, session_id: str) -> CanceledGroupView:
        """Cancel a group (SPEC 3.4); repeating it returns the same answer."""
        snap = await self.load_group(principal, session_id)
        now = now_ms()
        reply = await self.state.cancel_group(
            snap.record, now_ms=now, retention_ms=self.settings.retention_seconds * 1000,
            purges=purge_jobs(self.settings, session_id, now, snap.record.key_prefix),
            ended_cap=self.settings.retained_ended_groups,
        )  # fmt: skip
        if reply.code is not Reply.OK:
            if reply.code is Reply.GROUP_STATE and reply.text() == GroupStatus.COMPLETED:
                raise errors.SESSION_COMPLETED(f"Upload group {session_id} is completed and cannot be canceled.")
            self.ensure_live(snap, now)
            raise script_refusal(snap, reply)
        return CanceledGroupView(
            session_id=session_id, status=GroupStatus.CANCELED.value, canceled_at=iso_ms(int(reply.values[0])),
            file_count=len(snap.record.files), canceled_file_count=int(reply.values[1]),
        )  # fmt: skip


def _not_provisioned() -> errors.ApiError:
    return errors.NOT_PROVISIONED(
        "Storage for this file is still being prepared; retry shortly.", headers={"Retry-After": "2"}
    )


def _completed(snap: GroupSnapshot, upload_id: str) -> bool:
    """The file is completed and its group did not end otherwise (a completed file of a canceled group is not)."""
    return snap.file_status(upload_id) is FileStatus.COMPLETED and snap.status in (*LIVE_GROUP, GroupStatus.COMPLETED)
