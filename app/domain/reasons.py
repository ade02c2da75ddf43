"""Why a file failed, or why its completion was handed back: a stable code clients can branch on, and a sentence.

Redis keeps `code` or `code:detail`, where a detail is built only from the service's own numbers (sizes, part
counts), never from exception or storage error text: host names, stack traces and storage messages go to the
logs.  Clients see the code as `failureReason` and the sentence as `failureDetail`, and in 409 details.
"""

from __future__ import annotations

import re
from enum import StrEnum


class Reason(StrEnum):
    """The stable reason codes."""

    SIZE_MISMATCH = "size_mismatch"
    MISSING_PARTS = "missing_parts"
    STORAGE_UPLOAD_GONE = "storage_upload_gone"
    OBJECT_MISSING = "object_missing"
    STORAGE_NOT_PROVISIONED = "storage_not_provisioned"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    COMPLETION_INTERRUPTED = "completion_interrupted"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    OBJECT_REPLACED = "object_replaced"
    GROUP_FAILED = "group_failed"
    UNSPECIFIED = "unspecified"


SENTENCES: dict[Reason, str] = {
    Reason.SIZE_MISMATCH: "the stored object's size differs from the file's sizeBytes",
    Reason.MISSING_PARTS: "storage does not hold the listed parts with those ETags",
    Reason.STORAGE_UPLOAD_GONE: "storage no longer has this file's multipart upload",
    Reason.OBJECT_MISSING: "storage holds no object for this file: PUT it to its URL first",
    Reason.STORAGE_NOT_PROVISIONED: "storage for this file was never prepared",
    Reason.STORAGE_UNAVAILABLE: "storage could not complete the file; call complete again",
    Reason.COMPLETION_INTERRUPTED: "the completion did not finish (its worker stopped); call complete again",
    Reason.GROUP_FAILED: "another file of the group failed",
    Reason.CHECKSUM_MISMATCH: "storage found a checksum that does not match the bytes it holds",
    Reason.OBJECT_REPLACED: "storage already holds another object under this file's key",
    Reason.UNSPECIFIED: "verification failed",
}
"""The sentence shown when a stored reason has no detail of its own."""

_BY_VALUE = {r.value: r for r in Reason}


def stored(reason: Reason, detail: str | None = None) -> str:
    """The value kept in Redis: the code, and a detail built from the service's own data only."""
    return reason.value if not detail else f"{reason.value}:{detail}"


def size_mismatch(stored_bytes: int, declared_bytes: int) -> str:
    """The stored reason of a file whose object has another size than declared."""
    return stored(
        Reason.SIZE_MISMATCH,
        f"the stored object has {stored_bytes} bytes but the file was registered with {declared_bytes}",
    )


def checksum_mismatch(part: int | None, expected: str | None, received: str | None) -> str:
    """The stored reason of a completion storage refused for a checksum: which part (None: the whole file's), the
    client's value and storage's, when known."""
    what = f"part {part}'s checksum" if part else "the whole file's checksum"
    return stored(
        Reason.CHECKSUM_MISMATCH,
        f"{what} does not match: expected {expected or 'unknown'}, storage computed {received or 'unknown'}",
    )


_MISMATCH = re.compile(r"^(?:part (\d+)'s|the whole file's) checksum does not match: expected ([^,\s]+), "
                       r"storage computed (\S+)$")  # fmt: skip


def mismatch_figures(detail: str) -> dict[str, object]:
    """The problem document's `partNumber`, `expected` and `received` of a checksum_mismatch detail (those known)."""
    found = _MISMATCH.match(detail)
    if found is None:
        return {}
    part, expected, received = found.groups()
    figures: dict[str, object] = {} if part is None else {"partNumber": int(part)}
    if expected != "unknown":
        figures["expected"] = expected
    if received != "unknown":
        figures["received"] = received
    return figures


def parse(value: str | None) -> tuple[Reason, str] | None:
    """(code, sentence) of a stored reason; None when there is none.

    A value that does not start with a known code (written by an older version as free text) is shown as
    `unspecified` with the generic sentence: free text may hold storage messages, which clients never see.
    """
    if not value:
        return None
    code, _, detail = value.partition(":")
    reason = _BY_VALUE.get(code)
    if reason is None:
        return Reason.UNSPECIFIED, SENTENCES[Reason.UNSPECIFIED]
    return reason, detail or SENTENCES[reason]


_STORAGE_CODES: dict[str, tuple[Reason, str]] = {
    "InvalidPart": (Reason.MISSING_PARTS, "storage does not hold every listed part with the listed ETag"),
    "InvalidPartOrder": (Reason.MISSING_PARTS, "the listed parts are not in ascending order"),
    "EntityTooSmall": (Reason.MISSING_PARTS, "a listed part other than the last is smaller than 5 MiB"),
    "InvalidRequest": (Reason.MISSING_PARTS, "storage refused the part list"),
    "MalformedXML": (Reason.MISSING_PARTS, "storage refused the part list"),
    "NoSuchUpload": (Reason.STORAGE_UPLOAD_GONE, SENTENCES[Reason.STORAGE_UPLOAD_GONE]),
}


def from_storage_error(code: str) -> str | None:
    """The stored reason for a CompleteMultipartUpload refusal the client can fix; None for other errors."""
    known = _STORAGE_CODES.get(code)
    return stored(*known) if known else None


assert all(r.name.lower() == r.value for r in Reason), "a reason's name is its code in capitals"
