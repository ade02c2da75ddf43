"""The lifecycle vocabulary: file and group statuses, the sets that give them meaning, and script reply codes.

Defined once here; the Lua scripts get the same names rendered in (app/state/scripts.py), so no status or
reply is spelled twice. SPEC 4 is the contract.
"""

from __future__ import annotations

from enum import StrEnum


class FileStatus(StrEnum):
    """Lifecycle of one file (SPEC 4)."""

    INITIALIZED = "initialized"
    UPLOADING = "uploading"
    COMPLETING = "completing"
    COMPLETED = "completed"
    CANCELED = "canceled"
    EXPIRED = "expired"
    FAILED = "failed"


class GroupStatus(StrEnum):
    """Lifecycle of an upload group (SPEC 4)."""

    INITIALIZED = "initialized"
    UPLOADING = "uploading"
    COMPLETED = "completed"
    CANCELED = "canceled"
    EXPIRED = "expired"
    FAILED = "failed"


LIVE_GROUP = frozenset({GroupStatus.INITIALIZED, GroupStatus.UPLOADING})
"""A group that still accepts uploads (part-urls, complete, cancel); every other status is terminal."""
TERMINAL_GROUP = frozenset(GroupStatus) - LIVE_GROUP
"""Groups that never change again; kept for the retention period, then removed."""
OPEN_FILE = frozenset({FileStatus.INITIALIZED, FileStatus.UPLOADING})
"""A file that takes part-urls and may start completing."""
TRACKED_FILE = frozenset({FileStatus.INITIALIZED, FileStatus.UPLOADING, FileStatus.COMPLETING})
"""A file that has not ended (it is shown expired with its group)."""
RECEIVING_FILE = frozenset({FileStatus.UPLOADING, FileStatus.COMPLETING})
"""A file storage may be receiving bytes for: the only ones a parts refresh asks storage about (an initialized
file has had no URL, so storage holds nothing for it)."""
PURGED_GROUP = frozenset({GroupStatus.CANCELED, GroupStatus.EXPIRED, GroupStatus.FAILED})
"""Terminal groups whose stored objects are deleted (a completed group keeps them for its retention)."""
SETTLED_FILE = frozenset({FileStatus.COMPLETED})
"""A file that keeps its status when its group ends (cancel, expiry, another file failing)."""


class Reply(StrEnum):
    """First element of every state script's reply: what happened. The rest of the reply is per script."""

    OK = "ok"
    """Done (a repeat that finds it already done also answers OK where the script says so)."""
    CREATED = "created"
    REPLAY = "replay"
    """create_group: the Idempotency-Key was seen; the stored answer follows."""
    COLLISION = "collision"
    """create_group: the sessionId exists already (retry with another)."""
    GONE = "gone"
    """The group's keys are gone (unknown, or its retention lapsed)."""
    EXPIRED = "expired"
    """The group is past expiresAt (whether or not the sweep has marked it)."""
    GROUP_STATE = "group_state"
    """The group's status forbids it; the status follows."""
    FILE_STATE = "file_state"
    """The file's status forbids it; the status follows."""
    STALE = "stale"
    """Another attempt (or a concurrent change) owns the file now; nothing was changed."""
    RECORDED = "recorded"
    """record_s3_upload: another S3 upload id is already recorded; it follows."""
    CHECKSUM_CONFLICT = "checksum_conflict"
    """mark_uploading: the file's checksum algorithm is fixed and differs (it follows; '' for none)."""
    CHECKSUMS_CHANGED = "checksums_changed"
    """finish_complete: another file's recorded checksum changed since the library record was built: build again."""
    FILE_COMPLETED = "file_completed"
    """finish_complete: the file is completed; the group still waits for others."""
    GROUP_COMPLETED = "group_completed"
    """finish_complete: that was the last file; the libraryId follows."""
    NOT_DUE = "not_due"
    """expire_group: the group's expiry is still ahead."""
    RUNNING = "running"
    """The job that owns the work is queued or running; nothing to re-drive."""
    QUEUED = "queued"
    """A lost job was queued again (same id)."""
    RATE_LIMITED = "rate_limited"
    """The key's token bucket for this route class is empty."""
    QUOTA_EXCEEDED = "quota_exceeded"
    """The account is at its live-groups or live-bytes quota; the limit, its value and the use follow."""
