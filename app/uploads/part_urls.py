"""Step 3, part URLs (SPEC 3.2): presigned PUT URLs for some or all of a file's parts.

The API signs them itself (app/storage/signer.py: no storage call); the first call moves the file to `uploading`
and, for a multipart file storage has not opened yet, provisions it for the waiting client
(app/uploads/provisioning.py). Progress is tracked when someone reads it (app/uploads/status.py) and at completion.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import Any

import msgspec

from app.domain import errors
from app.domain.answers import CompactPart, CompactPartUrlsView, PartUrl, PartUrlsView
from app.domain.checksums import PartRequest, part_urls_request
from app.domain.clock import iso_ms
from app.domain.contract import ChecksumAlgorithm, UploadStrategy, content_type
from app.domain.lifecycle import FileStatus, GroupStatus, Reply
from app.domain.limits import Charge, charge_spent, part_urls_cost
from app.domain.records import FileRecord
from app.domain.validation import decode_optional_body
from app.state import GroupSnapshot
from app.state.apikeys import Principal
from app.storage.credentials import StorageCredentialsError
from app.storage.presign import PresignCredentials
from app.storage.signer import PIECE_PARTS, SignBatch, shared_headers
from app.uploads.provisioning import provision_for_client
from app.uploads.refusals import script_refusal
from app.uploads.service import StreamSlot, UploadService
from app.uploads.views import file_fields

log = logging.getLogger("spatialgen.uploads")
_json_decoder = msgspec.json.Decoder(list[PartUrl])
_compact_decoder = msgspec.json.Decoder(list[CompactPart])
MIN_URL_SECONDS = 60
"""The shortest URL life worth handing out (credentials closer to their end than this are being renewed)."""


async def sign_part_urls(
    service: UploadService, principal: Principal, session_id: str, upload_id: str, body: bytes,
    *, charge: Charge | None = None, compact: bool = False,
) -> PartUrlsAnswer:  # fmt: skip
    """Presign PUT URLs for the requested parts of a file; the request costs one token per URL (`charge`).

    `compact`: answer in the compact form (CompactPartUrlsView: one URL template, a signature per part)."""
    payload = decode_optional_body(body, "part selection")
    snap, f = await service.load_file(principal, session_id, upload_id)
    now = service.clock.now_ms()
    service.ensure_live(snap, now)  # a dead group answers 409 whatever the body says
    fixed = snap.checksum_algorithm(upload_id)
    request = _part_request(service, snap, f, payload, fixed)
    numbers = request.numbers
    await service.charge(principal, charge, part_urls_cost(len(numbers)) - charge_spent(charge), capped=False)
    algorithm = request.algorithm
    first = snap.file_status(upload_id) is not FileStatus.UPLOADING or snap.status is GroupStatus.INITIALIZED
    if first or algorithm is not fixed:
        # The algorithm is fixed with the status in one script: two concurrent first calls naming different
        # algorithms get one winner; the other is validated again against the winner's (a 409 or a 400).
        reply = await service.state.mark_uploading(
            snap.record, upload_id, now, algorithm=algorithm.value if algorithm else "",
            late=f.strategy is UploadStrategy.SINGLE_PUT,
        )  # fmt: skip
        if reply.code not in (Reply.OK, Reply.CHECKSUM_CONFLICT):
            raise script_refusal(snap, reply, f)
        winner = ChecksumAlgorithm(reply.text()) if reply.text() else None
        if reply.code is Reply.CHECKSUM_CONFLICT or winner is not algorithm:
            request = _part_request(service, snap, f, payload, winner, opened=reply.code is Reply.CHECKSUM_CONFLICT)
            algorithm = request.algorithm
            if reply.code is Reply.CHECKSUM_CONFLICT:  # never signed with an algorithm the state did not fix
                raise errors.CHECKSUM_ALGORITHM_CONFLICT(
                    f"The file's checksum algorithm is {winner or 'none'}.", extra={"checksumAlgorithm": winner}
                )
    s3_upload_id = None
    if f.strategy is UploadStrategy.MULTIPART:
        s3_upload_id = snap.s3_upload_id(upload_id) or await provision_for_client(service, snap, f, algorithm)

    try:
        credentials = await service.signer.credentials.current()
    except StorageCredentialsError as exc:  # the provider chain has nothing usable right now
        log.warning("part-urls %s/%s: %s", session_id, upload_id, exc)
        raise errors.DEPENDENCY_UNAVAILABLE(
            "Storage credentials are unavailable right now; try again shortly.", headers={"Retry-After": "5"}
        ) from None
    # SigV4 time has second precision; every URL of one answer shares one timestamp. A URL lives as long as the
    # settings allow, the group lasts and the credentials signing it stay valid (expiresAt is never a promise
    # storage would break: temporary credentials end every URL signed with them).
    signed_at = now // 1000
    expires_in = min(service.settings.uploads.part_url_ttl_seconds, (snap.record.expires_ms // 1000) - signed_at)
    if expires_in < 1:
        raise errors.SESSION_EXPIRED(f"Upload group {session_id} expires now; start a new group.")
    if credentials.expires_at is not None:
        expires_in = min(expires_in, int(credentials.expires_at) - signed_at)
        if expires_in < MIN_URL_SECONDS:  # the chain refreshes well before this; a clock or STS problem
            log.warning("part-urls %s/%s: signing credentials expire in %d s", session_id, upload_id, expires_in)
            raise errors.DEPENDENCY_UNAVAILABLE(
                "Storage credentials are being renewed; try again shortly.", headers={"Retry-After": "5"}
            )
    batch = SignBatch(
        bucket=service.settings.storage.bucket, key=snap.record.storage_key(f), upload_id=s3_upload_id,
        part_numbers=numbers, part_size=f.part_size, total_bytes=f.total_bytes, expires_in=expires_in,
        signed_at=signed_at, content_type=content_type(f.ext) if s3_upload_id is None else None,
        checksum_algorithm=algorithm.value if algorithm else None,
        checksums=[request.checksums[n] for n in numbers] if algorithm else None,
    )  # fmt: skip
    fields = file_fields(f, FileStatus.UPLOADING, algorithm.value if algorithm else None)
    return await _answer(service, principal, credentials, batch, fields, compact=compact)


async def _answer(
    service: UploadService, principal: Principal, credentials: PresignCredentials, batch: SignBatch,
    fields: dict[str, Any], *, compact: bool,
) -> PartUrlsAnswer:  # fmt: skip
    """The batch signed as a full or compact answer: at once, or piece by piece while it is sent."""
    view: PartUrlsView | CompactPartUrlsView
    if compact:  # the template comes from the first URL, signed here; the parts are checked against it
        template = service.signer.url_template(credentials, batch)
        batch = msgspec.structs.replace(batch, url_template=template)
        expires_at = iso_ms((batch.signed_at + batch.expires_in) * 1000)
        view = CompactPartUrlsView(**fields, expires_at=expires_at, url_template=template,
                                   headers=shared_headers(batch), parts=[])  # fmt: skip
    else:
        view = PartUrlsView(**fields, parts=[])
    if len(batch.part_numbers) > PIECE_PARTS:  # signed piece by piece while it is sent (PartUrlsAnswer)
        stream = service.streams.open(principal.key_id)  # 429 when this key already streams its share
        pieces = service.signer.pieces(credentials, batch, principal.key_id)
        return PartUrlsAnswer(view, pieces, stream)
    parts_json = await service.signer.sign_with(credentials, batch, principal.key_id)
    # The parts arrive as encoded JSON; msgspec splices Raw into the answer as is.
    return PartUrlsAnswer(msgspec.structs.replace(view, parts=msgspec.Raw(parts_json)))


def _part_request(
    service: UploadService, snap: GroupSnapshot, f: FileRecord, payload: object, fixed: ChecksumAlgorithm | None,
    *, opened: bool = False,
) -> PartRequest:  # fmt: skip
    """The body's parts and checksums, checked against the file's algorithm so far (`fixed`). A multipart file
    that had part URLs (or a storage upload) without an algorithm cannot take one now (`opened`: the state script
    said so)."""
    had_urls = snap.file_status(f.upload_id) is not FileStatus.INITIALIZED or snap.s3_upload_id(f.upload_id)
    opened_without = opened or (f.strategy is UploadStrategy.MULTIPART and bool(had_urls))
    return part_urls_request(
        payload, f.total_parts, fixed=fixed, opened_without=fixed is None and opened_without,
        supported=service.settings.storage.checksums(),
    )  # fmt: skip


class PartUrlsAnswer:
    """A part-urls answer, full or compact: the file's fields and its URLs, either signed already (`view`) or, for a
    selection over PIECE_PARTS, as pieces signed one by one while the answer is sent: a slow or stalled reader holds
    one piece, not seven megabytes of URLs."""

    __slots__ = ("pieces", "stream", "view")

    def __init__(
        self, view: PartUrlsView | CompactPartUrlsView, pieces: AsyncGenerator[bytes] | None = None,
        stream: StreamSlot | None = None,
    ) -> None:  # fmt: skip
        self.view = view
        self.pieces = pieces
        self.stream = stream

    async def whole(self) -> PartUrlsView | CompactPartUrlsView:
        """The whole answer at once (for callers outside HTTP: tests, benchmarks)."""
        if self.pieces is None:
            return self.view
        decoder = _compact_decoder if isinstance(self.view, CompactPartUrlsView) else _json_decoder
        try:
            items = [item async for piece in self.pieces for item in decoder.decode(piece)]
        finally:
            if self.stream is not None:
                self.stream.close()
        return msgspec.structs.replace(self.view, parts=items)
