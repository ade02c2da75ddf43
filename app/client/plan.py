"""Part planning: byte ranges, which parts storage already holds, which are left, and what a resume does per file.

Pure functions over the service's answers; the uploader (upload.py) acts on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum

from app.client.errors import ServiceError
from app.client.models import PartUrl, ReceivedPart

URL_BATCH = 200
"""Part URLs asked for per part-urls call: a few requests for a 10,000-part file, each answer well under 1 MB."""
REFRESH_MARGIN_SECONDS = 120.0
"""A URL closer than this to its expiresAt is fetched again before use, rather than failing mid-PUT."""


def part_range(part_number: int, part_size: int, total_bytes: int) -> tuple[int, int]:
    """Byte range [start, end) of a 1-based part; the last part may be short."""
    start = (part_number - 1) * part_size
    return start, min(start + part_size, total_bytes)


def present_parts(
    received: Iterable[ReceivedPart], *, part_size: int, total_bytes: int, total_parts: int
) -> dict[int, str]:
    """Part number → ETag of the parts storage holds whole: a part counts only if its size matches its range.

    A short part (a PUT cut off, a truncated local file at the time) would make CompleteMultipartUpload
    assemble the wrong bytes or fail, so it is uploaded again.
    """
    out: dict[int, str] = {}
    for p in received:
        if not 1 <= p.part_number <= total_parts:
            continue
        start, end = part_range(p.part_number, part_size, total_bytes)
        if p.size_bytes == end - start:
            out[p.part_number] = p.etag
    return out


def missing_parts(total_parts: int, present: Iterable[int]) -> list[int]:
    """Part numbers 1..total_parts that storage does not hold, in order."""
    have = set(present)
    return [n for n in range(1, total_parts + 1) if n not in have]


def url_batch(wanted: int, pending: Sequence[int], batch: int = URL_BATCH) -> list[int]:
    """Parts to ask URLs for when `wanted` needs one: it and the next pending ones after it (at most `batch`)."""
    later = [n for n in pending if n > wanted][: batch - 1]
    return [wanted, *later]


def check_part_url(part: PartUrl, *, part_size: int, total_bytes: int) -> None:
    """Refuse a part-urls answer whose byte range is not the one this client computed from the start answer."""
    start, end = part_range(part.part_number, part_size, total_bytes)
    if (part.byte_start, part.byte_end, part.size_bytes) != (start, end, end - start):
        raise ServiceError(
            502, "inconsistent_answer",
            f"part {part.part_number} was offered as bytes [{part.byte_start}, {part.byte_end}) "
            f"({part.size_bytes} bytes), but the file's parts are [{start}, {end})",
            call="part-urls",
        )  # fmt: skip


class FileAction(StrEnum):
    """What a (resumed) run does with a file, given the status the service reports."""

    SKIP = "skip"
    """Completed: nothing to send."""
    WAIT = "wait"
    """Completing: a worker is assembling it; wait until it is completed (or handed back)."""
    UPLOAD = "upload"
    """Initialized or uploading: send what storage lacks, then complete."""


_ACTIONS = {
    "completed": FileAction.SKIP,
    "completing": FileAction.WAIT,
    "initialized": FileAction.UPLOAD,
    "uploading": FileAction.UPLOAD,
}
GROUP_DEAD = frozenset({"canceled", "expired", "failed"})
"""Group statuses no upload can come back from."""


def file_action(status: str, *, file_name: str, failure_reason: str | None = None) -> FileAction:
    """The action for a file status; a canceled, expired or failed file ends the run (409 as the service says)."""
    try:
        return _ACTIONS[status]
    except KeyError:
        reason = f": {failure_reason}" if failure_reason else ""
        raise ServiceError(409, f"file_{status}", f"file {file_name} is {status}{reason}; start a new group") from None
