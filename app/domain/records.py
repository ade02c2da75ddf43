"""What is kept of a group in Redis for its whole life: the immutable group and file records.

Stored as compact msgpack arrays (app/state/snapshot.py); the mutable state (statuses, progress) lives beside
them in the group's state hash.
"""

from __future__ import annotations

import msgspec

from app.domain.contract import ChecksumAlgorithm, FileRole, Layout, Perspective, UploadStrategy
from app.domain.objectkeys import object_key


class FileRecord(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True):
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
    checksum_algorithm: ChecksumAlgorithm | None = None
    """The checksum algorithm named at create (one named at the first part-urls call is in the state hash).
    Omitted from the stored record when None, so records without one are byte for byte what they were."""


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
