"""Pure rules of part-urls selections (SPEC 3.2) and complete part lists (SPEC 3.3)."""

from __future__ import annotations

from typing import Any

import pytest

from app.domain.errors import ApiError
from app.domain.parts import completed_parts, select_parts


def error_paths(fn: Any, *args: Any, **kwargs: Any) -> list[str]:
    with pytest.raises(ApiError) as info:
        fn(*args, **kwargs)
    assert info.value.status == 400
    return [e.path for e in info.value.errors or []]


@pytest.mark.parametrize(
    ("payload", "total", "expected"),
    [
        (None, 3, [1, 2, 3]),
        ({}, 3, [1, 2, 3]),
        ({"partNumbers": [3, 1]}, 3, [3, 1]),
        ({"startPartNumber": 2}, 3, [2, 3]),
        ({"count": 2}, 3, [1, 2]),
        ({"startPartNumber": 3, "count": 10_000}, 3, [3]),
        ({"startPartNumber": 1, "count": 10_000}, 10_000, list(range(1, 10_001))),
        (None, 1, [1]),
    ],
)
def test_selection(payload: Any, total: int, expected: list[int]) -> None:
    assert select_parts(payload, total) == expected


@pytest.mark.parametrize(
    ("payload", "paths"),
    [
        ({"partNumbers": [1], "startPartNumber": 1}, ["partNumbers"]),
        ({"partNumbers": [0, 4, 2, 2, "x", None]}, [f"partNumbers[{i}]" for i in (0, 1, 3, 4, 5)]),
        ({"partNumbers": []}, ["partNumbers"]),
        ({"partNumbers": {"1": 1}}, ["partNumbers"]),
        ({"startPartNumber": 0}, ["startPartNumber"]),
        ({"startPartNumber": 4}, ["startPartNumber"]),
        ({"startPartNumber": 1.0}, ["startPartNumber"]),
        ({"count": 0, "startPartNumber": False}, ["startPartNumber", "count"]),
        ({"count": 10_001}, ["count"]),
        ({"count": 10**30}, ["count"]),
        ({"extra": 1}, ["extra"]),
        ("all", ["$"]),
    ],
)
def test_bad_selection(payload: Any, paths: list[str]) -> None:
    assert error_paths(select_parts, payload, 3) == paths


def etag(n: int) -> str:
    return f'"{n:032x}"'


def parts(*numbers: int) -> dict[str, Any]:
    return {"parts": [{"partNumber": n, "etag": etag(n)} for n in numbers]}


def test_complete_parts_sorted_and_exact() -> None:
    assert completed_parts(parts(2, 1, 3), 3, required=True) == [(1, etag(1)), (2, etag(2)), (3, etag(3))]
    assert completed_parts(None, 1, required=False) == []
    assert completed_parts({}, 1, required=False) == []


@pytest.mark.parametrize(
    ("payload", "paths"),
    [
        (None, ["parts"]),
        (parts(1, 2), ["parts"]),  # part 3 missing
        (parts(1, 2, 3, 3), ["parts[3].partNumber"]),
        (parts(0, 1, 2, 3), ["parts[0].partNumber"]),
        (parts(1, 2, 3, 4), ["parts[3].partNumber"]),
        ({"parts": [{"partNumber": 1}, {"partNumber": 2, "etag": ""}, {"partNumber": 3, "etag": '""'}]},
         ["parts[0].etag", "parts[1].etag", "parts[2].etag"]),
        ({"parts": [{"partNumber": "1", "etag": etag(1)}, {"etag": etag(2)}, 7]},
         ["parts[0].partNumber", "parts[1].partNumber", "parts[2]"]),
        ({"parts": [{"partNumber": 1, "etag": "a\x00"}]}, ["parts[0].etag"]),
        ({"parts": [{"partNumber": 1, "etag": "x" * 1025}]}, ["parts[0].etag"]),
        ({"parts": [{"partNumber": 1, "etag": "\uffff"}]}, ["parts[0].etag"]),
        ({"parts": [{"partNumber": 1, "etag": "ünï"}]}, ["parts[0].etag"]),
        ({"parts": [{"partNumber": 1, "etag": etag(1), "size": 3}]}, ["parts[0].size"]),
        ({"parts": "1-3"}, ["parts"]),
    ],
)  # fmt: skip
def test_bad_complete_parts(payload: Any, paths: list[str]) -> None:
    assert error_paths(completed_parts, payload, 3, required=True) == paths


HEX = "9b2cf535f27731c974343645a3985328"


@pytest.mark.parametrize(
    "good",
    [f'"{HEX}"', HEX, HEX.upper(), f'"{HEX}-3"', f"{HEX}-10000", f'"{"0" * 32}"'],
)
def test_etags_as_storage_answers_them_are_accepted(good: str) -> None:
    assert completed_parts({"parts": [{"partNumber": 1, "etag": good}]}, 1, required=True) == [(1, good)]


@pytest.mark.parametrize(
    "bad",
    [
        "a", '"e1"', HEX[:31], HEX + "0", f'"{HEX}', f'{HEX}"', f'W/"{HEX}"', f'"{HEX}-"', f'"{HEX}-123456"',
        f'"{HEX}"\n', f'"{HEX}" ', f' "{HEX}"', f'"{HEX[:-1]}g"', "x" * 1000, f'""{HEX}""', f'"{HEX}-1-2"',
    ],
)  # fmt: skip
def test_anything_else_is_not_a_part_etag(bad: str) -> None:
    with pytest.raises(ApiError) as caught:
        completed_parts({"parts": [{"partNumber": 1, "etag": bad}]}, 1, required=True)
    assert [e.path for e in caught.value.errors or []] == ["parts[0].etag"]
    assert "32-hex-digit digest" in (caught.value.errors or [])[0].message
