"""What an upload reports while it runs: one typed event per thing that happened, for bars, logs and scripts.

Events are msgspec Structs tagged by `event`; `--json` writes each (but bytes_sent) as one line.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec


class Event(msgspec.Struct, tag_field="event", rename="camel", kw_only=True):
    """Base of every progress event."""


class GroupStarted(Event, tag="group_started"):
    """The group exists (created, replayed or resumed); its files follow as file_started."""

    session_id: str
    video_name: str
    file_count: int
    total_bytes: int
    resumed: bool = False


class FileStarted(Event, tag="file_started"):
    """A file's plan: how much storage already holds and how many parts are left to send."""

    upload_id: str
    file_name: str
    total_bytes: int
    total_parts: int
    present_parts: int = 0
    present_bytes: int = 0
    missing_parts: int = 0


class BytesSent(Event, tag="bytes_sent"):
    """A chunk of a part went to the network (negative when a failed attempt is rewound); not written by --json."""

    upload_id: str
    size_bytes: int


class PartDone(Event, tag="part_done"):
    """Storage accepted a part."""

    upload_id: str
    file_name: str
    part_number: int
    size_bytes: int
    attempts: int = 1


class Retry(Event, tag="retry"):
    """A part PUT or an API call failed and will be tried again after delaySeconds."""

    what: str
    """`part` or `api`."""
    reason: str
    attempt: int
    delay_seconds: float
    call: str | None = None
    upload_id: str | None = None
    part_number: int | None = None
    new_url: bool = False
    """The part's URL was refused or expired: a fresh one is fetched before the next try."""


class FileChecksum(msgspec.Struct, rename="camel", kw_only=True):
    """A completed file's checksum as storage recorded it, and whether it equals the local file's."""

    algorithm: str
    type: str
    """FULL_OBJECT (the CRC of the whole file) or COMPOSITE (SHA-256/SHA-1 of the parts' digests, `-N`)."""
    value: str
    verified: bool
    """True: the same as the local file's; False: not compared (the local value is unknown)."""


class FileCompleted(Event, tag="file_completed"):
    """The service verified the file; libraryId is set by the call that completed the group."""

    upload_id: str
    file_name: str
    library_id: int | None = None
    already: bool = False
    """It was completed before this run."""
    checksum: FileChecksum | None = None
    """Files with a checksum algorithm: what storage recorded."""


class GroupCompleted(Event, tag="group_completed"):
    """Every file is completed; the group's library record exists."""

    session_id: str
    library_id: int | None
    bytes_sent: int
    seconds: float


class Failed(Event, tag="failed"):
    """The run stopped on an error (written by the command)."""

    message: str
    session_id: str | None = None
    resume: str | None = None
    """The command that continues it, when it can be resumed."""


class Interrupted(Event, tag="interrupted"):
    """The run was interrupted (Ctrl-C, SIGTERM); `resume` continues it."""

    session_id: str | None = None
    resume: str | None = None


Reporter = Callable[[Event], None]
"""What receives events (`on_progress`)."""


def ignore(event: Event) -> None:
    """A reporter that drops every event."""
