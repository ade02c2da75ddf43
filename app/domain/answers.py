"""The answer documents of the API: what each route returns (SPEC 3), as msgspec Structs.

Built by the upload steps (app/uploads/views.py) and rendered in the OpenAPI document with examples built from
these same Structs (app/http/openapi.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import msgspec
from msgspec import UNSET, UnsetType

from app.domain.checksums import Checksum


class UploadFileView(msgspec.Struct, rename="camel", kw_only=True):
    """A file as the API shows it."""

    upload_id: str
    file_role: str
    file_name: str
    total_bytes: int
    part_size_bytes: int
    total_parts: int
    upload_strategy: str
    status: str
    checksum_algorithm: str | UnsetType = UNSET
    """The file's checksum algorithm (SPEC 3.8); absent when it has none."""


class UploadGroupCreated(msgspec.Struct, rename="camel", kw_only=True):
    """201 answer of `POST /api/videos/uploads`."""

    session_id: str
    expires_at: str
    video_name: str
    file_count: int
    files: list[UploadFileView]


class PartUrl(msgspec.Struct, rename="camel", kw_only=True):
    """One presigned part: PUT bytes [byteStart, byteEnd) of the file to url before expiresAt, with headers.

    The URL's signature covers every header in `headers` (always `Content-Length`, the part's exact size;
    for a `single_put` also `If-None-Match: *`), so storage refuses a PUT that sends other values or omits one.
    """

    part_number: int
    size_bytes: int
    byte_start: int
    byte_end: int
    url: str
    expires_at: str
    headers: dict[str, str]


class PartUrlsView(UploadFileView, kw_only=True):
    """200 answer of part-urls: the file and the requested parts."""

    parts: list[PartUrl]


COMPACT_PART_URLS = "application/vnd.spatialgen.part-urls.compact+json"
"""Media type of the compact part-urls answer, sent to a request whose Accept names it."""
PART_NUMBER_SLOT = "{partNumber}"
SIGNATURE_SLOT = "{signature}"


def part_url(url_template: str, part_number: int, signature: str) -> str:
    """A part's URL from a compact answer: the template with its part number and signature filled in (a single_put
    URL has no part number slot). Presigned URLs never hold a brace of their own (they are percent-encoded)."""
    return url_template.replace(PART_NUMBER_SLOT, str(part_number)).replace(SIGNATURE_SLOT, signature)


def url_filler(url_template: str) -> Callable[[int, str], str]:
    """`part_url` for one template, made once: a reader filling in 10,000 URLs joins three strings per URL instead of
    searching the template twice (twice as fast in all)."""
    head, slot, rest = url_template.partition(PART_NUMBER_SLOT)
    mid = rest.removesuffix(SIGNATURE_SLOT)
    if not slot or mid == rest or SIGNATURE_SLOT in head + mid or PART_NUMBER_SLOT in rest:
        return functools.partial(part_url, url_template)  # another shape (a single_put's): the general way
    return lambda part_number, signature: f"{head}{part_number}{mid}{signature}"


class CompactPart(msgspec.Struct, rename="camel", kw_only=True, omit_defaults=True):
    """One part of a compact answer: what differs from part to part."""

    part_number: int
    signature: str
    headers: dict[str, str] = {}
    """Headers this part sends besides the answer's `headers` and its Content-Length: its signed
    `x-amz-checksum-<algorithm>` when the file has a checksum algorithm (SPEC 3.8); left out when none."""


class CompactPartUrlsView(UploadFileView, kw_only=True):
    """200 answer of part-urls in the compact form (Accept: application/vnd.spatialgen.part-urls.compact+json).

    The same URLs as the full form, each written once as `urlTemplate` with `{partNumber}` and `{signature}` to fill
    in. Part n covers bytes [(n - 1) * partSizeBytes, min(n * partSizeBytes, totalBytes)); its PUT sends
    `Content-Length` (that range's size) and `headers`, plus its own `headers` if it has any.
    """

    expires_at: str
    url_template: str
    headers: dict[str, str]
    parts: list[CompactPart]


class CompletedFileView(UploadFileView, kw_only=True):
    """Answer of complete: the file, and the libraryId once the whole group has completed."""

    library_id: int | None
    checksum: Checksum | UnsetType = UNSET
    """Once completed, the checksum storage verified (algorithm, type, value); absent for a file without one."""


class CanceledGroupView(msgspec.Struct, rename="camel", kw_only=True):
    """200 answer of cancel (the same on every repeat)."""

    session_id: str
    status: str
    canceled_at: str
    file_count: int
    canceled_file_count: int


class FileProgressView(UploadFileView, kw_only=True):
    """A file in the status document: its state and what storage has received so far."""

    language_tag: str | None
    uploaded_parts: int
    uploaded_bytes: int
    parts_refreshed_at: str | None
    failure_reason: str | None
    """Stable code of why a failed file failed (`size_mismatch`, `group_failed`, ...; see the README)."""
    failure_detail: str | None
    """The same in a sentence (never storage or exception text)."""
    checksum: Checksum | UnsetType = UNSET
    """Once completed, the checksum storage verified (algorithm, type, value); absent for a file without one."""


class GroupStatusView(msgspec.Struct, rename="camel", kw_only=True):
    """`GET /api/videos/uploads/{sessionId}`: the group, its files and their progress."""

    session_id: str
    status: str
    video_name: str
    description: str | None
    layout: str
    perspective: str | None
    folder_name: str | None
    created_at: str
    updated_at: str
    expires_at: str
    completed_at: str | None
    canceled_at: str | None
    library_id: int | None
    processing: str | None
    """Once the group completed, where its hand-off to the processing pipeline stands: `pending` (queued), `taken`
    (a consumer ran it) or `failed` (the consumer failed; the operators retry it). Null before."""
    file_count: int
    files: list[FileProgressView]


class ReceivedPart(msgspec.Struct, rename="camel", kw_only=True):
    """A part as the store has received it."""

    part_number: int
    etag: str
    size_bytes: int


class ReceivedPartsView(msgspec.Struct, rename="camel", kw_only=True):
    """`GET .../files/{uploadId}/parts`: what the store holds, to resume without kept ETags."""

    upload_id: str
    status: str
    total_parts: int
    refreshed_at: str | None
    parts: list[ReceivedPart]
