"""Step 1, start an upload group (SPEC 3.1): validate the asset set, plan every file's parts, and register the
group, its files and its indexes in one script. Storage is not touched: each multipart upload is opened when its
file first needs URLs (app/uploads/provisioning.py).

An Idempotency-Key makes a retried create return the first group: the script keeps the body's digest and the
sessionId for a day, and a replay renders the answer again from the group's record.
"""

from __future__ import annotations

import hashlib
import os
from typing import cast

import msgspec

from app.domain import errors
from app.domain.contract import StartUploadRequest
from app.domain.lifecycle import Reply
from app.domain.limits import RateState, RouteClass
from app.domain.objectkeys import group_prefix
from app.domain.parts import plan_parts
from app.domain.records import FileRecord, GroupRecord
from app.domain.rules import file_extension, parse_start_request
from app.domain.validation import decode_json_body
from app.state.apikeys import Principal
from app.state.keys import idempotency_key
from app.uploads.refusals import quota_exceeded, rate_limited
from app.uploads.service import UploadService
from app.uploads.views import created_view

MAX_IDEMPOTENCY_KEY_CHARS = 255
_json = msgspec.json.Encoder()


class Created(msgspec.Struct, frozen=True):
    """Outcome of a start call: the JSON answer, whether it replays an earlier one, and the key's rate state."""

    session_id: str
    body: bytes
    replayed: bool
    rate: RateState | None = None


async def start_upload_group(
    service: UploadService, principal: Principal, body: bytes, idem_header: str | None
) -> Created:
    """Validate a start request and register the group and its files."""
    settings = service.settings
    request = parse_start_request(
        body,
        max_file_bytes=settings.uploads.max_file_bytes,
        max_files=settings.uploads.max_files_per_group,
        checksum_algorithms=settings.storage.checksums(),
    )
    idem_key = None
    body_digest = b""
    if idem_header is not None:
        idem_key = idempotency_key(principal.account, _idempotency_digest(idem_header))
        # The body is compared after canonical re-encoding: whitespace or key order don't make it "different".
        canonical = msgspec.json.encode(decode_json_body(body), order="sorted")
        body_digest = hashlib.sha256(canonical).hexdigest().encode()

    for _ in range(3):  # a uuid4 collision is astronomically unlikely; retrying keeps it harmless
        record = _new_group(service, principal.account, request)
        # The idempotency answer is only the body's digest and the sessionId: a replay re-renders the answer
        # from the group's record (the same document), instead of keeping a second copy of it for a day.
        reply, rate = await service.state.create_group(
            record, key_id=principal.key_id, rate=service.rates[RouteClass.CREATE], quota=settings.limits.quota(),
            idle_expires_ms=record.created_ms + settings.uploads.idle_group_seconds * 1000,
            key_ttl_ms=(settings.uploads.session_ttl_seconds + settings.uploads.retention_seconds) * 1000,
            idem_key=idem_key, idem_value=body_digest + b"\n" + record.session_id.encode(),
            idem_ttl_ms=settings.uploads.idempotency_ttl_seconds * 1000,
        )  # fmt: skip
        if reply.code is Reply.CREATED:
            return Created(record.session_id, _json.encode(created_view(record)), replayed=False, rate=rate)
        if reply.code is Reply.REPLAY:
            return await _replay(service, cast(bytes, reply.values[0]), body_digest, rate)
        if reply.code is Reply.RATE_LIMITED:
            raise rate_limited(RouteClass.CREATE, rate)
        if reply.code is Reply.QUOTA_EXCEEDED:
            raise quota_exceeded(principal.account, reply, rate)
    raise RuntimeError("could not allocate a unique session id")


def _idempotency_digest(value: str) -> str:
    """The digest an Idempotency-Key is remembered by, or a 400 for a key that is not printable ASCII."""
    if not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY_CHARS or not value.isascii() or not value.isprintable():
        raise errors.INVALID_HEADER(
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters.",
            errors=[errors.FieldError("Idempotency-Key", "must be 1-255 printable ASCII characters")],
        )
    return hashlib.sha256(value.encode()).hexdigest()


async def _replay(service: UploadService, stored: bytes, body_digest: bytes, rate: RateState) -> Created:
    """The first answer for a reused Idempotency-Key, or a 409 if the body differs."""
    first_digest, _, session_id = stored.partition(b"\n")
    if first_digest != body_digest:
        raise errors.IDEMPOTENCY_KEY_REUSED(
            "This Idempotency-Key was already used with a different request body; use a new key."
        )
    snap = await service.state.snapshot(session_id.decode())
    if snap is None:  # the group's keys are gone (its retention lapsed): nothing to replay
        raise errors.SESSION_EXPIRED(f"Upload group {session_id.decode()} no longer exists; use a new key.")
    return Created(snap.record.session_id, _json.encode(created_view(snap.record)), replayed=True, rate=rate)


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


def _new_group(service: UploadService, account: str, request: StartUploadRequest) -> GroupRecord:
    settings = service.settings
    session_id, *upload_ids = new_uuid4s(1 + len(request.files))
    created = service.clock.now_ms()
    files = []
    for spec, upload_id in zip(request.files, upload_ids, strict=True):
        plan = plan_parts(spec.size_bytes, settings.uploads.part_size_bytes)
        files.append(FileRecord(upload_id, spec.file_role, spec.file_name, spec.size_bytes, plan.part_size,
                                plan.total_parts, plan.strategy, spec.language_tag,
                                file_extension(spec.file_name), spec.checksum_algorithm))  # fmt: skip
    return GroupRecord(
        session_id=session_id, account=account,
        key_prefix=group_prefix(settings.storage.key_prefix, account, session_id),
        video_name=request.video_name, description=request.description, layout=request.layout,
        perspective=request.perspective, folder_name=request.folder_name, created_ms=created,
        expires_ms=created + settings.uploads.session_ttl_seconds * 1000, files=tuple(files),
    )  # fmt: skip
