"""The uploader's checksums: known vectors, running digests, the whole file's CRC combined from its parts' (against a
straight CRC of the whole file), S3's COMPOSITE form, file ranges, the check of the bytes a PUT sends, and what a
completed file's recorded checksum is compared with."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
from pathlib import Path

import pytest

from app.client import checksums
from app.client.errors import ChecksumMismatch, ChecksumUnsupported, LocalFileChanged
from app.client.integrity import FileChecksums
from app.client.models import RecordedChecksum
from app.client.plan import part_range
from app.client.state import FileState
from app.client.transfer import read_range

CHECK = b"123456789"


def b64(n: int, size: int) -> str:
    return base64.b64encode(n.to_bytes(size, "big")).decode()


def crc_bitwise(data: bytes, width: int, poly_reflected: int) -> int:
    """A reflected CRC with all-ones init and final xor, one bit at a time: slow, short, independent of awscrt."""
    mask = (1 << width) - 1
    crc = mask
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly_reflected if crc & 1 else crc >> 1
    return crc ^ mask


BITWISE = {
    "CRC64NVME": lambda d: crc_bitwise(d, 64, 0x9A6C9329AC4BC9B5),
    "CRC32C": lambda d: crc_bitwise(d, 32, 0x82F63B78),
    "CRC32": lambda d: crc_bitwise(d, 32, 0xEDB88320),
}


# --- known vectors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "check"),
    [("CRC64NVME", b64(0xAE8B14860A799888, 8)), ("CRC32C", b64(0xE3069283, 4)), ("CRC32", b64(0xCBF43926, 4))],
)
def test_crcs_give_the_catalogue_check_values(algorithm: str, check: str) -> None:
    """The CRC catalogue's check value (the CRC of "123456789") of each algorithm, big-endian in base64."""
    assert checksums.of_bytes(algorithm, CHECK) == check
    assert checksums.of_bytes(algorithm, b"") == b64(0, checksums.CRCS[algorithm][2])


def test_shas_are_base64_digests() -> None:
    assert checksums.of_bytes("SHA256", b"abc") == "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
    assert checksums.of_bytes("SHA1", b"abc") == base64.b64encode(hashlib.sha1(b"abc").digest()).decode()


@pytest.mark.parametrize("algorithm", list(BITWISE))
def test_crcs_agree_with_a_bitwise_reference_on_random_bytes(algorithm: str) -> None:
    rng = random.Random(algorithm)
    for size in (1, 7, 64, 1000, 4099):
        data = rng.randbytes(size)
        assert checksums.of_bytes(algorithm, data) == b64(BITWISE[algorithm](data), checksums.CRCS[algorithm][2])


@pytest.mark.parametrize("algorithm", checksums.ALGORITHMS)
def test_a_running_digest_fed_in_pieces_equals_one_of_the_whole(algorithm: str) -> None:
    data = random.Random(1).randbytes(100_003)
    d = checksums.Digest(algorithm)
    for i in range(0, len(data), 4096):
        d.update(memoryview(data)[i : i + 4096])
    assert d.value() == checksums.of_bytes(algorithm, data)


def test_an_unknown_algorithm_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown checksum algorithm 'MD5'"):
        checksums.Digest("MD5")


# --- the whole file from its parts -------------------------------------------------------------


@pytest.mark.parametrize("algorithm", list(checksums.CRCS))
@pytest.mark.parametrize(("size", "part"), [(1, 1), (10_000, 10_000), (10_001, 1000), (65_536 * 3 + 5, 65_536),
                                            (5000, 7)])  # fmt: skip
def test_the_crc_combined_from_parts_is_the_crc_of_the_whole_file(algorithm: str, size: int, part: int) -> None:
    data = random.Random(size).randbytes(size)
    ranges = [part_range(n, part, size) for n in range(1, -(-size // part) + 1)]
    values = [(checksums.of_bytes(algorithm, data[a:b]), b - a) for a, b in ranges]
    assert checksums.combine(algorithm, values) == checksums.of_bytes(algorithm, data)


def test_combining_does_not_depend_on_the_order_parts_were_computed_in() -> None:
    data = random.Random(3).randbytes(50_000)
    ranges = [part_range(n, 4096, len(data)) for n in range(1, 14)]
    computed = {n: checksums.of_bytes("CRC64NVME", data[a:b]) for n, (a, b) in reversed(list(enumerate(ranges, 1)))}
    values = [(computed[n], b - a) for n, (a, b) in enumerate(ranges, 1)]
    assert checksums.combine("CRC64NVME", values) == checksums.of_bytes("CRC64NVME", data)


@pytest.mark.parametrize("algorithm", ["SHA256", "SHA1"])
def test_shas_combine_to_s3s_composite_form(algorithm: str) -> None:
    parts = [b"a" * 10, b"b" * 10, b"c" * 3]
    values = [(checksums.of_bytes(algorithm, p), len(p)) for p in parts]
    outer = hashlib.new(algorithm.lower(), b"".join(hashlib.new(algorithm.lower(), p).digest() for p in parts))
    assert checksums.combine(algorithm, values) == base64.b64encode(outer.digest()).decode() + "-3"
    assert checksums.checksum_type(algorithm, multipart=True) == "COMPOSITE"
    assert checksums.checksum_type(algorithm, multipart=False) == "FULL_OBJECT"
    assert checksums.checksum_type("CRC32C", multipart=True) == "FULL_OBJECT"


def test_no_parts_is_an_error() -> None:
    with pytest.raises(ValueError):
        checksums.combine("CRC32C", [])


# --- file ranges and the bytes a PUT sends -----------------------------------------------------


def test_a_range_of_a_file_is_read_in_pieces_and_a_short_file_is_an_error(tmp_path: Path) -> None:
    data = random.Random(5).randbytes(3 * checksums.READ_BYTES + 17)
    path = tmp_path / "f"
    path.write_bytes(data)
    for start, size in ((0, len(data)), (5, checksums.READ_BYTES + 1), (len(data) - 17, 17), (10, 0)):
        assert checksums.of_range(path, start, size, "CRC64NVME") == checksums.of_bytes(
            "CRC64NVME", data[start : start + size]
        )
    with pytest.raises(EOFError):
        checksums.of_range(path, len(data) - 5, 10, "CRC32C")


async def _drain(path: Path, size: int, expect: tuple[str, str] | None) -> bytes:
    out = b""
    async for chunk in read_range(path, 0, size, lambda n: None, chunk=1000, expect=expect):
        out += chunk
    return out


async def test_a_put_checks_the_bytes_it_sends_against_the_signed_checksum(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(5000))
    signed = checksums.of_range(path, 0, 5000, "CRC64NVME")
    assert await _drain(path, 5000, ("CRC64NVME", signed)) == path.read_bytes()
    changed = bytearray(path.read_bytes())  # changed between the checksum pass and the PUT, size kept
    changed[4500] ^= 0xFF
    path.write_bytes(changed)
    sent: list[int] = []
    with pytest.raises(LocalFileChanged, match="changed while it was being sent"):
        async for _ in read_range(path, 0, 5000, sent.append, chunk=1000, expect=("CRC64NVME", signed)):
            pass
    assert sum(sent) == 4000  # the last piece is never handed to the connection: storage gets no whole part


# --- one file's checksums ----------------------------------------------------------------------


def file_state(path: Path, part: int, *, strategy: str = "multipart", algorithm: str = "CRC64NVME") -> FileState:
    size = path.stat().st_size
    return FileState(upload_id="u", path=str(path), file_name=path.name, file_role="video", size_bytes=size,
                     part_size_bytes=part, total_parts=-(-size // part), upload_strategy=strategy,
                     checksum_algorithm=algorithm)  # fmt: skip


async def test_parts_computed_then_combined_give_the_files_checksum_and_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "movie.mov"
    path.write_bytes(os.urandom(10_000))
    fs = file_state(path, 3000)
    sums = FileChecksums(fs)
    assert sums.whole() is None and sums.expect(2) is None
    await asyncio.gather(sums.part(3), sums.part(1))
    assert sums.expect(1) == ("CRC64NVME", fs.part_checksums[1])
    assert await sums.fill(range(1, 5)) == 2  # parts 2 and 4 were not kept yet
    assert sums.whole() == checksums.of_bytes("CRC64NVME", path.read_bytes())
    assert sorted(fs.part_checksums) == [1, 2, 3, 4]  # kept in the state (saved by the run)
    recorded = RecordedChecksum(algorithm="CRC64NVME", type="FULL_OBJECT", value=sums.whole() or "")
    verified = sums.verify(recorded)
    assert verified is not None and verified.verified
    with pytest.raises(ChecksumMismatch, match="storage recorded the CRC64NVME checksum AAAAAAAAAAA="):
        sums.verify(RecordedChecksum(algorithm="CRC64NVME", type="FULL_OBJECT", value="AAAAAAAAAAA="))
    assert sums.verify(None) is None


async def test_a_single_put_files_checksum_is_its_one_parts_even_for_sha256(tmp_path: Path) -> None:
    path = tmp_path / "en.srt"
    path.write_bytes(b"1\n00:00:01,000 --> 00:00:02,000\nhello\n")
    sums = FileChecksums(file_state(path, 10**6, strategy="single_put", algorithm="SHA256"))
    await sums.part(1)
    assert sums.whole() == checksums.of_bytes("SHA256", path.read_bytes())
    assert sums.expect(1) is None  # SHA-256 is not computed a second time while sending


async def test_a_composite_value_is_compared_without_its_part_count(tmp_path: Path) -> None:
    path = tmp_path / "movie.mov"
    path.write_bytes(os.urandom(5000))
    sums = FileChecksums(file_state(path, 2000, algorithm="SHA256"))
    await sums.fill(range(1, 4))
    whole = sums.whole()
    assert whole is not None and whole.endswith("-3")
    for value in (whole, whole.split("-")[0]):
        verified = sums.verify(RecordedChecksum(algorithm="SHA256", type="COMPOSITE", value=value))
        assert verified is not None and verified.verified


async def test_a_file_shorter_than_its_parts_is_a_local_change(tmp_path: Path) -> None:
    path = tmp_path / "movie.mov"
    path.write_bytes(os.urandom(5000))
    sums = FileChecksums(file_state(path, 2000))
    path.write_bytes(b"short")
    with pytest.raises(LocalFileChanged, match="it was larger when the upload started"):
        await sums.part(2)


def test_an_unsupported_algorithm_says_what_the_store_takes_and_how_to_go_on() -> None:
    assert "--checksum CRC32C, or --checksum none" in str(ChecksumUnsupported("CRC64NVME", ["CRC32C", "CRC32"]))
    assert "verifies no checksums: pass --checksum none" in str(ChecksumUnsupported("CRC64NVME", []))
    older = ChecksumUnsupported("CRC64NVME", None, detail="files[0].checksumAlgorithm unknown field")
    assert "the service does not take checksums (files[0].checksumAlgorithm" in str(older)
    assert "--checksum none" in str(older)


# --- what a part URL signs, and what is shown ----------------------------------------------------


def test_a_url_that_does_not_sign_the_checksum_sent_is_refused() -> None:
    from app.client.errors import ServiceError
    from app.client.integrity import check_signed
    from app.client.models import PartUrl

    def url(headers: dict[str, str]) -> PartUrl:
        return PartUrl(part_number=2, size_bytes=1, byte_start=0, byte_end=1, url="http://s3/x", expires_at="",
                       headers=headers)  # fmt: skip

    check_signed(url({"X-Amz-Checksum-Crc64nvme": "rosUhgp5mIg="}), "CRC64NVME", "rosUhgp5mIg=")  # any case
    for headers in ({}, {"x-amz-checksum-crc64nvme": "AAAAAAAAAAA="}, {"x-amz-checksum-crc32c": "rosUhgp5mIg="}):
        with pytest.raises(ServiceError, match="part 2's URL signs x-amz-checksum-crc64nvme"):
            check_signed(url(headers), "CRC64NVME", "rosUhgp5mIg=")


def test_plain_lines_show_a_completed_files_checksum() -> None:
    import io

    from app.client.events import FileChecksum, FileCompleted
    from app.client.progress import PlainLines

    out = io.StringIO()
    lines = PlainLines(out)
    checked = FileChecksum(algorithm="CRC64NVME", type="FULL_OBJECT", value="rosUhgp5mIg=", verified=True)
    lines(FileCompleted(upload_id="u", file_name="movie.mov", checksum=checked))
    lines(FileCompleted(upload_id="v", file_name="en.srt", already=True, checksum=FileChecksum(
        algorithm="SHA256", type="FULL_OBJECT", value="x", verified=False)))  # fmt: skip
    lines(FileCompleted(upload_id="w", file_name="plain.mov"))
    assert out.getvalue().splitlines() == [
        "movie.mov: completed, CRC64NVME FULL_OBJECT rosUhgp5mIg= (verified)",
        "en.srt: completed (before this run), SHA256 FULL_OBJECT x (recorded, not compared)",
        "plain.mov: completed",
    ]
