"""Parts: how a file is cut (single PUT or multipart, part size, byte ranges), and the part lists of the
part-urls and complete requests (SPEC 3.1-3.3).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from app.domain.contract import (
    MAX_PARTS,
    MIB,
    CompletedPart,
    CompleteRequest,
    PartUrlsRequest,
    UploadStrategy,
    declared,
)
from app.domain.validation import Violations, body_object, clip, is_int, json_type, wire_names

_ETAG = declared(CompletedPart, "etag")
_ETAG_RE = re.compile(_ETAG["pattern"])
_PART_FIELDS = wire_names(CompletedPart)


class PartPlan(msgspec.Struct, frozen=True):
    """How a file is cut into parts."""

    strategy: UploadStrategy
    part_size: int
    total_parts: int


def plan_parts(size_bytes: int, preferred_part_size: int) -> PartPlan:
    """Decide single PUT or multipart, the part size and the part count for a file.

    Files up to the preferred size P go up in one PUT. Larger files use P unless that
    would need more than S3's 10,000 parts; then the part size grows to
    ceil(size / 10,000) rounded up to a whole MiB, which keeps every part a MiB
    multiple (clients slice at aligned offsets) and the count at or below 10,000:
    rounding the part size up can only lower ceil(size / part). P itself is at
    least 5 MiB (settings check), so every part except the last meets S3's minimum.
    """
    if size_bytes <= preferred_part_size:
        return PartPlan(UploadStrategy.SINGLE_PUT, size_bytes, 1)
    min_part = -(-size_bytes // MAX_PARTS)
    min_part_mib_aligned = -(-min_part // MIB) * MIB
    part_size = max(preferred_part_size, min_part_mib_aligned)
    return PartPlan(UploadStrategy.MULTIPART, part_size, -(-size_bytes // part_size))


def part_range(part_number: int, part_size: int, total_bytes: int) -> tuple[int, int]:
    """Byte range [start, end) of a 1-based part; the last part may be short."""
    start = (part_number - 1) * part_size
    return start, min(start + part_size, total_bytes)


def _listed_parts(found: Violations, numbers: Any, total_parts: int) -> None:
    """partNumbers: a non-empty array of distinct part numbers within the file."""
    if not isinstance(numbers, list):
        found.add("partNumbers", f"must be an array, not {json_type(numbers)}")
    elif not numbers:
        found.add("partNumbers", "must contain at least one part number")
    elif len(numbers) > MAX_PARTS:
        found.add("partNumbers", f"must contain at most {MAX_PARTS} part numbers")
    else:
        seen: set[int] = set()
        for i, n in enumerate(numbers):
            if not is_int(n):
                found.add(f"partNumbers[{i}]", f"must be an integer, not {json_type(n)}")
            elif not 1 <= n <= total_parts:
                found.add(f"partNumbers[{i}]", f"must be between 1 and {total_parts} (got {clip(str(n))})")
            elif n in seen:
                found.add(f"partNumbers[{i}]", f"part {n} is listed twice")
            else:
                seen.add(n)


def select_parts(payload: Any, total_parts: int) -> list[int]:
    """Which part numbers a part-urls request asks for (SPEC 3.2); None/{} means all of them."""
    found, payload = body_object({} if payload is None else payload, PartUrlsRequest, "part selection")
    numbers = payload.get("partNumbers")
    start = payload.get("startPartNumber")
    count = payload.get("count")
    if numbers is not None and (start is not None or count is not None):
        found.add("partNumbers", "use either partNumbers or startPartNumber/count, not both")
        found.raise_if_any("part selection")
    checksums = payload.get("checksums")
    if numbers is None and start is None and count is None and isinstance(checksums, dict) and checksums:
        # Checksums alone select exactly those parts; their keys' and values' problems are reported together by the
        # checksum rules (app/domain/checksums.py).
        return sorted(checksum_keys(Violations(), checksums, total_parts))
    if numbers is not None:
        _listed_parts(found, numbers, total_parts)
        found.raise_if_any("part selection")
        return list(numbers)
    if start is None:
        start = 1
    elif not is_int(start):
        found.add("startPartNumber", f"must be an integer, not {json_type(start)}")
    elif not 1 <= start <= total_parts:
        found.add("startPartNumber", f"must be between 1 and {total_parts} (got {clip(str(start))})")
    if count is None:
        count = total_parts
    elif not is_int(count):
        found.add("count", f"must be an integer, not {json_type(count)}")
    elif not 1 <= count <= MAX_PARTS:
        found.add("count", f"must be between 1 and {MAX_PARTS} (got {clip(str(count))})")
    found.raise_if_any("part selection")
    return list(range(start, min(start + count - 1, total_parts) + 1))


_PART_KEY = re.compile(r"^[1-9][0-9]{0,4}$")


def checksum_keys(found: Violations, checksums: dict[str, Any], total_parts: int) -> dict[int, Any]:
    """The `checksums` object of a part-urls body by part number; keys that are not this file's part numbers are
    noted at `checksums.<key>`."""
    out: dict[int, Any] = {}
    for key, value in checksums.items():
        if not _PART_KEY.fullmatch(key) or int(key) > total_parts:
            found.add(f"checksums.{clip(key)}", f"must be keyed by a part number of this file, 1..{total_parts}")
        else:
            out[int(key)] = value
    return out


def completed_parts(payload: Any, total_parts: int, *, required: bool) -> list[tuple[int, str]]:
    """The (partNumber, etag) list of a complete request: every part 1..total_parts exactly once."""
    found, payload = body_object({} if payload is None else payload, CompleteRequest, "completion")
    parts = payload.get("parts")
    out: list[tuple[int, str]] = []
    if parts is None:
        if required:
            found.add("parts", f"is required: list all {total_parts} parts with their ETags")
    elif not isinstance(parts, list):
        found.add("parts", f"must be an array, not {json_type(parts)}")
    elif len(parts) > MAX_PARTS:
        found.add("parts", f"must contain at most {MAX_PARTS} parts")
    else:
        seen: set[int] = set()
        for i, p in enumerate(parts):
            entry = _completed_part(found, p, f"parts[{i}]", total_parts, seen)
            if entry is not None:
                seen.add(entry[0])
                out.append(entry)
        if required and not found.errors:
            missing = [n for n in range(1, total_parts + 1) if n not in seen]
            if missing:
                shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
                found.add("parts", f"must list every part 1..{total_parts}; missing {len(missing)}: {shown}")
    found.raise_if_any("completion")
    return sorted(out)


def _completed_part(found: Violations, p: Any, path: str, total_parts: int, seen: set[int]) -> tuple[int, str] | None:
    """One {partNumber, etag} of a complete request, or None when it is wrong (its errors noted)."""
    if not isinstance(p, dict):
        found.add(path, f"must be an object, not {json_type(p)}")
        return None
    found.unknown_fields(p, _PART_FIELDS, f"{path}.")
    raw_n = p.get("partNumber")
    etag = p.get("etag")
    n: int | None = None
    if not is_int(raw_n):
        found.add(
            f"{path}.partNumber", "is required" if raw_n is None else f"must be an integer, not {json_type(raw_n)}"
        )
    elif not 1 <= raw_n <= total_parts:
        found.add(f"{path}.partNumber", f"must be between 1 and {total_parts} (got {clip(str(raw_n))})")
    elif raw_n in seen:
        found.add(f"{path}.partNumber", f"part {raw_n} is listed twice")
    else:
        n = raw_n
    if not isinstance(etag, str) or not etag.strip('" '):
        found.add(f"{path}.etag", "is required (the ETag header S3 returned for the part)"
                  if etag is None else "must be a non-empty string")  # fmt: skip
    elif len(etag) > _ETAG["max_length"] or not _ETAG_RE.fullmatch(etag):
        found.add(f"{path}.etag", 'must be the ETag storage answered the PUT with: a quoted 32-hex-digit digest, '
                  f'like "9b2cf535f27731c974343645a3985328" (got {clip(etag)!r})')  # fmt: skip
    elif n is not None:
        return n, etag
    return None
