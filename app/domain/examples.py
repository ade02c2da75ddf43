"""The shared examples: the seed request of the original API page and the documents the API answers for it.

The OpenAPI document shows them (app/http/openapi.py), the tests start from them (tests/conftest.py imports
START_EXAMPLE as the seed request), and the README's walk-through sends the same group. The answer examples are
built from the answer Structs, so their shape cannot drift.
"""

from __future__ import annotations

from typing import Any

import msgspec

from app.domain.answers import (
    PART_NUMBER_SLOT,
    SIGNATURE_SLOT,
    CanceledGroupView,
    CompactPart,
    CompactPartUrlsView,
    CompletedFileView,
    FileProgressView,
    GroupStatusView,
    PartUrl,
    PartUrlsView,
    ReceivedPart,
    ReceivedPartsView,
    UploadFileView,
    UploadGroupCreated,
)
from app.domain.checksums import Checksum
from app.domain.errors import FieldError
from app.domain.parts import plan_parts

EXAMPLE_PART_SIZE = 104_857_600
"""The default preferred part size (SPATIALGEN_PART_SIZE_BYTES), which the examples are planned with."""

START_EXAMPLE: dict[str, Any] = {
    "videoName": "My Spatial Video",
    "description": "Uploaded from our media pipeline",
    "layout": "Separate",
    "perspective": "Regular",
    "folderName": "Launch Assets",
    "files": [
        {"fileName": "left-eye.mov", "fileRole": "video_left", "sizeBytes": 1287340032},
        {"fileName": "right-eye.mov", "fileRole": "video_right", "sizeBytes": 1287341024},
        {"fileName": "english-audio.mp4", "fileRole": "audio", "sizeBytes": 187340032, "languageTag": "en"},
        {"fileName": "english-subtitles.srt", "fileRole": "subtitle", "sizeBytes": 2401, "languageTag": "en"},
    ],
}
EX_SID = "3f0c9d52-8a41-4c1e-9b7a-5d2e6f1a0c87"
EX_UIDS = (
    "a1d5e7c2-4b3f-4e9a-8c61-2f7b9d0e3a15",
    "b7e2f4a9-1c6d-4d83-9e50-6a1c3b8f2d47",
    "c3f9a1b6-7d2e-4a5c-8b94-0e6d2f4a7c19",
    "d8b4c2e7-5f1a-4c6b-a3d0-9e7f1b2c5a63",
)
EX_CREATED = "2026-05-06T18:42:11.000Z"
EX_EXPIRES = "2026-05-11T18:42:11.000Z"
EX_GROUP_PATH = f"/api/videos/uploads/{EX_SID}"
EX_FILE_PATH = f"{EX_GROUP_PATH}/files/{EX_UIDS[0]}"
EX_ETAG = '"9b2cf535f27731c974343645a3985328"'
EX_CHECKSUMS = ("j6cFt2eoaMM=", "Cv1kLyS8cMw=")
"""Example CRC64NVME values of two parts (base64 of 8 bytes, as S3's x-amz-checksum-crc64nvme carries them)."""


def _example_file(i: int, status: str) -> dict[str, Any]:
    """The view fields (attribute names) of the example group's file i."""
    spec = START_EXAMPLE["files"][i]
    plan = plan_parts(spec["sizeBytes"], EXAMPLE_PART_SIZE)
    return {
        "upload_id": EX_UIDS[i], "file_role": spec["fileRole"], "file_name": spec["fileName"],
        "total_bytes": spec["sizeBytes"], "part_size_bytes": plan.part_size, "total_parts": plan.total_parts,
        "upload_strategy": plan.strategy.value, "status": status,
    }  # fmt: skip


def _examples() -> dict[str, Any]:
    """Example documents, built from the answer models so their shape cannot drift."""
    left = _example_file(0, "uploading")
    part = left["part_size_bytes"]
    url = (f"https://storage.example.com/spatialgen-uploads/uploads/acme/{EX_SID}/{EX_UIDS[0]}.mov?partNumber={{n}}"
           "&uploadId=2~Kx7vQ&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20260506T184211Z&X-Amz-Expires=86400"
           "&X-Amz-SignedHeaders=content-length%3Bhost&X-Amz-Credential=…&X-Amz-Signature=…")  # fmt: skip
    parts = [
        PartUrl(part_number=n, size_bytes=part, byte_start=(n - 1) * part, byte_end=n * part, url=url.format(n=n),
                expires_at="2026-05-07T18:42:11.000Z", headers={"Content-Length": str(part)})
        for n in (1, 2)
    ]  # fmt: skip
    progress = [
        FileProgressView(
            **_example_file(i, "uploading" if i == 0 else "initialized"), language_tag=f.get("languageTag"),
            uploaded_parts=5 if i == 0 else 0, uploaded_bytes=5 * part if i == 0 else 0,
            parts_refreshed_at="2026-05-06T18:50:02.000Z" if i == 0 else None, failure_reason=None, failure_detail=None,
        )
        for i, f in enumerate(START_EXAMPLE["files"])
    ]  # fmt: skip
    views: dict[str, msgspec.Struct] = {
        "created": UploadGroupCreated(
            session_id=EX_SID, expires_at=EX_EXPIRES, video_name=START_EXAMPLE["videoName"], file_count=4,
            files=[UploadFileView(**_example_file(i, "initialized")) for i in range(4)],
        ),
        "part-urls": PartUrlsView(**left, parts=parts),
        "part-urls-compact": CompactPartUrlsView(
            **left, expires_at=parts[0].expires_at, url_template=url.format(n=PART_NUMBER_SLOT)
            .replace("X-Amz-Signature=…", f"X-Amz-Signature={SIGNATURE_SLOT}"),
            headers={}, parts=[CompactPart(part_number=n, signature="…") for n in (1, 2)],
        ),
        "part-urls-with-checksums": PartUrlsView(**left, checksum_algorithm="CRC64NVME", parts=[
            msgspec.structs.replace(p, headers={**p.headers, "x-amz-checksum-crc64nvme": EX_CHECKSUMS[i]},
                                    url=p.url.replace("%3Bhost", "%3Bhost%3Bx-amz-checksum-crc64nvme"))
            for i, p in enumerate(parts)
        ]),
        "completed-with-checksum": CompletedFileView(
            **{**left, "status": "completed"}, checksum_algorithm="CRC64NVME", library_id=None,
            checksum=Checksum("CRC64NVME", "FULL_OBJECT", "QgEZVOqYEF0="),
        ),
        "completed": CompletedFileView(**{**left, "status": "completed"}, library_id=None),
        "group-completed": CompletedFileView(**{**left, "status": "completed"}, library_id=1042),
        "completing": CompletedFileView(**{**left, "status": "completing"}, library_id=None),
        "canceled": CanceledGroupView(
            session_id=EX_SID, status="canceled", canceled_at="2026-05-06T19:03:45.120Z", file_count=4,
            canceled_file_count=4,
        ),
        "group": GroupStatusView(
            session_id=EX_SID, status="uploading", video_name=START_EXAMPLE["videoName"],
            description=START_EXAMPLE["description"], layout="Separate", perspective="Regular",
            folder_name=START_EXAMPLE["folderName"], created_at=EX_CREATED, updated_at="2026-05-06T18:44:30.512Z",
            expires_at=EX_EXPIRES, completed_at=None, canceled_at=None, library_id=None, processing=None, file_count=4,
            files=progress,
        ),
        "parts": ReceivedPartsView(
            upload_id=EX_UIDS[0], status="uploading", total_parts=left["total_parts"],
            refreshed_at="2026-05-06T18:50:02.000Z",
            parts=[ReceivedPart(part_number=n, etag=EX_ETAG, size_bytes=part) for n in (1, 2, 3)],
        ),
    }  # fmt: skip
    return {name: msgspec.to_builtins(view) for name, view in views.items()}


EXAMPLES = _examples()

# An example detail (and extras) for each error code the routes document.
PROBLEM_EXAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "invalid_request": (
        "2 problems in the request: files[2].languageTag 'klingon' is not a supported language tag (and 1 more)",
        {"errors": [FieldError("files[2].languageTag", "'klingon' is not a supported language tag"),
                    FieldError("files[3].fileName", "a subtitle file must end in .srt (got 'subs.txt')")]},
    ),
    "malformed_json": ("The body is not valid JSON: Input data was truncated.", {}),
    "invalid_header": (
        "Idempotency-Key must be 1-255 printable ASCII characters.",
        {"errors": [FieldError("Idempotency-Key", "must be 1-255 printable ASCII characters")]},
    ),
    "unsupported_media_type": ("Send the body as application/json, not 'text/plain'.", {}),
    "missing_api_key": ("Send your API key in the X-SPATIALGEN-APPKEY header.", {}),
    "invalid_api_key": ("The API key is not valid.", {}),
    "rate_limited": (
        "Over this API key's part_urls limit: 20000 URLs at once and 1000 a second; retry after the Retry-After delay.",
        {"extra": {"cost": 500}},
    ),
    "quota_exceeded": ("The account has 1000 live groups, its limit; complete or cancel some first.", {}),
    "role_not_allowed": ("Keys with role readonly may not call {method} {instance}.", {}),
    "session_not_found": (f"No upload group '{EX_SID}' for this account.", {}),
    "file_not_found": (f"No file '{EX_UIDS[0]}' in upload group {EX_SID}.", {}),
    "idempotency_key_reused": (
        "This Idempotency-Key was already used with a different request body; use a new key.", {}
    ),
    "session_canceled": (f"Upload group {EX_SID} was canceled; start a new group.", {}),
    "session_expired": (f"Upload group {EX_SID} expired at {EX_EXPIRES}; start a new group.", {}),
    "session_completed": (f"Upload group {EX_SID} is already completed.", {}),
    "session_failed": (f"Upload group {EX_SID} failed; start a new group.", {}),
    "file_completed": (f"File {EX_UIDS[0]} is already completed.", {}),
    "file_completing": (f"File {EX_UIDS[0]} is being completed.", {}),
    "file_failed": (f"File {EX_UIDS[0]} failed: size mismatch: expected 1287340032 bytes, got 1287339008.", {}),
    "missing_parts": (
        "Storage refused the completion: InvalidPart: part 7 was not uploaded. Upload the missing parts "
        "(GET .../parts lists what storage has) and complete again.", {},
    ),
    "file_not_provisioned": (
        f"File {EX_UIDS[0]} has no storage upload yet: get its part URLs, upload the parts, then complete.", {}
    ),
    "completion_attempts_exhausted": (
        f"File {EX_UIDS[0]} has started 20 completions, the most a file may; cancel the group and start again.",
        {"extra": {"attempts": 20, "maxAttempts": 20}},
    ),
    "body_too_large": ("The body is larger than 1048576 bytes.", {}),
    "storage_not_ready": ("Storage for this file is still being prepared; retry shortly.", {}),
    "dependency_unavailable": ("The state store is unavailable; retry shortly.", {}),
    "webhook_not_found": ("No webhook endpoint '6f1d2c3b-9a8e-4f7d-b6c5-4e3a2b1c0d9f' for this account.", {}),
    "event_not_found": ("No event 'evt_0b1c…' of this account is kept for redelivery.", {}),
    "checksum_unsupported": (
        "checksumAlgorithm 'MD5' is not a checksum algorithm this store verifies (one of CRC64NVME, CRC32C, CRC32, "
        "SHA256, SHA1).",
        {"errors": [FieldError("checksumAlgorithm", "must be one of CRC64NVME, CRC32C, CRC32, SHA256, SHA1")],
         "extra": {"supported": ["CRC64NVME", "CRC32C", "CRC32", "SHA256", "SHA1"]}},
    ),
    "checksum_required": (
        "The file's checksum algorithm is CRC64NVME: every requested part needs its checksum in checksums; missing "
        "for 2 parts: 3, 7.", {"extra": {"partNumbers": [3, 7], "checksumAlgorithm": "CRC64NVME"}},
    ),
    "checksum_algorithm_required": (
        "checksums were sent for a file without a checksum algorithm: name one in checksumAlgorithm (at create or in "
        "this call), or send no checksums.", {},
    ),
    "checksum_algorithm_conflict": (
        "The file's checksum algorithm is CRC64NVME; it cannot change to SHA256.",
        {"extra": {"checksumAlgorithm": "CRC64NVME"}},
    ),
    "checksum_mismatch": (
        "Storage refused the completion: part 3's checksum does not match: expected AAAAAAAAAAA=, storage computed "
        "j6cFt2eoaMM=. The file is still uploading: send the part again (a new part-urls call with its checksum) or "
        "correct the checksum, and complete again.",
        {"extra": {"reason": "checksum_mismatch", "partNumber": 3, "expected": "AAAAAAAAAAA=",
                   "received": "j6cFt2eoaMM="}},
    ),
    "webhook_limit_reached": ("The account has 20 webhook endpoints, the most allowed (20); delete one first.", {}),
}  # fmt: skip
