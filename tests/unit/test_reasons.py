"""Failure reasons: stable codes and sentences, never storage or exception text."""

from __future__ import annotations

import pytest

from app.domain import reasons
from app.domain.reasons import SENTENCES, Reason


def test_every_code_has_a_sentence() -> None:
    assert set(SENTENCES) == set(Reason)


@pytest.mark.parametrize("reason", list(Reason))
def test_a_stored_code_reads_back_with_its_sentence(reason: Reason) -> None:
    assert reasons.parse(reasons.stored(reason)) == (reason, SENTENCES[reason])


def test_a_detail_replaces_the_sentence() -> None:
    value = reasons.size_mismatch(5, 10)
    assert value == "size_mismatch:the stored object has 5 bytes but the file was registered with 10"
    assert reasons.parse(value) == (
        Reason.SIZE_MISMATCH,
        "the stored object has 5 bytes but the file was registered with 10",
    )


@pytest.mark.parametrize("value", [None, ""])
def test_no_reason(value: str | None) -> None:
    assert reasons.parse(value) is None


@pytest.mark.parametrize(
    "legacy",
    [
        "InvalidPart: One or more of the specified parts could not be found.",
        "Error 111 connecting to redis-0.internal:6379. Connection refused.",
        "another file of the group failed",
        "unknown_code:with detail",
    ],
)
def test_free_text_from_older_versions_is_never_shown(legacy: str) -> None:
    assert reasons.parse(legacy) == (Reason.UNSPECIFIED, SENTENCES[Reason.UNSPECIFIED])


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("InvalidPart", Reason.MISSING_PARTS),
        ("InvalidPartOrder", Reason.MISSING_PARTS),
        ("EntityTooSmall", Reason.MISSING_PARTS),
        ("InvalidRequest", Reason.MISSING_PARTS),
        ("MalformedXML", Reason.MISSING_PARTS),
        ("NoSuchUpload", Reason.STORAGE_UPLOAD_GONE),
    ],
)
def test_storage_refusals_map_to_stable_codes(code: str, reason: Reason) -> None:
    value = reasons.from_storage_error(code)
    assert value is not None
    parsed = reasons.parse(value)
    assert parsed is not None and parsed[0] is reason and code not in parsed[1]


@pytest.mark.parametrize("code", ["AccessDenied", "InternalError", "SlowDown", ""])
def test_other_storage_errors_are_not_refusals(code: str) -> None:
    assert reasons.from_storage_error(code) is None
