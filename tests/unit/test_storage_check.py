"""The pure half of `spatialgen-admin storage check`: the probe's checksum constants, how the bucket's CORS and
lifecycle rules are judged and merged, the clock, and the sentences storage failures become."""

from __future__ import annotations

import base64
import hashlib
import zlib
from typing import Any

import pytest
from botocore.exceptions import ClientError

from app.admin.cli import run
from app.admin.storage_check import _clock
from app.settings import CHECKSUM_ALGORITHMS, Settings
from app.storage import bucket, probes

SETTINGS = Settings()
GOOD_RULE = {"AllowedOrigins": ["https://*.example.com"], "AllowedMethods": ["GET", "PUT"],
             "AllowedHeaders": ["Content-Type", "If-None-Match", "x-amz-checksum-*"], "ExposeHeaders": ["ETag"],
             "MaxAgeSeconds": 600}  # fmt: skip


def _crc_reflected(data: bytes, poly: int, width: int) -> int:
    """A bitwise reflected CRC (init and final XOR all ones): CRC32C and CRC64NVME by their polynomials."""
    mask = (1 << width) - 1
    crc = mask
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (poly if crc & 1 else 0)
    return crc ^ mask


def _checksum(algorithm: str, data: bytes) -> str:
    raw = {
        "CRC64NVME": lambda: _crc_reflected(data, 0x9A6C9329AC4BC9B5, 64).to_bytes(8, "big"),
        "CRC32C": lambda: _crc_reflected(data, 0x82F63B78, 32).to_bytes(4, "big"),
        "CRC32": lambda: zlib.crc32(data).to_bytes(4, "big"),
        "SHA256": lambda: hashlib.sha256(data).digest(),
        "SHA1": lambda: hashlib.sha1(data).digest(),
    }[algorithm]()
    return base64.b64encode(raw).decode()


def test_crc_reference_matches_known_check_values() -> None:
    # The CRC catalogue's check values for b"123456789".
    assert _crc_reflected(b"123456789", 0x82F63B78, 32) == 0xE3069283
    assert _crc_reflected(b"123456789", 0x9A6C9329AC4BC9B5, 64) == 0xAE8B14860A799888


@pytest.mark.parametrize("algorithm", CHECKSUM_ALGORITHMS)
def test_probe_checksums_are_the_probe_bodys_and_the_wrong_ones_are_not(algorithm: str) -> None:
    assert probes.PROBE_CHECKSUMS[algorithm] == _checksum(algorithm, probes.PROBE_BODY)
    wrong = probes.WRONG_CHECKSUMS[algorithm]
    assert wrong != probes.PROBE_CHECKSUMS[algorithm]
    assert len(base64.b64decode(wrong)) == len(base64.b64decode(probes.PROBE_CHECKSUMS[algorithm]))


def test_cors_rules_are_judged_as_s3_matches_them() -> None:
    assert bucket.judge_cors(None, SETTINGS, []).status == "warn"
    ok = bucket.judge_cors([GOOD_RULE], SETTINGS, ["https://app.example.com"])
    assert ok.status == "ok" and "preflights cached 600 s" in ok.reason
    other = bucket.judge_cors([GOOD_RULE], SETTINGS, ["https://example.org"])
    assert other.status == "fail" and "no rule allows PUT from https://example.org" in other.reason
    # The first rule matching origin and method decides (S3's order), even when a later one would do.
    narrow = {**GOOD_RULE, "AllowedHeaders": ["content-type"], "ExposeHeaders": []}
    judged = bucket.judge_cors([narrow, GOOD_RULE], SETTINGS, [])
    assert judged.status == "fail"
    assert "if-none-match, x-amz-checksum-crc64nvme" in judged.reason and "does not expose ETag" in judged.reason
    # Checksum headers are asked for only when checksums are enabled.
    plain = {**GOOD_RULE, "AllowedHeaders": ["content-type", "if-none-match"]}
    assert bucket.judge_cors([plain], SETTINGS, []).status == "fail"
    assert bucket.judge_cors([plain], SETTINGS.override(s3_checksum_algorithms=""), []).status == "ok"
    no_age = {k: v for k, v in GOOD_RULE.items() if k != "MaxAgeSeconds"}
    assert bucket.judge_cors([no_age], SETTINGS, []).status == "warn"
    assert bucket.judge_cors([{**GOOD_RULE, "AllowedHeaders": ["*"]}], SETTINGS, []).status == "ok"


def test_the_wanted_cors_rule_passes_its_own_judgement() -> None:
    for settings in (SETTINGS, SETTINGS.override(s3_checksum_algorithms="")):
        rule = bucket.wanted_cors_rule(settings, ["https://a.example", "https://b.example"])
        assert bucket.judge_cors([rule], settings, ["https://b.example"]).status == "ok"
        assert "PUT" in rule["AllowedMethods"] and rule["ExposeHeaders"][0] == "ETag"


def _abort(days: int, prefix: str | None = "uploads/", **extra: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {"ID": f"r{days}", "Status": "Enabled",
                            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": days}, **extra}  # fmt: skip
    if prefix is not None:
        rule["Filter"] = {"Prefix": prefix}
    return rule


def test_lifecycle_rules_must_cover_the_prefix_and_outlive_a_group() -> None:
    judge = bucket.judge_lifecycle
    assert judge(None, SETTINGS).status == "warn"
    assert judge([_abort(7)], SETTINGS).status == "ok"
    assert judge([_abort(7, "")], SETTINGS).status == "ok"  # the whole bucket
    assert judge([{**_abort(7, None), "Prefix": "uploads"}], SETTINGS).status == "ok"  # the legacy field
    assert judge([_abort(7, "other/")], SETTINGS).status == "warn"
    assert judge([_abort(7, "uploads/acme/")], SETTINGS).status == "warn"  # only part of the prefix
    assert judge([{**_abort(7), "Status": "Disabled"}], SETTINGS).status == "warn"
    tagged = {**_abort(7, None), "Filter": {"And": {"Prefix": "uploads/", "Tags": [{"Key": "a", "Value": "b"}]}}}
    assert judge([tagged], SETTINGS).status == "warn"
    assert judge([_abort(5)], SETTINGS).status == "fail"  # 5 days is not beyond a 5-day group
    assert judge([_abort(7), _abort(3, "")], SETTINGS).status == "fail"  # the shorter one aborts first
    assert judge([_abort(7)], SETTINGS.override(session_ttl_seconds=7 * 86400)).status == "fail"


def test_the_lifecycle_merge_adds_the_rule_and_keeps_every_other() -> None:
    other = {"ID": "expire-logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 30}}
    wanted = bucket.wanted_lifecycle_rule(SETTINGS)
    assert wanted["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    assert bucket.merged_lifecycle(None, SETTINGS) == [wanted]
    assert bucket.merged_lifecycle([other], SETTINGS) == [other, wanted]
    assert bucket.merged_lifecycle([other, _abort(10)], SETTINGS) is None  # enough already: nothing to change
    own_too_short = {**_abort(2), "ID": bucket.LIFECYCLE_RULE_ID}
    assert bucket.merged_lifecycle([own_too_short, other], SETTINGS) == [other, wanted]
    assert bucket.judge_lifecycle([wanted], SETTINGS).status == "ok"


def test_the_cors_merge_puts_the_service_rule_first_and_keeps_the_rest() -> None:
    other = {"ID": "reads", "AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}
    wanted = bucket.wanted_cors_rule(SETTINGS, ["https://app.example"])
    assert bucket.merged_cors([other, {**wanted, "MaxAgeSeconds": 1}], wanted) == [wanted, other]
    assert bucket.cors_origins([GOOD_RULE, other]) == ["https://*.example.com"]
    assert bucket.cors_origins([GOOD_RULE, wanted]) == ["https://app.example"]  # its own rule's first


def test_clock_skew_thresholds() -> None:
    assert _clock(None).status == "warn"
    assert _clock(-4.9).status == "ok"
    assert _clock(30).status == "warn"
    assert _clock(-901).status == "fail"
    reach = probes.Reach("Sun, 06 Dec 2026 08:00:00 GMT", 1796544000.0 - 10, 1796544000.0 - 9)
    assert probes.clock_skew(reach) == pytest.approx(10.0)
    assert probes.clock_skew(probes.Reach("not a date", 0, 0)) is None


@pytest.mark.parametrize(
    ("code", "status", "says"),
    [
        ("InvalidAccessKeyId", 403, "check SPATIALGEN_S3_ACCESS_KEY_ID"),
        ("SignatureDoesNotMatch", 403, "check SPATIALGEN_S3_SECRET_ACCESS_KEY"),
        ("404", 404, "create it, or check SPATIALGEN_S3_BUCKET"),
        ("RequestTimeTooSkewed", 403, "fix its time (NTP)"),
        ("SlowDown", 503, "storage answered 503 SlowDown"),
    ],
)
def test_storage_failures_become_one_sentence(code: str, status: int, says: str) -> None:
    exc = ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "HeadBucket")
    text = probes.describe(exc, SETTINGS.storage)
    assert text.startswith("bucket 'spatialgen-uploads' at http://127.0.0.1:9000: ") and says in text
    assert "\n" not in text
    endpoint = probes.describe(ValueError("Invalid endpoint: nope"), SETTINGS.storage)
    assert endpoint.startswith("invalid SPATIALGEN_S3_ENDPOINT_URL")


@pytest.mark.parametrize("argv", [["storage", "check", "--nope"], ["storage", "apply", "--origins"]])
async def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        await run(argv)
    assert stopped.value.code == 2 and "usage: spatialgen-admin" in capsys.readouterr().err
