"""Checksums as S3 names and carries them (SPEC 3.8): running digests, the whole file's from its parts, file ranges.

Values are base64 of the big-endian digest, as the `x-amz-checksum-*` headers carry them. The CRCs (awscrt's native
code, several GB/s) give FULL_OBJECT checksums: the whole file's CRC is combined from the parts' CRCs and lengths
(awscrt's combine: the first CRC times x^(8·len) in GF(2), plus the second), so parts sent in parallel and out of
order need no pass over the whole file. SHA-256 and SHA-1 give COMPOSITE checksums on multipart files: the digest of
the parts' digests, with `-<partCount>`. A single PUT's checksum is always the whole object's (FULL_OBJECT).
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from awscrt import checksums as crt

CRCS: dict[str, tuple[Callable[[bytes, int], int], Callable[[int, int, int], int], int]] = {
    "CRC64NVME": (crt.crc64nvme, crt.combine_crc64nvme, 8),
    "CRC32C": (crt.crc32c, crt.combine_crc32c, 4),
    "CRC32": (crt.crc32, crt.combine_crc32, 4),
}
"""Algorithm → (running CRC, combine of two CRCs given the second's length, digest bytes)."""
HASHES: dict[str, Callable[[], hashlib._Hash]] = {"SHA256": hashlib.sha256, "SHA1": hashlib.sha1}
ALGORITHMS = (*CRCS, *HASHES)
"""What the client can compute: S3's five algorithms."""
CHOICES = ("CRC64NVME", "CRC32C", "SHA256", "none")
"""What `--checksum` offers."""
DEFAULT = "CRC64NVME"
NONE = "none"
FULL_OBJECT = "FULL_OBJECT"
COMPOSITE = "COMPOSITE"
READ_BYTES = 1024 * 1024
"""Read size of a checksum pass over a file range (one reused buffer)."""


def header_name(algorithm: str) -> str:
    """The S3 header that carries a checksum of this algorithm: `x-amz-checksum-crc64nvme`."""
    return f"x-amz-checksum-{algorithm.lower()}"


def checksum_type(algorithm: str, *, multipart: bool) -> str:
    """FULL_OBJECT for the CRCs and any single PUT, COMPOSITE for SHA-256/SHA-1 over parts."""
    return COMPOSITE if algorithm in HASHES and multipart else FULL_OBJECT


def encode(algorithm: str, crc: int) -> str:
    """The base64 value of a CRC."""
    return base64.b64encode(crc.to_bytes(CRCS[algorithm][2], "big")).decode()


def decode(algorithm: str, value: str) -> int:
    """The CRC a base64 value holds."""
    return int.from_bytes(base64.b64decode(value), "big")


class Digest:
    """A running checksum of bytes fed in order."""

    def __init__(self, algorithm: str) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown checksum algorithm {algorithm!r} (known: {', '.join(ALGORITHMS)})")
        self.algorithm = algorithm
        self._crc = 0
        self._hash = HASHES[algorithm]() if algorithm in HASHES else None

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Add the next bytes."""
        if self._hash is not None:
            self._hash.update(data)
        else:
            self._crc = CRCS[self.algorithm][0](data, self._crc)  # type: ignore[arg-type]

    def value(self) -> str:
        """The base64 value of everything fed so far."""
        if self._hash is not None:
            return base64.b64encode(self._hash.digest()).decode()
        return encode(self.algorithm, self._crc)


def of_bytes(algorithm: str, data: bytes) -> str:
    """The base64 checksum of some bytes."""
    d = Digest(algorithm)
    d.update(data)
    return d.value()


def combine(algorithm: str, parts: Sequence[tuple[str, int]]) -> str:
    """The whole file's checksum from its parts' (value, length) in order, without reading a byte.

    CRCs: the CRC of the concatenation (FULL_OBJECT). SHA-256/SHA-1: S3's COMPOSITE form, the digest of the
    parts' digests followed by `-<partCount>`.
    """
    if not parts:
        raise ValueError("no parts")
    if algorithm in HASHES:
        h = HASHES[algorithm]()
        for value, _ in parts:
            h.update(base64.b64decode(value))
        return f"{base64.b64encode(h.digest()).decode()}-{len(parts)}"
    _, join, _ = CRCS[algorithm]
    crc = decode(algorithm, parts[0][0])
    for value, length in parts[1:]:
        crc = join(crc, decode(algorithm, value), length)
    return encode(algorithm, crc)


def same_value(recorded: str, local: str) -> bool:
    """Whether a value storage recorded is the local one (a COMPOSITE value may come with or without `-N`)."""
    return recorded.split("-", 1)[0] == local.split("-", 1)[0]


def of_range(path: Path, start: int, size: int, algorithm: str) -> str:
    """The checksum of bytes [start, start + size) of a file, read in 1 MiB pieces into one buffer (blocking: run it
    in a thread). OSError when the file cannot be read; EOFError when it ends before the range does."""
    digest = Digest(algorithm)
    buffer = bytearray(min(READ_BYTES, size) or 1)
    view = memoryview(buffer)
    fd = os.open(path, os.O_RDONLY)
    try:
        offset, left = start, size
        while left:
            n = os.preadv(fd, [view[: min(len(buffer), left)]], offset)
            if n == 0:
                raise EOFError(f"{path} ends at byte {offset}")
            digest.update(view[:n])
            offset += n
            left -= n
    finally:
        os.close(fd)
    return digest.value()
