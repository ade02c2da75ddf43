"""One file's checksums during a run (SPEC 3.8): each part's, the whole file's, and the check of what storage recorded.

A part URL signs its part's checksum header, so the checksum must be known before the PUT's first byte: a part's
checksum is computed by a pass over its range just before its first PUT (the PUT then reads the same range again,
as a rule from the page cache, and checks the CRC of the bytes it sends against the signed one). It is kept in the
state file, so neither a retry nor a resume computes it again. The whole file's checksum is combined from the
parts' (no pass over the file); parts storage held before the state file kept their checksums are read once
locally. Once the file completes, the checksum storage recorded is compared with the local one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from app.client import checksums
from app.client.errors import ChecksumMismatch, LocalFileChanged, ServiceError
from app.client.models import PartUrl, RecordedChecksum
from app.client.plan import part_range
from app.client.state import FileState


@dataclass(frozen=True)
class Verified:
    """A completed file's checksum: what storage recorded, and whether the local one is the same."""

    algorithm: str
    type: str
    value: str
    verified: bool
    """True: equal to the local file's; False: the local one is not known (completed before this client kept it)."""


class FileChecksums:
    """The checksums of one file with a checksum algorithm (`enabled` is False for a file without one)."""

    def __init__(self, fs: FileState) -> None:
        self.fs = fs
        self.algorithm = fs.checksum_algorithm

    @property
    def enabled(self) -> bool:
        """Whether the file has a checksum algorithm."""
        return self.algorithm is not None

    @property
    def multipart(self) -> bool:
        """Whether the file is sent in parts (else one PUT, whose checksum is the whole object's)."""
        return self.fs.upload_strategy == "multipart"

    def known(self, part_number: int) -> str | None:
        """The part's checksum if it was computed already (this run or an earlier one)."""
        return self.fs.part_checksums.get(part_number)

    def expect(self, part_number: int) -> tuple[str, str] | None:
        """(algorithm, value) for the PUT to check the bytes it sends against: CRCs only (a second SHA-256 would
        cost as much as the first; storage checks every algorithm anyway)."""
        value = self.known(part_number)
        if self.algorithm is None or value is None or self.algorithm not in checksums.CRCS:
            return None
        return self.algorithm, value

    async def part(self, part_number: int) -> str:
        """The part's checksum: kept, or computed by a pass over its range in a thread (then kept)."""
        value = self.known(part_number)
        return value if value is not None else await self._compute(part_number)

    async def _compute(self, part_number: int) -> str:
        assert self.algorithm is not None
        fs = self.fs
        start, end = part_range(part_number, fs.part_size_bytes, fs.size_bytes)
        try:
            value = await asyncio.to_thread(checksums.of_range, Path(fs.path), start, end - start, self.algorithm)
        except EOFError as exc:
            raise LocalFileChanged(f"{exc}; it was larger when the upload started") from None
        except OSError as exc:
            raise LocalFileChanged(f"cannot read {fs.path}: {exc.strerror}") from None
        fs.part_checksums[part_number] = value
        return value

    async def fill(self, part_numbers: Iterable[int]) -> int:
        """Compute the checksums not kept yet of these parts (stored before the state file kept them); how many."""
        missing = [n for n in part_numbers if self.known(n) is None]
        for n in missing:  # one after another: a disk reads best in order
            await self.part(n)
        return len(missing)

    def parts(self) -> dict[int, str]:
        """Every part's checksum, for complete (all must be known)."""
        return {n: self.fs.part_checksums[n] for n in range(1, self.fs.total_parts + 1)}

    def whole(self) -> str | None:
        """The whole file's checksum from its parts' (None unless every part's is known)."""
        fs = self.fs
        if self.algorithm is None or any(self.known(n) is None for n in range(1, fs.total_parts + 1)):
            return None
        if not self.multipart:
            return fs.part_checksums[1]
        sizes = [part_range(n, fs.part_size_bytes, fs.size_bytes) for n in range(1, fs.total_parts + 1)]
        return checksums.combine(self.algorithm, [(fs.part_checksums[n], end - start)
                                                  for n, (start, end) in enumerate(sizes, 1)])  # fmt: skip

    def verify(self, recorded: RecordedChecksum | None) -> Verified | None:
        """Compare what storage recorded with the local checksum; ChecksumMismatch when they differ."""
        if recorded is None:
            return None
        local = self.whole() if recorded.algorithm == self.algorithm else None
        if local is not None and not checksums.same_value(recorded.value, local):
            raise ChecksumMismatch(self.fs.file_name, recorded.algorithm, recorded.value, local)
        return Verified(recorded.algorithm, recorded.type, recorded.value, verified=local is not None)


def check_signed(part: PartUrl, algorithm: str, value: str | None) -> None:
    """Refuse a URL that does not sign the checksum this client sent for its part."""
    name = checksums.header_name(algorithm)
    signed = next((v for k, v in part.headers.items() if k.lower() == name), None)
    if value is None or signed != value:
        raise ServiceError(502, "inconsistent_answer", f"part {part.part_number}'s URL signs {name}: {signed}, "
                           f"not the checksum sent ({value})", call="part-urls")  # fmt: skip
