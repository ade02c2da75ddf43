"""The events an account's webhook endpoints receive (SPEC 3.9): their types, stable ids and payload documents.

The state scripts record an event in the same step as the state change that causes it (app/state/lua/lib/events.lua
renders the type names below); the dispatcher (app/webhooks/dispatch.py) turns it into the body documented here.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

import msgspec
from msgspec import UNSET, UnsetType

from app.domain.checksums import Checksum


class EventType(StrEnum):
    """What happened. The names are stable: receivers branch on them."""

    GROUP_COMPLETED = "upload_group.completed"
    GROUP_FAILED = "upload_group.failed"
    GROUP_EXPIRED = "upload_group.expired"
    GROUP_CANCELED = "upload_group.canceled"
    FILE_COMPLETED = "upload_file.completed"
    TEST = "webhook.test"
    """Sent by `POST /api/webhooks/{endpointId}/test` to that endpoint only, whatever its event types."""


SUBSCRIBABLE = tuple(t for t in EventType if t is not EventType.TEST)
"""The event types an endpoint may ask for."""
EVENT_ID_PREFIX = "evt_"


def event_id(event_type: str, session_id: str, upload_id: str = "") -> str:
    """The event's id, derived from the transition itself (so a script run again cannot mint a second one).

    The same as lib/events.lua computes: 'evt_' + the first 32 hex digits of SHA-1(type:sessionId:uploadId), with the
    uploadId of a file's event only ('' for a group's).
    """
    digest = hashlib.sha1(f"{event_type}:{session_id}:{upload_id}".encode(), usedforsecurity=False).hexdigest()
    return EVENT_ID_PREFIX + digest[:32]


class EventFile(msgspec.Struct, rename="camel", kw_only=True):
    """A completed file as an event shows it (the library record's entry; checksums appear where recorded)."""

    upload_id: str
    file_role: str
    file_name: str
    size_bytes: int
    language_tag: str | None
    storage_key: str
    checksum: Checksum | UnsetType = UNSET
    """The checksum storage verified (algorithm, type, value); absent for a file without one."""


class GroupCompletedData(msgspec.Struct, rename="camel", kw_only=True):
    """`upload_group.completed`: every file is completed; the group has its libraryId and went to processing."""

    session_id: str
    status: str
    """The group's state: `completed`."""
    library_id: int
    video_name: str | None
    folder_name: str | None
    completed_at: str
    files: list[EventFile]


class GroupEndedData(msgspec.Struct, rename="camel", kw_only=True):
    """`upload_group.failed`, `.expired`, `.canceled`: the group ended without completing; its storage is purged."""

    session_id: str
    status: str
    """The group's state: `failed`, `expired` or `canceled`."""
    video_name: str | None
    reason: str | None
    """failed: the stable failure reason (`size_mismatch`, …; see the README's failure reasons); null otherwise."""
    upload_id: str | None
    """failed: the file whose verification failed; null otherwise."""


class FileCompletedData(msgspec.Struct, rename="camel", kw_only=True):
    """`upload_file.completed`: one file is verified and completed."""

    session_id: str
    status: str
    """The group's state after this file: `uploading`, or `completed` when it was the group's last file."""
    file: EventFile


class TestData(msgspec.Struct, rename="camel", kw_only=True):
    """`webhook.test`: sent on request to check an endpoint and its signature verification."""

    endpoint_id: str
    message: str


class Event(msgspec.Struct, kw_only=True):
    """The body of every delivery: `{id, type, timestamp, data}` (the Standard Webhooks payload shape)."""

    id: str
    """The event's stable id; also the `webhook-id` header (the same on every retry and redelivery)."""
    type: str
    timestamp: str
    """When the state changed (ISO 8601 UTC, ms); `webhook-timestamp` is when this attempt was sent."""


class GroupCompletedEvent(Event, kw_only=True):
    """upload_group.completed."""

    data: GroupCompletedData


class GroupEndedEvent(Event, kw_only=True):
    """upload_group.failed / .expired / .canceled."""

    data: GroupEndedData


class FileCompletedEvent(Event, kw_only=True):
    """upload_file.completed."""

    data: FileCompletedData


class TestEvent(Event, kw_only=True):
    """webhook.test."""

    data: TestData


EVENT_DOCUMENTS: dict[EventType, type[Event]] = {
    EventType.GROUP_COMPLETED: GroupCompletedEvent,
    EventType.GROUP_FAILED: GroupEndedEvent,
    EventType.GROUP_EXPIRED: GroupEndedEvent,
    EventType.GROUP_CANCELED: GroupEndedEvent,
    EventType.FILE_COMPLETED: FileCompletedEvent,
    EventType.TEST: TestEvent,
}
"""The body document of each event type (the OpenAPI `webhooks` section shows each)."""
