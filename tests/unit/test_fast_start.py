"""The typed fast path of Start Upload Group accepts only what the reference validation accepts, identically.

The reference (`validate_start_request`) walks the untyped JSON and reports every violation; the fast path
(`fast_start_request`) must either hand over (None) or return exactly the reference's request.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.domain.contract import Layout, Perspective, StartUploadRequest
from app.domain.errors import ApiError
from app.domain.rules import fast_start_request, parse_start_request, validate_start_request
from app.domain.validation import decode_json_body
from tests.conftest import SEED_REQUEST

LIMITS = {"max_file_bytes": 5 * 1024**4, "max_files": 8}
ABSENT = object()

GOOD_NAMES = st.sampled_from(["My Video", "  padded  ", "Ünïcødé 🎬 视频", "x" * 255, "a\u200db", "  x  "])
VIDEO_FOR = {"Separate": ["video_left", "video_right"], "AIV": ["video"]}
EXT_FOR = {"video": ".mov", "video_left": ".mp4", "video_right": ".MOV", "audio": ".m4a", "subtitle": ".srt",
           "aime": ".aime", "fcpxmld": ".zip"}  # fmt: skip


@st.composite
def valid_bodies(draw: st.DrawFn, *, lowercase_tags: bool = False) -> dict[str, Any]:
    """A valid body of any layout, with optional extras (audio, subtitles, metadata)."""
    layout = draw(st.sampled_from([x.value for x in Layout]))
    roles = list(VIDEO_FOR.get(layout, ["video"]))
    roles += draw(st.lists(st.sampled_from(["audio", "subtitle"]), max_size=3))
    if layout == "AIV" or draw(st.booleans()):
        roles += ["aime", "fcpxmld"]
    files = []
    for role in roles:
        f: dict[str, Any] = {"fileName": draw(GOOD_NAMES).strip()[:250] + EXT_FOR[role], "fileRole": role,
                             "sizeBytes": draw(st.integers(1, LIMITS["max_file_bytes"]))}  # fmt: skip
        if role in ("audio", "subtitle"):
            tags = ["en", "fr" if lowercase_tags else "FR", "zxx" if role == "audio" else "ja"]
            f["languageTag"] = draw(st.sampled_from(tags))
        files.append(f)
    body: dict[str, Any] = {"videoName": draw(GOOD_NAMES), "layout": layout, "files": files}
    if layout == "AIV":
        body["perspective"] = "180"
    elif draw(st.booleans()):
        body["perspective"] = draw(st.sampled_from([x.value for x in Perspective]))
    for key, value in (("description", st.text(alphabet="abc XYZ🎬视\t\n", max_size=20)), ("folderName", GOOD_NAMES)):
        if draw(st.booleans()):
            body[key] = draw(st.one_of(value, st.none()))
    return body


MUTATIONS = [
    lambda v: ABSENT, lambda v: None, lambda v: 3, lambda v: "", lambda v: " ", lambda v: "\u200b", lambda v: [v],
    lambda v: "x" * 5001, lambda v: "a\u202eb", lambda v: "\ud800", lambda v: "nul\x00", lambda v: 2**64,
    lambda v: -1, lambda v: 0, lambda v: True, lambda v: 1.5, lambda v: "3D", lambda v: "zxx", lambda v: "EN ",
    lambda v: "name.txt", lambda v: "video", lambda v: "video_left", lambda v: "aime", lambda v: {"k": 1},
    lambda v: v.upper() if isinstance(v, str) else v, lambda v: (v + " ") if isinstance(v, str) else v,
]  # fmt: skip


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid body, or one with a few fields mutated (dropped, nulled, retyped, made too long, ...)."""
    body = draw(valid_bodies())
    for _ in range(draw(st.integers(0, 2))):
        files = body.get("files")
        target = draw(st.sampled_from(files)) if isinstance(files, list) and files and draw(st.booleans()) else body
        if not isinstance(target, dict):
            continue
        key = draw(st.sampled_from(sorted({*target, "unknownField", "languageTag", "perspective"})))
        value = draw(st.sampled_from(MUTATIONS))(target.get(key))
        if value is ABSENT:
            target.pop(key, None)
        else:
            target[key] = value
    if draw(st.integers(0, 10)) == 0 and isinstance(body.get("files"), list):
        body["files"] = body["files"] * 3  # duplicate roles; over max_files sometimes
    return body


def reference(body: bytes) -> StartUploadRequest | str:
    try:
        return validate_start_request(decode_json_body(body), **LIMITS)
    except ApiError as exc:
        return exc.spec.code


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(bodies())
def test_fast_path_accepts_only_what_the_reference_accepts(doc: dict[str, Any]) -> None:
    body = json.dumps(doc).encode()  # stdlib: escapes lone surrogates as \\udXXX, as a client could send them
    fast = fast_start_request(body, **LIMITS)
    if fast is not None:
        assert fast == reference(body)


@settings(max_examples=200, deadline=None)
@given(valid_bodies(lowercase_tags=True))
def test_every_valid_body_takes_the_fast_path(doc: dict[str, Any]) -> None:
    # Language tags in the declared (lowercase) form; an uppercase one ('FR') is valid too, but the contract's enum
    # does not decode it, so it takes the walk (test_uppercase_tags_are_valid_through_the_walk).
    body = json.dumps(doc).encode()
    assert fast_start_request(body, **LIMITS) == reference(body)


def test_uppercase_tags_are_valid_through_the_walk() -> None:
    doc = {**SEED_REQUEST, "files": [{**f, "languageTag": "EN"} if "languageTag" in f else f
                                     for f in SEED_REQUEST["files"]]}  # fmt: skip
    body = msgspec.json.encode(doc)
    assert fast_start_request(body, **LIMITS) is None
    parsed = parse_start_request(body, **LIMITS)
    assert parsed == reference(body) == parse_start_request(msgspec.json.encode(SEED_REQUEST), **LIMITS)


def test_valid_bodies_take_the_fast_path() -> None:
    for doc in (SEED_REQUEST, {"videoName": " v ", "layout": "AIV", "perspective": "180", "description": "a\nb",
                               "files": [{"fileName": "x.AIVU", "fileRole": "video", "sizeBytes": 3}]}):  # fmt: skip
        body = msgspec.json.encode(doc)
        fast = fast_start_request(body, **LIMITS)
        assert fast is not None and fast == reference(body) == parse_start_request(body, **LIMITS)


def test_malformed_bodies_are_left_to_the_reference() -> None:
    dup = msgspec.json.encode(SEED_REQUEST)[:-1] + b', "videoName": 3}'
    for raw in (b"", b"[", dup, b'"\xff"', b"[" * 10_000, b"{}", b"null", rb'{"videoName": "\ud800"}'):
        assert fast_start_request(raw, **LIMITS) is None
        assert isinstance(reference(raw), str)  # the reference answers with its 400
