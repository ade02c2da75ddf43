"""Object keys: where a group's files live in the bucket, built and parsed here only (SPEC 7).

`{prefix}/{accountId}/{sessionId}/{uploadId}{ext}`: derived from ids, never from a client's file name;
`ext` is the validated, lowercased extension of the name (one of rules.EXTENSIONS).
"""

from __future__ import annotations

from typing import NamedTuple


def root_prefix(prefix: str) -> str:
    """The configured key prefix as it starts every key: 'uploads/' (or '' when none is set)."""
    head = prefix.strip("/")
    return f"{head}/" if head else ""


def group_prefix(prefix: str, account: str, session_id: str) -> str:
    """Where a group's objects live: `{prefix}/{account}/{sessionId}/`."""
    return f"{root_prefix(prefix)}{account}/{session_id}/"


def object_key(group_key_prefix: str, upload_id: str, ext: str) -> str:
    """The object key of one file of a group, from the group's prefix."""
    return f"{group_key_prefix}{upload_id}{ext}"


class ObjectKey(NamedTuple):
    """A key this service made, taken apart."""

    account: str
    session_id: str
    upload_id: str


def parse_object_key(prefix: str, key: str) -> ObjectKey | None:
    """The parts of a key under the configured prefix, or None for a key this service did not make."""
    root = root_prefix(prefix)
    if not key.startswith(root):
        return None
    segments = key[len(root) :].split("/")
    if len(segments) != 3 or not all(segments):
        return None
    account, session_id, name = segments
    return ObjectKey(account, session_id, name.split(".", 1)[0])
