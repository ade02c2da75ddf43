"""Step 3, part URLs (SPEC 3.2): presigned PUT URLs for some or all of a file's parts.

The API signs them itself (app/storage/signer.py: no storage call); the first call moves the file to `uploading`
and, for a multipart file storage has not opened yet, provisions it for the waiting client
(app/uploads/provisioning.py). Progress is tracked when someone reads it (app/uploads/status.py) and at completion.
"""

from __future__ import annotations

import logging
from typing import cast

import msgspec

from app.domain import errors
from app.domain.answers import PartUrl, PartUrlsView
from app.domain.contract import UploadStrategy
from app.domain.lifecycle import FileStatus, GroupStatus, Reply
from app.domain.parts import select_parts
from app.domain.validation import decode_json_body
from app.state.apikeys import Principal
from app.storage.credentials import StorageCredentialsError
from app.storage.signer import SignBatch
from app.uploads.provisioning import provision_for_client
from app.uploads.refusals import script_refusal
from app.uploads.service import UploadService
from app.uploads.views import file_fields

log = logging.getLogger("spatialgen.uploads")


async def sign_part_urls(
    service: UploadService, principal: Principal, session_id: str, upload_id: str, body: bytes
) -> PartUrlsView:
    """Presign PUT URLs for the requested parts of a file."""
    payload = decode_json_body(body) if body.strip() else None
    snap, f = await service.load_file(principal, session_id, upload_id)
    now = service.clock.now_ms()
    service.ensure_live(snap, now)  # a dead group answers 409 whatever the body says
    numbers = select_parts(payload, f.total_parts)
    if snap.file_status(upload_id) is not FileStatus.UPLOADING or snap.status is GroupStatus.INITIALIZED:
        reply = await service.state.mark_uploading(snap.record, upload_id, now)
        if reply.code is not Reply.OK:
            raise script_refusal(snap, reply, f)
    s3_upload_id = None
    if f.strategy is UploadStrategy.MULTIPART:
        s3_upload_id = snap.s3_upload_id(upload_id) or await provision_for_client(service, snap, f)

    # SigV4 time has second precision; every URL of one answer shares one timestamp.
    signed_at = now // 1000
    expires_in = min(service.settings.uploads.part_url_ttl_seconds, (snap.record.expires_ms // 1000) - signed_at)
    if expires_in < 1:
        raise errors.SESSION_EXPIRED(f"Upload group {session_id} expires now; start a new group.")
    batch = SignBatch(
        bucket=service.settings.storage.bucket, key=snap.record.storage_key(f), upload_id=s3_upload_id,
        part_numbers=numbers, part_size=f.part_size, total_bytes=f.total_bytes, expires_in=expires_in,
        signed_at=signed_at,
    )  # fmt: skip
    try:
        parts_json = await service.signer.sign(batch)
    except StorageCredentialsError as exc:  # the provider chain has nothing usable right now
        log.warning("part-urls %s/%s: %s", session_id, upload_id, exc)
        raise errors.DEPENDENCY_UNAVAILABLE(
            "Storage credentials are unavailable right now; try again shortly.", headers={"Retry-After": "5"}
        ) from None
    # The parts arrive as encoded JSON; msgspec splices Raw into the answer as is.
    return PartUrlsView(**file_fields(f, FileStatus.UPLOADING), parts=cast(list[PartUrl], msgspec.Raw(parts_json)))
