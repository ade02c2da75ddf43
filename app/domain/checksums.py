"""Checksums (SPEC 3.8): the form of a value, and the checksum rules of the part-urls and complete bodies.

A file may have a checksum algorithm (named at create or at its first part-urls call). Its part URLs then sign
each part's `x-amz-checksum-<algorithm>` header, so storage refuses bytes that differ, and its completion hands
the parts' and the whole file's checksums to storage. Values are base64 of the big-endian digest, exactly as S3's
headers carry them. Pure functions: the supported algorithms (what the store verifies) are the caller's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from app.domain import errors
from app.domain.contract import (
    DIGEST_BYTES,
    ChecksumAlgorithm,
    ChecksumType,
    PartUrlsRequest,
    UploadStrategy,
    checksum_type,
)
from app.domain.parts import checksum_keys, select_parts
from app.domain.validation import Violations, body_object, clip, json_type

_ALGORITHMS = {a.value: a for a in ChecksumAlgorithm}
_SHOWN_PARTS = 20


class Checksum(msgspec.Struct, frozen=True, rename="camel"):
    """A verified checksum as recorded: algorithm, type and storage's value."""

    algorithm: str
    type: str
    value: str

    def encode(self) -> str:
        """The state-hash value: `ALGORITHM:F|C:value` (under 64 bytes: the hash stays a compact listpack)."""
        return f"{self.algorithm}:{self.type[0]}:{self.value}"

    @classmethod
    def decode(cls, raw: str | None) -> Checksum | None:
        """The recorded checksum of a state-hash value, or None."""
        if not raw:
            return None
        algorithm, kind, value = raw.split(":", 2)
        full = ChecksumType.COMPOSITE if kind == "C" else ChecksumType.FULL_OBJECT
        return cls(algorithm, full.value, value)


def header_name(algorithm: str) -> str:
    """The S3 header carrying a checksum of this algorithm: `x-amz-checksum-crc64nvme`."""
    return f"x-amz-checksum-{algorithm.lower()}"


def _encoded_chars(size: int) -> int:
    return 4 * -(-size // 3)


def value_problem(value: Any, algorithm: ChecksumAlgorithm) -> str | None:
    """Why a value is not a checksum of this algorithm (canonical base64 of its digest size), or None."""
    size = DIGEST_BYTES[algorithm]
    if not isinstance(value, str):
        return f"must be a string, not {json_type(value)}"
    try:
        digest = base64.b64decode(value, validate=True) if len(value) == _encoded_chars(size) else b""
        ok = len(digest) == size and base64.b64encode(digest) == value.encode()  # canonical: as S3 writes it
    except (binascii.Error, ValueError):
        ok = False
    if ok:
        return None
    return (f"must be the base64 of a {size}-byte {algorithm.value} digest ({_encoded_chars(size)} characters, as "
            f"S3's {header_name(algorithm)} header carries it), got {clip(value)!r}")  # fmt: skip


def whole_problem(value: Any, algorithm: ChecksumAlgorithm, kind: ChecksumType, total_parts: int) -> str | None:
    """Why a complete body's whole-file `checksum` is wrong, or None. COMPOSITE: `<base64>-<partCount>`."""
    if isinstance(value, str) and kind is ChecksumType.COMPOSITE:
        digest, dash, count = value.partition("-")
        if dash and count != str(total_parts):
            return f"must end in -{total_parts} (this file's part count), got {clip(value)!r}"
        return value_problem(digest, algorithm)
    return value_problem(value, algorithm)


def requested_algorithm(payload: Mapping[str, Any], supported: Sequence[str], path: str) -> ChecksumAlgorithm | None:
    """The `checksumAlgorithm` of a body: None when absent; 400 checksum_unsupported (listing `supported`) when it is
    not one the store verifies."""
    raw = payload.get("checksumAlgorithm")
    if raw is None:
        return None
    found = _ALGORITHMS.get(raw) if isinstance(raw, str) else None
    if found is None or found.value not in supported:
        raise unsupported(raw, supported, path)
    return found


def unsupported(raw: Any, supported: Sequence[str], path: str) -> errors.ApiError:
    """400 checksum_unsupported for an algorithm the store does not verify."""
    shown = clip(raw) if isinstance(raw, str) else json_type(raw)
    takes = f"one of {', '.join(supported)}" if supported else "none: this store takes no checksums"
    return errors.CHECKSUM_UNSUPPORTED(
        f"{path} {shown!r} is not a checksum algorithm this store verifies ({takes}).",
        errors=[errors.FieldError(path, f"must be one of {', '.join(supported) or '(none)'}")],
        extra={"supported": list(supported)},
    )


def resolve_algorithm(
    fixed: ChecksumAlgorithm | None, requested: ChecksumAlgorithm | None, *, opened_without: bool
) -> ChecksumAlgorithm | None:
    """The file's algorithm once a part-urls call asked for `requested`: a different one than the file's, or one
    after the file's storage upload was opened without one, is a 409 checksum_algorithm_conflict."""
    if requested is None or requested is fixed:
        return fixed
    if fixed is not None:
        raise errors.CHECKSUM_ALGORITHM_CONFLICT(
            f"The file's checksum algorithm is {fixed.value}; it cannot change to {requested.value}.",
            extra={"checksumAlgorithm": fixed.value},
        )
    if opened_without:
        raise errors.CHECKSUM_ALGORITHM_CONFLICT(
            f"The file's storage upload was opened without a checksum algorithm; {requested.value} cannot be "
            "added now (start a new group to send this file with checksums).",
            extra={"checksumAlgorithm": None},
        )
    return requested


class PartRequest(msgspec.Struct, frozen=True):
    """A validated part-urls body: the parts, the algorithm it names (if any), their checksums by part number."""

    numbers: list[int]
    algorithm: ChecksumAlgorithm | None
    checksums: dict[int, str]


def _part_list(numbers: Iterable[int]) -> str:
    listed = sorted(numbers)
    return ", ".join(map(str, listed[:_SHOWN_PARTS])) + (" ..." if len(listed) > _SHOWN_PARTS else "")


def part_urls_request(
    payload: Any, total_parts: int, *, fixed: ChecksumAlgorithm | None, opened_without: bool,
    supported: Sequence[str],
) -> PartRequest:  # fmt: skip
    """Validate a part-urls body with its checksum fields (see the module docstring and SPEC 3.8).

    fixed: the file's algorithm so far; opened_without: its storage upload was opened without one.
    """
    numbers = select_parts(payload, total_parts)
    found, body = body_object({} if payload is None else payload, PartUrlsRequest, "part selection")
    requested = requested_algorithm(body, supported, "checksumAlgorithm")
    algorithm = resolve_algorithm(fixed, requested, opened_without=opened_without)
    raw = body.get("checksums")
    if raw is None:
        checksums: dict[int, Any] = {}
    elif not isinstance(raw, dict) or not raw:
        found.add("checksums", f"must be a non-empty object of checksums by part number, not {json_type(raw)}"
                  if not isinstance(raw, dict) else "must name at least one part")  # fmt: skip
        found.raise_if_any("part selection")
        checksums = {}
    else:
        checksums = checksum_keys(found, raw, total_parts)
        if algorithm is None:
            raise errors.CHECKSUM_ALGORITHM_REQUIRED(
                "checksums were sent for a file without a checksum algorithm: name one in checksumAlgorithm (at "
                "create or in this call), or send no checksums."
            )
        wanted = set(numbers)
        for n in sorted(checksums):
            if n not in wanted:
                found.add(f"checksums.{n}", f"part {n} is not among the requested parts")
            elif (problem := value_problem(checksums[n], algorithm)) is not None:
                found.add(f"checksums.{n}", problem)
        found.raise_if_any("part selection")
    if algorithm is not None:
        missing = [n for n in numbers if n not in checksums]
        if missing:
            raise errors.CHECKSUM_REQUIRED(
                f"The file's checksum algorithm is {algorithm.value}: every requested part needs its checksum in "
                f"checksums; missing for {len(missing)} part{'s' if len(missing) > 1 else ''}: {_part_list(missing)}.",
                extra={"partNumbers": missing[:1000], "checksumAlgorithm": algorithm.value},
            )
    return PartRequest(numbers, algorithm, {n: str(v) for n, v in checksums.items()})


class CompletionChecksums(msgspec.Struct, frozen=True):
    """The checksums a complete body carries: per part (those sent) and the whole file's."""

    parts: dict[int, str]
    whole: str | None


def completion_checksums(
    payload: Any, algorithm: ChecksumAlgorithm | None, strategy: UploadStrategy, total_parts: int
) -> CompletionChecksums:
    """The checksum fields of a complete body whose part list is valid (app/domain/parts.completed_parts)."""
    body: Mapping[str, Any] = payload if isinstance(payload, dict) else {}
    raw_parts = body.get("parts")
    parts: list[Any] = raw_parts if isinstance(raw_parts, list) else []
    sent = {i: p["checksum"] for i, p in enumerate(parts) if isinstance(p, dict) and "checksum" in p}
    whole = body.get("checksum")
    if (sent or whole is not None) and algorithm is None:
        raise errors.CHECKSUM_ALGORITHM_REQUIRED(
            "checksums were sent for a file without a checksum algorithm: send none for this file."
        )
    if algorithm is None:
        return CompletionChecksums({}, None)
    found = Violations()
    by_part: dict[int, str] = {}
    for i, value in sent.items():
        problem = value_problem(value, algorithm)
        if problem is not None:
            found.add(f"parts[{i}].checksum", problem)
        else:
            by_part[int(parts[i]["partNumber"])] = value
    kind = checksum_type(algorithm, strategy)
    if whole is not None and (problem := whole_problem(whole, algorithm, kind, total_parts)) is not None:
        found.add("checksum", problem)
    found.raise_if_any("completion")
    return CompletionChecksums(by_part, whole)


def composite_of(algorithm: ChecksumAlgorithm, part_values: Sequence[str]) -> str:
    """S3's COMPOSITE checksum of a multipart object: the digest of the parts' digests, `<base64>-<count>`."""
    joined = b"".join(base64.b64decode(v) for v in part_values)
    function = hashlib.sha256 if algorithm is ChecksumAlgorithm.SHA256 else hashlib.sha1
    digest = function(joined, usedforsecurity=False)
    return f"{base64.b64encode(digest.digest()).decode()}-{len(part_values)}"
