"""msgspec Structs: validated requests, response documents and the records kept in Redis.

Wire names are camelCase (`rename="camel"`); Python attributes are snake_case.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from app.objectkeys import object_key


class Layout(StrEnum):
    """Stereo layout of the asset set."""

    FLAT_2D = "2D"
    MVHEVC = "MVHEVC"
    SBS = "SBS"
    TB = "TB"
    SEPARATE = "Separate"
    AIV = "AIV"


class Perspective(StrEnum):
    """Projection of the video."""

    REGULAR = "Regular"
    HALF = "180"
    FULL = "360"


class FileRole(StrEnum):
    """What a file is in the asset set."""

    VIDEO = "video"
    VIDEO_LEFT = "video_left"
    VIDEO_RIGHT = "video_right"
    AUDIO = "audio"
    SUBTITLE = "subtitle"
    AIME = "aime"
    FCPXMLD = "fcpxmld"


class UploadStrategy(StrEnum):
    """How the client sends a file's bytes."""

    SINGLE_PUT = "single_put"
    MULTIPART = "multipart"


class FileSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One file of a validated start request."""

    file_name: str
    file_role: FileRole
    size_bytes: int
    language_tag: str | None = None


class StartUploadRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A validated `POST /api/videos/uploads` body (names trimmed, tags lowercased)."""

    video_name: str
    layout: Layout
    files: tuple[FileSpec, ...]
    description: str | None = None
    perspective: Perspective | None = None
    folder_name: str | None = None


class PartPlan(msgspec.Struct, frozen=True):
    """How a file is cut into parts."""

    strategy: UploadStrategy
    part_size: int
    total_parts: int


class FileRecord(msgspec.Struct, frozen=True, array_like=True):
    """Immutable facts about a file, stored with its group."""

    upload_id: str
    role: FileRole
    name: str
    total_bytes: int
    part_size: int
    total_parts: int
    strategy: UploadStrategy
    language: str | None
    ext: str
    """The validated, lowercased extension of the client's file name ('.mov'), used in the object key."""


class GroupRecord(msgspec.Struct, frozen=True, array_like=True):
    """Immutable facts about an upload group, stored as one msgpack value."""

    session_id: str
    account: str
    key_prefix: str
    """Object key prefix of the group, `{prefix}/{account}/{sessionId}/` (stored once, not per file)."""
    video_name: str
    description: str | None
    layout: Layout
    perspective: Perspective | None
    folder_name: str | None
    created_ms: int
    expires_ms: int
    files: tuple[FileRecord, ...]

    def file(self, upload_id: str) -> FileRecord | None:
        """The file with this upload id, if it belongs to the group."""
        for f in self.files:
            if f.upload_id == upload_id:
                return f
        return None

    def index(self, upload_id: str) -> int:
        """Position of a file in the group (0-based)."""
        for i, f in enumerate(self.files):
            if f.upload_id == upload_id:
                return i
        raise KeyError(upload_id)

    @property
    def declared_bytes(self) -> int:
        """The sum of the files' declared sizes (what the account's live-bytes quota counts)."""
        return sum(f.total_bytes for f in self.files)

    def storage_key(self, f: FileRecord) -> str:
        """The object key of one of the group's files."""
        return object_key(self.key_prefix, f.upload_id, f.ext)


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


class CompletedFileView(UploadFileView, kw_only=True):
    """Answer of complete: the file, and the libraryId once the whole group has completed."""

    library_id: int | None


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
