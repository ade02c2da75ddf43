"""The checksum rules (SPEC 3.8, app/domain/checksums.py): values, part-urls and complete bodies, the conflict rule."""

from __future__ import annotations

import base64
import copy
import zlib
from typing import Any

import msgspec
import pytest

from app.domain import errors, reasons
from app.domain.checksums import (
    Checksum,
    completion_checksums,
    composite_of,
    part_urls_request,
    resolve_algorithm,
    value_problem,
)
from app.domain.contract import DIGEST_BYTES, ChecksumAlgorithm, ChecksumType, UploadStrategy, checksum_type
from app.domain.rules import fast_start_request, validate_start_request
from tests.conftest import SEED_REQUEST

ALL = tuple(a.value for a in ChecksumAlgorithm)
CRC32 = ChecksumAlgorithm.CRC32
SHA256 = ChecksumAlgorithm.SHA256


def value(algorithm: ChecksumAlgorithm, seed: int = 1) -> str:
    return base64.b64encode(bytes([seed]) * DIGEST_BYTES[algorithm]).decode()


def refusal(call: Any, *args: Any, **kwargs: Any) -> errors.ApiError:
    with pytest.raises(errors.ApiError) as info:
        call(*args, **kwargs)
    return info.value


def parts(payload: Any, total: int = 4, *, fixed: ChecksumAlgorithm | None = CRC32, opened: bool = False,
          supported: tuple[str, ...] = ALL) -> Any:  # fmt: skip
    return part_urls_request(payload, total, fixed=fixed, opened_without=opened, supported=supported)


@pytest.mark.parametrize("algorithm", list(ChecksumAlgorithm))
def test_a_value_is_the_base64_of_exactly_the_digest_size(algorithm: ChecksumAlgorithm) -> None:
    good = value(algorithm)
    assert value_problem(good, algorithm) is None
    size = DIGEST_BYTES[algorithm]
    for wrong in (
        base64.b64encode(bytes(size - 1)).decode(),
        base64.b64encode(bytes(size + 1)).decode(),
        good.rstrip("="),  # unpadded
        "!" + good[1:],  # not base64
        good[:-2] + "\n=" if good.endswith("=") else good[:-1] + "\n",
        "",
    ):
        problem = value_problem(wrong, algorithm)
        assert problem is not None and f"{size}-byte {algorithm.value}" in problem, wrong
    assert value_problem(12345, algorithm) == "must be a string, not a number"


def test_a_non_canonical_base64_value_is_refused() -> None:
    # 'AAAAAB==' decodes to the same 4 bytes as 'AAAAAA==' but is not how S3 writes them.
    assert value_problem("AAAAAA==", CRC32) is None
    assert value_problem("AAAAAB==", CRC32) is not None


def test_types() -> None:
    assert checksum_type(ChecksumAlgorithm.CRC64NVME, UploadStrategy.MULTIPART) is ChecksumType.FULL_OBJECT
    assert checksum_type(SHA256, UploadStrategy.MULTIPART) is ChecksumType.COMPOSITE
    assert checksum_type(ChecksumAlgorithm.SHA1, UploadStrategy.MULTIPART) is ChecksumType.COMPOSITE
    assert checksum_type(SHA256, UploadStrategy.SINGLE_PUT) is ChecksumType.FULL_OBJECT  # one object, one digest


def test_checksums_alone_select_exactly_those_parts() -> None:
    out = parts({"checksums": {"3": value(CRC32, 3), "1": value(CRC32, 1)}})
    assert out.numbers == [1, 3] and out.checksums == {1: value(CRC32, 1), 3: value(CRC32, 3)}
    assert out.algorithm is CRC32


@pytest.mark.parametrize(
    "selection",
    [{"partNumbers": [2, 4]}, {"startPartNumber": 2, "count": 3}],
)
def test_checksums_with_a_selection_must_name_the_same_parts(selection: dict[str, Any]) -> None:
    wanted = [2, 4] if "partNumbers" in selection else [2, 3, 4]
    ok = parts({**selection, "checksums": {str(n): value(CRC32, n) for n in wanted}})
    assert ok.numbers == wanted
    extra = refusal(parts, {**selection, "checksums": {str(n): value(CRC32, n) for n in [*wanted, 1]}})
    assert extra.spec is errors.INVALID_REQUEST
    assert [(e.path, e.message) for e in extra.errors or []] == [("checksums.1", "part 1 is not among the requested "
                                                                  "parts")]  # fmt: skip
    missing = refusal(parts, {**selection, "checksums": {str(wanted[0]): value(CRC32)}})
    assert missing.spec is errors.CHECKSUM_REQUIRED and missing.extra["partNumbers"] == wanted[1:]


def test_every_requested_part_needs_its_checksum() -> None:
    for payload in (None, {}, {"partNumbers": [1, 2]}):
        err = refusal(parts, payload)
        assert err.spec is errors.CHECKSUM_REQUIRED and err.status == 400
        assert err.extra["partNumbers"] == ([1, 2] if payload else [1, 2, 3, 4])
        assert err.extra["checksumAlgorithm"] == "CRC32"
    assert "1, 2, 3, 4" in refusal(parts, None).detail


def test_checksums_without_an_algorithm_are_refused() -> None:
    err = refusal(parts, {"checksums": {"1": value(CRC32)}}, fixed=None)
    assert err.spec is errors.CHECKSUM_ALGORITHM_REQUIRED and err.status == 400
    assert parts({"partNumbers": [1]}, fixed=None).algorithm is None  # no checksums, no algorithm: as before


@pytest.mark.parametrize(
    ("checksums", "paths"),
    [
        ({"1": "AAAA"}, ["checksums.1"]),  # 3 bytes, not 4
        ({"1": value(SHA256)}, ["checksums.1"]),  # a SHA-256 for a CRC32 file
        ({"1": 7}, ["checksums.1"]),
        ({"0": value(CRC32)}, ["checksums.0"]),
        ({"01": value(CRC32)}, ["checksums.01"]),
        ({"5": value(CRC32)}, ["checksums.5"]),  # past totalParts
        ({"x": value(CRC32), "2": "bad"}, ["checksums.x", "checksums.2"]),
    ],
)
def test_values_and_keys_of_the_wrong_form_are_located(checksums: dict[str, Any], paths: list[str]) -> None:
    err = refusal(parts, {"checksums": checksums})
    assert err.spec is errors.INVALID_REQUEST
    assert [e.path for e in err.errors or []] == paths


@pytest.mark.parametrize("bad", [{}, [], "AAAAAA==", 3])
def test_checksums_must_be_a_non_empty_object(bad: Any) -> None:
    err = refusal(parts, {"partNumbers": [1], "checksums": bad})
    assert err.spec is errors.INVALID_REQUEST and [e.path for e in err.errors or []] == ["checksums"]


@pytest.mark.parametrize("name", ["MD5", "crc32", "", 5, "CRC32 "])
def test_an_unknown_algorithm_is_unsupported(name: Any) -> None:
    err = refusal(parts, {"checksumAlgorithm": name, "checksums": {"1": value(CRC32)}}, fixed=None)
    assert err.spec is errors.CHECKSUM_UNSUPPORTED and err.status == 400
    assert err.extra["supported"] == list(ALL)


def test_an_algorithm_the_store_does_not_verify_is_unsupported() -> None:
    body = {"checksumAlgorithm": "SHA1", "checksums": {"1": value(ChecksumAlgorithm.SHA1)}}
    err = refusal(parts, body, fixed=None, supported=("CRC64NVME", "CRC32C"))
    assert err.spec is errors.CHECKSUM_UNSUPPORTED and err.extra["supported"] == ["CRC64NVME", "CRC32C"]
    none = refusal(parts, body, fixed=None, supported=())
    assert none.extra["supported"] == [] and "takes no checksums" in none.detail


def test_the_algorithm_conflict_rule() -> None:
    assert resolve_algorithm(CRC32, None, opened_without=False) is CRC32
    assert resolve_algorithm(CRC32, CRC32, opened_without=True) is CRC32  # naming the file's own: fine
    assert resolve_algorithm(None, SHA256, opened_without=False) is SHA256  # fixed now
    assert resolve_algorithm(None, None, opened_without=True) is None
    other = refusal(resolve_algorithm, CRC32, SHA256, opened_without=False)
    assert other.spec is errors.CHECKSUM_ALGORITHM_CONFLICT and other.status == 409
    assert other.extra == {"checksumAlgorithm": "CRC32"}
    late = refusal(resolve_algorithm, None, SHA256, opened_without=True)
    assert late.spec is errors.CHECKSUM_ALGORITHM_CONFLICT and late.extra == {"checksumAlgorithm": None}
    body = {"checksumAlgorithm": "SHA256", "checksums": {"1": value(SHA256)}}
    assert refusal(parts, body, fixed=CRC32).spec is errors.CHECKSUM_ALGORITHM_CONFLICT
    assert refusal(parts, body, fixed=None, opened=True).spec is errors.CHECKSUM_ALGORITHM_CONFLICT
    assert parts(body, fixed=None).algorithm is SHA256


def test_completion_checksums() -> None:
    body = {"parts": [{"partNumber": 2, "etag": "e", "checksum": value(CRC32, 2)}, {"partNumber": 1, "etag": "e"}],
            "checksum": value(CRC32, 9)}  # fmt: skip
    out = completion_checksums(body, CRC32, UploadStrategy.MULTIPART, 2)
    assert out.parts == {2: value(CRC32, 2)} and out.whole == value(CRC32, 9)
    assert completion_checksums(None, None, UploadStrategy.SINGLE_PUT, 1).whole is None
    none = refusal(completion_checksums, body, None, UploadStrategy.MULTIPART, 2)
    assert none.spec is errors.CHECKSUM_ALGORITHM_REQUIRED
    wrong = {"parts": [{"partNumber": 1, "etag": "e", "checksum": "AAAA"}], "checksum": value(SHA256)}
    err = refusal(completion_checksums, wrong, CRC32, UploadStrategy.MULTIPART, 1)
    assert [e.path for e in err.errors or []] == ["parts[0].checksum", "checksum"]


def test_a_composite_whole_checksum_carries_the_part_count() -> None:
    digest = value(SHA256)
    for whole in (f"{digest}-3", digest):
        assert completion_checksums({"checksum": whole}, SHA256, UploadStrategy.MULTIPART, 3).whole == whole
    err = refusal(completion_checksums, {"checksum": f"{digest}-2"}, SHA256, UploadStrategy.MULTIPART, 3)
    assert [(e.path, e.message[:12]) for e in err.errors or []] == [("checksum", "must end in ")]
    # A single PUT's SHA-256 is the object's own: no part count.
    single = refusal(completion_checksums, {"checksum": f"{digest}-1"}, SHA256, UploadStrategy.SINGLE_PUT, 1)
    assert [e.path for e in single.errors or []] == ["checksum"]
    parts_sums = [value(SHA256, 1), value(SHA256, 2)]
    import hashlib

    expected = hashlib.sha256(bytes([1]) * 32 + bytes([2]) * 32).digest()
    assert composite_of(SHA256, parts_sums) == base64.b64encode(expected).decode() + "-2"


def test_a_recorded_checksum_fits_a_compact_hash_value() -> None:
    longest = Checksum("SHA256", "COMPOSITE", value(SHA256) + "-10000")
    assert len(longest.encode()) <= 64  # Redis's hash-max-listpack-value
    assert Checksum.decode(longest.encode()) == longest
    assert Checksum.decode(Checksum("CRC64NVME", "FULL_OBJECT", "j6cFt2eoaMM=").encode()) == Checksum(
        "CRC64NVME", "FULL_OBJECT", "j6cFt2eoaMM="
    )
    assert msgspec.to_builtins(longest) == {"algorithm": "SHA256", "type": "COMPOSITE", "value": longest.value}


def test_mismatch_figures_come_back_from_the_stored_reason() -> None:
    stored = reasons.checksum_mismatch(3, "AAAAAA==", "j6cFt2eoaMM=")
    code, sentence = reasons.parse(stored) or (None, "")
    assert code is reasons.Reason.CHECKSUM_MISMATCH
    assert reasons.mismatch_figures(sentence) == {"partNumber": 3, "expected": "AAAAAA==", "received": "j6cFt2eoaMM="}
    whole = reasons.parse(reasons.checksum_mismatch(None, "AAAAAA==", None))
    assert whole is not None and reasons.mismatch_figures(whole[1]) == {"expected": "AAAAAA=="}


# --- at create -------------------------------------------------------------------------------------------------

LIMITS = {"max_file_bytes": 5 * 1024**4, "max_files": 64}


def seed_with(**algorithms: Any) -> dict[str, Any]:
    body = copy.deepcopy(SEED_REQUEST)
    for i, name in algorithms.items():
        body["files"][int(i[1:])]["checksumAlgorithm"] = name
    return body


def test_a_create_names_algorithms_per_file() -> None:
    body = seed_with(f0="CRC64NVME", f3="SHA256")
    walked = validate_start_request(body, **LIMITS)
    fast = fast_start_request(msgspec.json.encode(body), **LIMITS)
    assert fast == walked
    assert [f.checksum_algorithm for f in walked.files] == [ChecksumAlgorithm.CRC64NVME, None, None, SHA256]


def test_an_unsupported_algorithm_alone_is_checksum_unsupported() -> None:
    body = seed_with(f0="MD5", f1="SHA1")
    assert fast_start_request(msgspec.json.encode(body), **LIMITS, checksum_algorithms=("CRC32",)) is None
    err = refusal(validate_start_request, body, **LIMITS, checksum_algorithms=("CRC32",))
    assert err.spec is errors.CHECKSUM_UNSUPPORTED and err.extra["supported"] == ["CRC32"]
    assert [e.path for e in err.errors or []] == ["files[0].checksumAlgorithm", "files[1].checksumAlgorithm"]


def test_an_unsupported_algorithm_with_other_problems_is_one_more_violation() -> None:
    body = seed_with(f0="MD5")
    body["files"][3]["languageTag"] = "klingon"
    err = refusal(validate_start_request, body, **LIMITS)
    assert err.spec is errors.INVALID_REQUEST
    assert sorted(e.path for e in err.errors or []) == ["files[0].checksumAlgorithm", "files[3].languageTag"]


def test_crc32_test_vector() -> None:
    # S3's CRC32 header of b"hello" (big-endian zlib.crc32), as the values above are formed.
    assert base64.b64encode(zlib.crc32(b"hello").to_bytes(4, "big")).decode() == "NhCmhg=="
    assert value_problem("NhCmhg==", CRC32) is None
