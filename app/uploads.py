"""The upload service: the use cases behind the HTTP routes (start a group, and later parts/complete/cancel).

Handlers call these methods with an authenticated principal; storage work is handed to workers.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import multiprocessing
import os
import re
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from typing import Any, cast

import msgspec

from app import errors
from app.apikeys import Principal
from app.models import (
    CanceledGroupView,
    CompletedFileView,
    FileProgressView,
    FileRecord,
    FileStatus,
    GroupRecord,
    GroupStatus,
    GroupStatusView,
    PartUrl,
    PartUrlsView,
    ReceivedPart,
    ReceivedPartsView,
    StartUploadRequest,
    UploadFileView,
    UploadGroupCreated,
    UploadStrategy,
)
from app.presign import PresignCredentials, S3Presigner
from app.rules import (
    completed_parts,
    file_extension,
    group_key_prefix,
    part_range,
    plan_parts,
    select_parts,
    validate_start_request,
)
from app.settings import Settings
from app.state import (
    COMPLETE_JOB,
    F_CANCELED,
    F_COMPLETED,
    F_UPDATED,
    PROVISION_JOB,
    REFRESH_PARTS_JOB,
    GroupSnapshot,
    JobSpec,
    UploadState,
    complete_job_id,
    idempotency_key,
    provision_job_id,
    purge_jobs,
    refresh_job_id,
)
from app.timefmt import iso_ms, now_ms

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
log = logging.getLogger("spatialgen.api")
POLL_SECONDS = 0.05

MAX_IDEMPOTENCY_KEY_CHARS = 255

_json = msgspec.json.Encoder()


def decode_json_body(body: bytes) -> Any:
    """Decode a request body as JSON, or raise a 400 that says where it broke."""
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise errors.MALFORMED_JSON(f"The body is not valid JSON: {exc}.") from None
    except UnicodeDecodeError:
        raise errors.MALFORMED_JSON("The body is not valid UTF-8.") from None
    except RecursionError:
        raise errors.MALFORMED_JSON("The body is nested too deeply.") from None


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


class PresignerConfig(msgspec.Struct, frozen=True):
    """What a presigner needs; picklable, so the signer process can build (and cache) its own."""

    endpoint_url: str
    region: str
    access_key_id: str
    secret_access_key: str
    session_token: str | None
    addressing_style: str


class SignBatch(msgspec.Struct, frozen=True, kw_only=True):
    """One part-urls answer to sign: a PutObject URL (no upload id) or UploadPart URLs."""

    bucket: str
    key: str
    upload_id: str | None
    part_numbers: list[int]
    part_size: int
    total_bytes: int
    expires_in: int
    signed_at: int


_presigners: dict[PresignerConfig, S3Presigner] = {}
_WARM_UP = SignBatch(bucket="warm-up", key="k", upload_id="u", part_numbers=[1], part_size=1, total_bytes=1,
                     expires_in=1, signed_at=0)  # fmt: skip


def exit_with_parent(parent_pid: int) -> None:
    """Signer-process initializer: exit as soon as the API process that started it is gone.

    An ASGI server may end its worker processes abruptly (no atexit, no lifespan shutdown); without
    this the signer would outlive it, holding the server's inherited pipes open.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def sign_parts_json(config: PresignerConfig, batch: SignBatch) -> bytes:
    """Presign a batch and return its `parts` array as JSON (runs in the API process or the signer process)."""
    presigner = _presigners.get(config)
    if presigner is None:
        credentials = PresignCredentials(config.access_key_id, config.secret_access_key, config.session_token)
        presigner = _presigners[config] = S3Presigner(
            endpoint_url=config.endpoint_url, region=config.region, credentials=credentials,
            addressing_style=config.addressing_style,
        )  # fmt: skip
    when = datetime.fromtimestamp(batch.signed_at, tz=UTC)
    expires_at = iso_ms((batch.signed_at + batch.expires_in) * 1000)
    if batch.upload_id is None:
        urls = [presigner.presign_put_object(batch.bucket, batch.key, expires_in=batch.expires_in, now=when)]
    else:
        urls = presigner.presign_upload_parts(
            batch.bucket, batch.key, upload_id=batch.upload_id, part_numbers=batch.part_numbers,
            expires_in=batch.expires_in, now=when,
        )  # fmt: skip
    parts = []
    for n, url in zip(batch.part_numbers, urls, strict=True):
        lo, hi = part_range(n, batch.part_size, batch.total_bytes)
        parts.append(PartUrl(part_number=n, size_bytes=hi - lo, byte_start=lo, byte_end=hi, url=url,
                             expires_at=expires_at))  # fmt: skip
    return _json.encode(parts)


class Created(msgspec.Struct, frozen=True):
    """Outcome of a start call: the JSON answer and whether it replays an earlier one."""

    session_id: str
    body: bytes
    replayed: bool


class UploadService:
    """Use cases of the upload API over Redis state; never touches object storage itself."""

    def __init__(self, settings: Settings, state: UploadState) -> None:
        self.settings = settings
        self.state = state
        self.presigner_config = PresignerConfig(
            endpoint_url=settings.s3_public_endpoint_url or settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            session_token=settings.s3_session_token or None,
            addressing_style=settings.s3_addressing_style,
        )
        self._signer: ProcessPoolExecutor | None = None

    async def start_upload_group(self, principal: Principal, body: bytes, idem_header: str | None) -> Created:
        """Validate a start request, register the group and its files, and queue their provisioning."""
        payload = decode_json_body(body)
        request = validate_start_request(
            payload, max_file_bytes=self.settings.max_file_bytes, max_files=self.settings.max_files_per_group
        )
        idem_key = None
        body_digest = b""
        if idem_header is not None:
            idem_key = idempotency_key(principal.account, _check_idempotency_key(idem_header))
            # The body is compared after canonical re-encoding: whitespace or key order don't make it "different".
            body_digest = hashlib.sha256(msgspec.json.encode(payload, order="sorted")).hexdigest().encode()

        for _ in range(3):  # a uuid4 collision is astronomically unlikely; retrying keeps it harmless
            record = self._new_group(principal.account, request)
            answer = _json.encode(self._created_view(record))
            now = record.created_ms
            job = JobSpec.build(
                PROVISION_JOB,
                (record.session_id,),
                job_id=provision_job_id(record.session_id),
                now_ms=now,
                queue=self.settings.queue_name,
            )
            outcome, stored = await self.state.create_group(
                record,
                key_ttl_ms=(self.settings.session_ttl_seconds + self.settings.retention_seconds) * 1000,
                job=job,
                idem_key=idem_key,
                idem_value=body_digest + b"\n" + answer,
                idem_ttl_ms=self.settings.idempotency_ttl_seconds * 1000,
            )
            if outcome == "created":
                return Created(record.session_id, answer, replayed=False)
            if outcome == "replay":
                assert stored is not None
                first_digest, _, first_answer = stored.partition(b"\n")
                if first_digest != body_digest:
                    raise errors.IDEMPOTENCY_KEY_REUSED(
                        "This Idempotency-Key was already used with a different request body; use a new key."
                    )
                session_id = msgspec.json.decode(first_answer, type=dict[str, Any])["sessionId"]
                return Created(session_id, first_answer, replayed=True)
        raise RuntimeError("could not allocate a unique session id")

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
        status = snap.status
        sid = snap.record.session_id
        if status is GroupStatus.CANCELED:
            raise errors.SESSION_CANCELED(f"Upload group {sid} was canceled; start a new group.")
        if status is GroupStatus.EXPIRED or (status in _LIVE and now >= snap.record.expires_ms):
            raise errors.SESSION_EXPIRED(
                f"Upload group {sid} expired at {iso_ms(snap.record.expires_ms)}; start a new group."
            )
        if status is GroupStatus.COMPLETED:
            raise errors.SESSION_COMPLETED(f"Upload group {sid} is already completed.")
        if status is GroupStatus.FAILED:
            raise errors.SESSION_FAILED(f"Upload group {sid} failed; start a new group.")

    @staticmethod
    def _conflict(snap: GroupSnapshot, why: str, f: FileRecord | None = None) -> errors.ApiError:
        """Map a refusal to its 409: `file:<status>` from a file-level check, else the group's status."""
        sid = snap.record.session_id
        if why.startswith("file:") and f is not None:
            state = why.removeprefix("file:")
            if state == "completing":
                return errors.FILE_COMPLETING(f"File {f.upload_id} is being completed; repeat complete to poll.")
            if state == "completed":
                return errors.FILE_COMPLETED(f"File {f.upload_id} is already completed.")
            if state == "failed":
                reason = snap.reason(f.upload_id) or "verification failed"
                return errors.FILE_FAILED(f"File {f.upload_id} failed: {reason}.")
            why = state  # canceled / expired: the group's fate
        mapping = {
            "canceled": errors.SESSION_CANCELED,
            "expired": errors.SESSION_EXPIRED,
            "gone": errors.SESSION_EXPIRED,
            "completed": errors.SESSION_COMPLETED,
        }
        return mapping.get(why, errors.SESSION_FAILED)(f"Upload group {sid} is {why}.")

    # --- part URLs ---------------------------------------------------------------------------

    async def sign_part_urls(self, principal: Principal, session_id: str, upload_id: str, body: bytes) -> PartUrlsView:
        """Presign PUT URLs for the requested parts of a file (SPEC 3.2)."""
        payload = decode_json_body(body) if body.strip() else None
        snap, f = await self.load_file(principal, session_id, upload_id)
        now = now_ms()
        self.ensure_live(snap, now)  # a dead group answers 409 whatever the body says
        numbers = select_parts(payload, f.total_parts)
        file_status = snap.file_status(upload_id)
        if file_status is not FileStatus.UPLOADING or snap.status is GroupStatus.INITIALIZED:
            outcome = await self.state.mark_uploading(snap.record, upload_id, now)
            if outcome != "ok":
                raise self._conflict(snap, outcome, f)
        s3_upload_id = None
        if f.strategy is UploadStrategy.MULTIPART:
            s3_upload_id = snap.s3_upload_id(upload_id) or await self._wait_for_provisioning(session_id, upload_id)

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
        parts_json = await self._sign(batch)
        # Track what arrives: a refresh a little later coalesces with any already queued for this file.
        await self.state.enqueue(self._refresh_job(session_id, upload_id, now, later=True))
        # The parts arrive as encoded JSON; msgspec splices Raw into the answer as is.
        return PartUrlsView(**_file_fields(f, FileStatus.UPLOADING), parts=cast(list[PartUrl], msgspec.Raw(parts_json)))

    async def _sign(self, batch: SignBatch) -> bytes:
        """Sign a batch here, or in the signer process when it is large enough to hold up other requests."""
        threshold = self.settings.sign_offload_min_parts
        if threshold <= 0 or len(batch.part_numbers) < threshold:
            return sign_parts_json(self.presigner_config, batch)
        if self._signer is None:
            self.start_signer()
        assert self._signer is not None
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._signer, sign_parts_json, self.presigner_config, batch
            )
        except BrokenProcessPool:  # the signer died (OOM-killed, say): start a new one, sign this batch here
            log.warning("signer process died; restarting it")
            self._signer = None
            return sign_parts_json(self.presigner_config, batch)

    def start_signer(self) -> None:
        """Start the signer process (API startup calls this so the first big batch doesn't pay for it)."""
        if self._signer is None and self.settings.sign_offload_min_parts > 0:
            self._signer = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                initializer=exit_with_parent, initargs=(os.getpid(),),
            )  # fmt: skip
            self._signer.submit(sign_parts_json, self.presigner_config, _WARM_UP)

    def close(self) -> None:
        """Stop the signer process (now: server workers may exit without running Python's exit hooks)."""
        if self._signer is not None:
            children = list(getattr(self._signer, "_processes", {}).values())
            self._signer.shutdown(wait=False, cancel_futures=True)
            for child in children:
                child.terminate()
            self._signer = None

    async def _wait_for_provisioning(self, session_id: str, upload_id: str) -> str:
        # Normally the create's job is queued or running. If it gave up (storage down for hours), queue it
        # again; the deterministic id makes this a no-op while the first is queued or its result is kept.
        job = JobSpec.build(
            PROVISION_JOB, (session_id,), job_id=provision_job_id(session_id), now_ms=now_ms(),
            queue=self.settings.queue_name,
        )  # fmt: skip
        await self.state.enqueue(job)
        deadline = time.monotonic() + self.settings.provision_wait_seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS * 2)
            snap = await self.state.snapshot(session_id)
            if snap is not None and (s3_id := snap.s3_upload_id(upload_id)):
                return s3_id
        raise errors.NOT_PROVISIONED(
            "Storage for this file is still being prepared; retry shortly.", headers={"Retry-After": "2"}
        )

    # --- complete ----------------------------------------------------------------------------

    async def complete_file(
        self, principal: Principal, session_id: str, upload_id: str, body: bytes
    ) -> tuple[int, CompletedFileView]:
        """Finalize one file (SPEC 3.3): 200 when done, 202 while the worker is still at it."""
        payload = decode_json_body(body) if body.strip() else None
        snap, f = await self.load_file(principal, session_id, upload_id)
        if snap.file_status(upload_id) is FileStatus.COMPLETED and snap.status in (*_LIVE, GroupStatus.COMPLETED):
            return 200, self._completed_view(snap, f)  # a repeat needs no part list
        self.ensure_live(snap, now_ms())
        parts = completed_parts(payload, f.total_parts, required=f.strategy is UploadStrategy.MULTIPART)
        for _ in range(5):
            status = snap.file_status(upload_id)
            if status is FileStatus.COMPLETED and snap.status in (*_LIVE, GroupStatus.COMPLETED):
                return 200, self._completed_view(snap, f)
            now = now_ms()
            self.ensure_live(snap, now)
            if status is FileStatus.COMPLETING:
                break
            if status is FileStatus.FAILED:
                raise self._conflict(snap, "file:failed", f)
            attempt = snap.attempt(upload_id)
            job = JobSpec.build(
                COMPLETE_JOB, (session_id, upload_id, attempt + 1, parts),
                job_id=complete_job_id(session_id, upload_id, attempt + 1), now_ms=now, queue=self.settings.queue_name,
            )  # fmt: skip
            outcome = await self.state.begin_complete(snap.record, upload_id, now_ms=now, attempt_seen=attempt, job=job)
            if outcome[0] == "ok":
                break
            # Someone else moved the file meanwhile (a concurrent complete, a cancel): look again.
            snap = await self.load_group(principal, session_id)
        return await self._await_completion(principal, session_id, f)

    async def _await_completion(
        self, principal: Principal, session_id: str, f: FileRecord
    ) -> tuple[int, CompletedFileView]:
        deadline = time.monotonic() + self.settings.complete_wait_seconds
        while True:
            snap = await self.load_group(principal, session_id)
            status = snap.file_status(f.upload_id)
            if status is not FileStatus.COMPLETING or snap.status not in _LIVE:
                break
            if time.monotonic() >= deadline:
                return 202, self._completed_view(snap, f)
            await asyncio.sleep(POLL_SECONDS)
        if status is FileStatus.COMPLETED and snap.status in (*_LIVE, GroupStatus.COMPLETED):
            return 200, self._completed_view(snap, f)
        if status is FileStatus.UPLOADING:
            raise errors.MISSING_PARTS(
                f"Storage refused the completion: {snap.reason(f.upload_id) or 'parts missing'}. "
                "Upload the missing parts (GET .../parts lists what storage has) and complete again."
            )
        if status is FileStatus.FAILED:
            raise self._conflict(snap, "file:failed", f)
        self.ensure_live(snap, now_ms())  # the group died meanwhile: its 409
        raise self._conflict(snap, f"file:{status.value}", f)

    @staticmethod
    def _completed_view(snap: GroupSnapshot, f: FileRecord) -> CompletedFileView:
        return CompletedFileView(**_file_fields(f, snap.file_status(f.upload_id)), library_id=snap.library_id)

    # --- status and tracking -------------------------------------------------------------------

    def _refresh_job(self, session_id: str, upload_id: str, now: int, *, later: bool = False) -> JobSpec:
        defer = int(self.settings.parts_staleness_seconds * 1000) if later else 0
        return JobSpec.build(
            REFRESH_PARTS_JOB, (session_id, upload_id), job_id=refresh_job_id(session_id, upload_id, later=later),
            now_ms=now, queue=self.settings.queue_name, defer_ms=defer,
        )  # fmt: skip

    def _stale(self, snap: GroupSnapshot, f: FileRecord, now: int) -> bool:
        """True if a live file's tracking is older than the staleness bound."""
        if snap.status not in _LIVE or snap.file_status(f.upload_id) not in _TRACKED:
            return False
        refreshed = snap.tracked(f.upload_id)[2]
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
        lapsed = not parts and snap.tracked(upload_id)[0] > 0 and snap.file_status(upload_id) in _TRACKED
        if lapsed or self._stale(snap, f, now):
            await self.state.enqueue(self._refresh_job(session_id, upload_id, now))
            deadline = time.monotonic() + self.settings.parts_wait_seconds
            while time.monotonic() < deadline:
                await asyncio.sleep(POLL_SECONDS)
                fresh = await self.state.snapshot(session_id)
                if fresh is None:
                    break
                snap = fresh
                refreshed = snap.tracked(upload_id)[2]
                if refreshed is not None and refreshed >= now:
                    break
            parts = await self.state.received_parts(session_id, upload_id)
        refreshed = snap.tracked(upload_id)[2]
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
        out = await self.state.cancel_group(
            snap.record, now_ms=now, retention_ms=self.settings.retention_seconds * 1000,
            purges=purge_jobs(self.settings, session_id, now),
        )  # fmt: skip
        if out[0] != "canceled":
            if out[0] == "completed":
                raise errors.SESSION_COMPLETED(f"Upload group {session_id} is completed and cannot be canceled.")
            self.ensure_live(snap, now)
            raise self._conflict(snap, out[0])
        return CanceledGroupView(
            session_id=session_id, status=GroupStatus.CANCELED.value, canceled_at=iso_ms(int(out[1])),
            file_count=len(snap.record.files), canceled_file_count=int(out[2]),
        )  # fmt: skip

    def _new_group(self, account: str, request: StartUploadRequest) -> GroupRecord:
        session_id, *upload_ids = new_uuid4s(1 + len(request.files))
        created = now_ms()
        files = []
        for spec, upload_id in zip(request.files, upload_ids, strict=True):
            plan = plan_parts(spec.size_bytes, self.settings.part_size_bytes)
            files.append(
                FileRecord(
                    upload_id=upload_id,
                    role=spec.file_role,
                    name=spec.file_name,
                    total_bytes=spec.size_bytes,
                    part_size=plan.part_size,
                    total_parts=plan.total_parts,
                    strategy=plan.strategy,
                    language=spec.language_tag,
                    ext=file_extension(spec.file_name),
                )
            )
        return GroupRecord(
            session_id=session_id,
            account=account,
            key_prefix=group_key_prefix(self.settings.s3_key_prefix, account, session_id),
            video_name=request.video_name,
            description=request.description,
            layout=request.layout,
            perspective=request.perspective,
            folder_name=request.folder_name,
            created_ms=created,
            expires_ms=created + self.settings.session_ttl_seconds * 1000,
            files=tuple(files),
        )

    @staticmethod
    def _created_view(record: GroupRecord) -> UploadGroupCreated:
        return UploadGroupCreated(
            session_id=record.session_id,
            expires_at=iso_ms(record.expires_ms),
            video_name=record.video_name,
            file_count=len(record.files),
            files=[UploadFileView(**_file_fields(f, FileStatus.INITIALIZED)) for f in record.files],
        )


_LIVE = (GroupStatus.INITIALIZED, GroupStatus.UPLOADING)
_TRACKED = (FileStatus.INITIALIZED, FileStatus.UPLOADING, FileStatus.COMPLETING)


def _iso_or_none(ms: int | None) -> str | None:
    return iso_ms(ms) if ms is not None else None


def group_status_view(snap: GroupSnapshot, now: int) -> GroupStatusView:
    """The status document of a group (also shown by `spatialgen-admin sessions show`)."""
    r = snap.record
    status = snap.status
    if status in _LIVE and now >= r.expires_ms:
        status = GroupStatus.EXPIRED  # past expiresAt is expired, whether or not the sweep has run
    files = []
    for f in r.files:
        count, size, refreshed = snap.tracked(f.upload_id)
        fstatus = snap.file_status(f.upload_id)
        if status is GroupStatus.EXPIRED and fstatus in _TRACKED:
            fstatus = FileStatus.EXPIRED
        files.append(
            FileProgressView(
                **_file_fields(f, fstatus), language_tag=f.language, uploaded_parts=count, uploaded_bytes=size,
                parts_refreshed_at=_iso_or_none(refreshed),
                failure_reason=snap.reason(f.upload_id) if fstatus is FileStatus.FAILED else None,
            )
        )  # fmt: skip
    return GroupStatusView(
        session_id=r.session_id, status=status.value, video_name=r.video_name, description=r.description,
        layout=r.layout.value, perspective=r.perspective.value if r.perspective else None, folder_name=r.folder_name,
        created_at=iso_ms(r.created_ms), updated_at=iso_ms(snap.ms(F_UPDATED) or r.created_ms),
        expires_at=iso_ms(r.expires_ms), completed_at=_iso_or_none(snap.ms(F_COMPLETED)),
        canceled_at=_iso_or_none(snap.ms(F_CANCELED)), library_id=snap.library_id, file_count=len(r.files),
        files=files,
    )  # fmt: skip


def _file_fields(f: FileRecord, status: FileStatus) -> dict[str, Any]:
    """The file fields every file view shares (SPEC 3.1 response)."""
    return {
        "upload_id": f.upload_id,
        "file_role": f.role.value,
        "file_name": f.name,
        "total_bytes": f.total_bytes,
        "part_size_bytes": f.part_size,
        "total_parts": f.total_parts,
        "upload_strategy": f.strategy.value,
        "status": status.value,
    }
