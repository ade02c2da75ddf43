"""A group as read from Redis in one round trip (record, state hash, S3 upload ids), and the value codecs.

Everything that interprets the state hash's fields lives here; nothing else reads them raw.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from app.domain import reasons
from app.domain.checksums import Checksum
from app.domain.contract import ChecksumAlgorithm
from app.domain.lifecycle import LIVE_GROUP, FileStatus, GroupStatus
from app.domain.reasons import Reason
from app.domain.records import GroupRecord
from app.state.keys import Field, FileField, file_field

_group_decoder = msgspec.msgpack.Decoder(GroupRecord)
_parts_decoder = msgspec.msgpack.Decoder(list[tuple[int, str, int]])
_encoder = msgspec.msgpack.Encoder()


def encode_group(record: GroupRecord) -> bytes:
    """msgpack bytes of a group record (array-like: compact in Redis)."""
    return _encoder.encode(record)


def decode_group(blob: bytes) -> GroupRecord:
    """The group record stored by encode_group."""
    return _group_decoder.decode(blob)


def encode_parts(parts: list[tuple[int, str, int]]) -> bytes:
    """A received-parts list: [partNumber, etag, size] each."""
    return _encoder.encode(parts)


def decode_parts(blob: bytes) -> list[tuple[int, str, int]]:
    """The list stored by encode_parts."""
    return _parts_decoder.decode(blob)


class Progress(NamedTuple):
    """What storage had received for a file when workers last tracked it."""

    parts: int
    bytes: int
    refreshed_ms: int | None

    def encode(self) -> str:
        """The state-hash value: "parts:bytes:refreshed_ms"."""
        return f"{self.parts}:{self.bytes}:{self.refreshed_ms or 0}"

    @classmethod
    def decode(cls, raw: str | None) -> Progress:
        """Parse a state-hash value; never tracked is (0, 0, None)."""
        if not raw:
            return cls(0, 0, None)
        parts, size, refreshed = raw.split(":")
        return cls(int(parts), int(size), int(refreshed) or None)


class GroupSnapshot(msgspec.Struct, frozen=True):
    """A group's record and its mutable state, read in one round trip."""

    record: GroupRecord
    state: dict[str, str]
    upload_ids: tuple[str, ...] = ()

    @property
    def status(self) -> GroupStatus:
        """Current group status."""
        return GroupStatus(self.state.get(Field.STATUS, GroupStatus.EXPIRED))

    def file_status(self, upload_id: str) -> FileStatus:
        """Current status of one file."""
        return FileStatus(self.state.get(file_field(FileField.STATUS, upload_id), FileStatus.EXPIRED))

    def s3_upload_id(self, upload_id: str) -> str | None:
        """The S3 multipart upload id recorded for a file, if provisioned."""
        for f, s3_id in zip(self.record.files, self.upload_ids, strict=False):
            if f.upload_id == upload_id:
                return s3_id or None
        return None

    def provisioning_began(self, upload_id: str) -> bool:
        """Whether a try to open this file's multipart upload has begun (it may have opened one and stopped)."""
        return file_field(FileField.PROVISIONING, upload_id) in self.state

    def checksum_algorithm(self, upload_id: str) -> ChecksumAlgorithm | None:
        """The file's checksum algorithm: named at create (its record), or fixed by its first part-urls call."""
        f = self.record.file(upload_id)
        if f is not None and f.checksum_algorithm is not None:
            return f.checksum_algorithm
        fixed = self.state.get(file_field(FileField.CHECKSUM_ALGORITHM, upload_id))
        return ChecksumAlgorithm(fixed) if fixed else None

    def checksum(self, upload_id: str) -> Checksum | None:
        """The checksum storage verified when the file completed, if it has one."""
        return Checksum.decode(self.state.get(file_field(FileField.CHECKSUM, upload_id)))

    def checksums_seen(self) -> str:
        """The files' recorded checksums as finish_complete compares them ('' when no file has an algorithm)."""
        if all(self.checksum_algorithm(f.upload_id) is None for f in self.record.files):
            return ""
        return "\n".join(self.state.get(file_field(FileField.CHECKSUM, f.upload_id), "") for f in self.record.files)

    def attempt(self, upload_id: str) -> int:
        """How many completions of this file have been started."""
        return int(self.state.get(file_field(FileField.ATTEMPT, upload_id), 0))

    def reason(self, upload_id: str) -> str | None:
        """Why the file failed, or why its last completion was refused, as stored (see app.domain.reasons)."""
        return self.state.get(file_field(FileField.REASON, upload_id))

    def failure(self, upload_id: str) -> tuple[Reason, str] | None:
        """(stable code, sentence) of the file's reason, if it has one."""
        return reasons.parse(self.reason(upload_id))

    def progress(self, upload_id: str) -> Progress:
        """Parts and bytes received, as last tracked by workers."""
        return Progress.decode(self.state.get(file_field(FileField.PROGRESS, upload_id)))

    def ms(self, field: str) -> int | None:
        """A timestamp `Field` of the state hash (CREATED, UPDATED, CANCELED, COMPLETED ...)."""
        v = self.state.get(field)
        return int(v) if v else None

    @property
    def handoff(self) -> str | None:
        """Where the hand-off to processing stands once the group completed (keys.HandoffState), else None."""
        return self.state.get(Field.HANDOFF)

    @property
    def library_id(self) -> int | None:
        """The libraryId, once the group has completed."""
        lib = self.state.get(Field.LIBRARY)
        return int(lib) if lib else None

    def shown_status(self, now_ms: int) -> GroupStatus:
        """The group's status as clients see it: a live group past its expiresAt is expired, swept or not."""
        status = self.status
        return GroupStatus.EXPIRED if status in LIVE_GROUP and now_ms >= self.record.expires_ms else status
