"""The service's JSON documents as the client reads them (SPEC 3.1–3.5): msgspec Structs, camelCase on the wire.

Unknown fields are ignored, so a newer service that adds fields does not break an older client.
"""

from __future__ import annotations

import msgspec

from app.domain.answers import url_filler
from app.domain.parts import part_range


class FileView(msgspec.Struct, rename="camel", kw_only=True):
    """A file as the service shows it."""

    upload_id: str
    file_role: str
    file_name: str
    total_bytes: int
    part_size_bytes: int
    total_parts: int
    upload_strategy: str
    status: str
    checksum_algorithm: str | None = None
    """The file's checksum algorithm (SPEC 3.8); absent for a file without one."""


class RecordedChecksum(msgspec.Struct, rename="camel", kw_only=True):
    """The checksum storage verified for a completed file."""

    algorithm: str
    type: str
    """FULL_OBJECT or COMPOSITE."""
    value: str


class GroupCreated(msgspec.Struct, rename="camel", kw_only=True):
    """201 answer of `POST /api/videos/uploads`."""

    session_id: str
    expires_at: str
    video_name: str
    file_count: int
    files: list[FileView]
    replayed: bool = False
    """Not in the body: set from the `Idempotent-Replayed` header (the group existed already)."""


class PartUrl(msgspec.Struct, rename="camel", kw_only=True):
    """One presigned part: PUT bytes [byteStart, byteEnd) of the file to url before expiresAt."""

    part_number: int
    size_bytes: int
    byte_start: int
    byte_end: int
    url: str
    expires_at: str
    headers: dict[str, str] = {}
    """Headers the URL's signature covers: the PUT must send exactly these (SPEC 3.7)."""


class PartUrls(FileView, kw_only=True):
    """Answer of part-urls: the file and the requested parts."""

    parts: list[PartUrl]


class CompactPart(msgspec.Struct, rename="camel", kw_only=True):
    """One part of a compact part-urls answer."""

    part_number: int
    signature: str
    headers: dict[str, str] = {}


class CompactPartUrls(FileView, kw_only=True):
    """Answer of part-urls in the compact form (app/domain/answers.py CompactPartUrlsView): one URL template."""

    expires_at: str
    url_template: str
    headers: dict[str, str] = {}
    parts: list[CompactPart]

    def expand(self) -> PartUrls:
        """The same answer in the full form: each part's URL, byte range and headers written out."""
        parts = []
        url = url_filler(self.url_template)
        for p in self.parts:
            start, end = part_range(p.part_number, self.part_size_bytes, self.total_bytes)
            parts.append(PartUrl(
                part_number=p.part_number, size_bytes=end - start, byte_start=start, byte_end=end,
                url=url(p.part_number, p.signature), expires_at=self.expires_at,
                headers={"Content-Length": str(end - start), **self.headers, **p.headers},
            ))  # fmt: skip
        fields = {f: getattr(self, f) for f in FileView.__struct_fields__}
        return PartUrls(**fields, parts=parts)


class CompletedFile(FileView, kw_only=True):
    """Answer of complete (200 `completed`, 202 `completing`); libraryId once the whole group has completed."""

    library_id: int | None = None
    checksum: RecordedChecksum | None = None
    """What storage recorded (files with a checksum algorithm)."""


class CanceledGroup(msgspec.Struct, rename="camel", kw_only=True):
    """Answer of cancel (the same on every repeat)."""

    session_id: str
    status: str
    canceled_at: str
    file_count: int
    canceled_file_count: int


class FileProgress(FileView, kw_only=True):
    """A file in the status document: its state and what storage has received so far."""

    language_tag: str | None = None
    uploaded_parts: int = 0
    uploaded_bytes: int = 0
    parts_refreshed_at: str | None = None
    failure_reason: str | None = None
    """Stable code (`size_mismatch`, `group_failed`, ...)."""
    failure_detail: str | None = None
    """The same in a sentence."""
    checksum: RecordedChecksum | None = None
    """Once completed, what storage recorded (files with a checksum algorithm)."""

    @property
    def failure(self) -> str | None:
        """`code: sentence` of a failed file, for people."""
        if not self.failure_reason:
            return None
        return f"{self.failure_reason}: {self.failure_detail}" if self.failure_detail else self.failure_reason


class GroupStatus(msgspec.Struct, rename="camel", kw_only=True):
    """`GET /api/videos/uploads/{sessionId}`: the group, its files and their progress."""

    session_id: str
    status: str
    video_name: str
    layout: str
    created_at: str
    updated_at: str
    expires_at: str
    file_count: int
    files: list[FileProgress]
    description: str | None = None
    perspective: str | None = None
    folder_name: str | None = None
    completed_at: str | None = None
    canceled_at: str | None = None
    library_id: int | None = None


class ReceivedPart(msgspec.Struct, rename="camel", kw_only=True):
    """A part as storage has received it."""

    part_number: int
    etag: str
    size_bytes: int


class ReceivedParts(msgspec.Struct, rename="camel", kw_only=True):
    """`GET .../files/{uploadId}/parts`: what storage holds for a file."""

    upload_id: str
    status: str
    total_parts: int
    parts: list[ReceivedPart]
    refreshed_at: str | None = None


class FieldProblem(msgspec.Struct, kw_only=True):
    """One violation in a problem+json `errors` list."""

    path: str = ""
    message: str = ""


class ProblemDoc(msgspec.Struct, kw_only=True):
    """An RFC 9457 problem+json answer, as far as the client uses it."""

    status: int = 0
    code: str = ""
    title: str = ""
    detail: str = ""
    errors: list[FieldProblem] | None = None
