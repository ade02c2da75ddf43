"""Pure rules of SPEC 3.1: one passing and one failing case for every rule, part sizing, byte ranges."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from app.domain.contract import (
    EXTENSIONS,
    INSTRUMENTAL,
    MIB,
    SPOKEN_LANGUAGES,
    FileRole,
    LanguageTag,
    Layout,
    Perspective,
    UploadStrategy,
)
from app.domain.errors import ApiError
from app.domain.parts import part_range, plan_parts
from app.domain.rules import file_extension, validate_start_request
from tests.conftest import SEED_REQUEST

P = 104_857_600
TIB = 1024**4
LIMITS = {"max_file_bytes": 5 * TIB, "max_files": 64}


def vf(name: str, role: str, size: int = 10, lang: str | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"fileName": name, "fileRole": role, "sizeBytes": size}
    if lang is not None:
        d["languageTag"] = lang
    return d


def body(layout: str = "2D", files: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"videoName": "v", "layout": layout, "files": files or [vf("a.mp4", "video")], **extra}


def violations(payload: Any, **limits: int) -> list[tuple[str, str]]:
    try:
        validate_start_request(payload, **{**LIMITS, **limits})
    except ApiError as exc:
        assert exc.status == 400 and exc.spec.code == "invalid_request"
        return [(e.path, e.message) for e in exc.errors or []]
    return []


def paths(payload: Any, **limits: int) -> list[str]:
    return [p for p, _ in violations(payload, **limits)]


# --- part sizing -----------------------------------------------------------------------------


def plan(size: int) -> tuple[Any, ...]:
    return msgspec.structs.astuple(plan_parts(size, P))


def test_seed_example_part_sizes() -> None:
    assert plan(1_287_340_032) == (UploadStrategy.MULTIPART, P, 13)
    assert plan(1_287_341_024) == (UploadStrategy.MULTIPART, P, 13)
    assert plan(187_340_032) == (UploadStrategy.MULTIPART, P, 2)
    assert plan(2401) == (UploadStrategy.SINGLE_PUT, 2401, 1)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (1, (UploadStrategy.SINGLE_PUT, 1, 1)),
        (P, (UploadStrategy.SINGLE_PUT, P, 1)),
        (P + 1, (UploadStrategy.MULTIPART, P, 2)),
        (10_000 * P, (UploadStrategy.MULTIPART, P, 10_000)),
        (10_000 * P + 1, (UploadStrategy.MULTIPART, 101 * MIB, 9_901)),
    ],
)
def test_part_sizing_boundaries(size: int, expected: tuple[UploadStrategy, int, int]) -> None:
    assert plan(size) == expected


def test_two_tib_file_grows_parts_to_stay_within_10000() -> None:
    plan = plan_parts(2 * TIB, P)
    assert plan.strategy is UploadStrategy.MULTIPART
    assert plan.part_size == 210 * MIB  # ceil(2 TiB / 10,000) = 209.7 MiB, rounded up to whole MiB
    assert plan.total_parts == 9_987
    assert plan.part_size * (plan.total_parts - 1) < 2 * TIB <= plan.part_size * plan.total_parts


@pytest.mark.parametrize("size", [P * 10_000 + 7, 3 * TIB + 12345, 5 * TIB, 777 * 1024**3 + 1])
def test_part_count_never_exceeds_s3_limits(size: int) -> None:
    plan = plan_parts(size, P)
    assert plan.total_parts <= 10_000
    assert plan.part_size % MIB == 0 and plan.part_size >= 5 * MIB
    assert plan.part_size * (plan.total_parts - 1) < size <= plan.part_size * plan.total_parts


def test_byte_ranges_cover_the_file_exactly() -> None:
    size = 187_340_032
    plan = plan_parts(size, P)
    ranges = [part_range(n, plan.part_size, size) for n in range(1, plan.total_parts + 1)]
    assert ranges == [(0, P), (P, size)]
    assert part_range(1, 2401, 2401) == (0, 2401)


# --- storage keys ----------------------------------------------------------------------------


def test_file_extension() -> None:
    assert file_extension("A.B.MoV") == ".mov"
    assert file_extension(".mov") == ""  # a dotfile has no extension
    assert file_extension("noext") == ""


# --- the seed and every layout --------------------------------------------------------------


def test_seed_request_is_valid_and_normalized() -> None:
    req = validate_start_request(copy.deepcopy(SEED_REQUEST), **LIMITS)
    assert req.layout is Layout.SEPARATE and req.perspective is Perspective.REGULAR
    assert [f.file_role for f in req.files] == [
        FileRole.VIDEO_LEFT,
        FileRole.VIDEO_RIGHT,
        FileRole.AUDIO,
        FileRole.SUBTITLE,
    ]
    assert req.folder_name == "Launch Assets"


@pytest.mark.parametrize("layout", ["2D", "MVHEVC", "SBS", "TB"])
def test_single_video_layouts(layout: str) -> None:
    assert violations(body(layout)) == []
    assert paths(body(layout, [vf("a.mp4", "video"), vf("b.mp4", "video")])) == ["files[1].fileRole"]
    assert paths(body(layout, [vf("a.srt", "subtitle", lang="en")])) == ["files"]
    assert paths(body(layout, [vf("a.mp4", "video"), vf("l.mp4", "video_left")])) == ["files[1].fileRole"]
    assert paths(body(layout, [vf("a.mp4", "video"), vf("r.mp4", "video_right")])) == ["files[1].fileRole"]


def test_separate_layout() -> None:
    ok = [vf("l.mov", "video_left"), vf("r.mov", "video_right")]
    assert violations(body("Separate", ok)) == []
    assert paths(body("Separate", ok[:1])) == ["files"]
    assert paths(body("Separate", [*ok, vf("l2.mov", "video_left")])) == ["files[2].fileRole"]
    assert paths(body("Separate", [*ok, vf("v.mov", "video")])) == ["files[2].fileRole"]


def test_aiv_layout() -> None:
    aivu = [vf("a.aivu", "video")]
    meta = [vf("a.mov", "video"), vf("m.aime", "aime"), vf("f.zip", "fcpxmld")]
    assert violations(body("AIV", aivu, perspective="180")) == []
    assert violations(body("AIV", meta, perspective="180")) == []
    assert paths(body("AIV", aivu)) == ["perspective"]
    assert paths(body("AIV", aivu, perspective="360")) == ["perspective"]
    assert paths(body("AIV", [vf("a.mov", "video")], perspective="180")) == ["files"]
    assert paths(body("AIV", meta[:2], perspective="180")) == ["files"]


def test_metadata_file_counts() -> None:
    files = [vf("a.mp4", "video"), vf("m.aime", "aime"), vf("f.zip", "fcpxmld")]
    assert violations(body("2D", files)) == []
    assert paths(body("2D", [*files, vf("n.aime", "aime")])) == ["files[3].fileRole"]
    assert paths(body("2D", [*files, vf("g.zip", "fcpxmld")])) == ["files[3].fileRole"]


@pytest.mark.parametrize("role", list(FileRole))
def test_extensions_per_role(role: FileRole) -> None:
    lang = "en" if role in (FileRole.AUDIO, FileRole.SUBTITLE) else None
    for ext in EXTENSIONS[role]:
        f = vf("Name" + ext.upper(), role.value, lang=lang)
        assert "files[1].fileName" not in paths(body("2D", [vf("v.mp4", "video"), f])), ext
    bad = vf("name.txt", role.value, lang=lang)
    assert "files[1].fileName" in paths(body("2D", [vf("v.mp4", "video"), bad]))


def test_video_left_rejects_aivu() -> None:
    files = [vf("l.aivu", "video_left"), vf("r.mov", "video_right")]
    assert paths(body("Separate", files)) == ["files[0].fileName"]


# --- language tags ----------------------------------------------------------------------------


@pytest.mark.parametrize("tag", sorted(SPOKEN_LANGUAGES))
def test_every_spoken_language_for_audio_and_subtitle(tag: str) -> None:
    files = [vf("v.mp4", "video"), vf("a.m4a", "audio", lang=tag.upper()), vf("s.srt", "subtitle", lang=tag)]
    assert violations(body("2D", files)) == []


def test_language_tags_lowercased_and_zxx_only_for_audio() -> None:
    req = validate_start_request(body("2D", [vf("v.mp4", "video"), vf("a.m4a", "audio", lang="ZXX")]), **LIMITS)
    assert req.files[1].language_tag == "zxx"
    assert paths(body("2D", [vf("v.mp4", "video"), vf("s.srt", "subtitle", lang="zxx")])) == ["files[1].languageTag"]


@pytest.mark.parametrize("tag", ["en-US", "eng", "", " en", "xx", "zh-Hans", "ÉN"])
def test_unsupported_language_tags(tag: str) -> None:
    assert paths(body("2D", [vf("v.mp4", "video"), vf("a.m4a", "audio", lang=tag)])) == ["files[1].languageTag"]


def test_language_tag_required_for_audio_subtitle_and_absent_otherwise() -> None:
    assert paths(body("2D", [vf("v.mp4", "video"), vf("a.m4a", "audio")])) == ["files[1].languageTag"]
    assert paths(body("2D", [vf("v.mp4", "video"), vf("s.srt", "subtitle")])) == ["files[1].languageTag"]
    assert paths(body("2D", [vf("v.mp4", "video", lang="en")])) == ["files[0].languageTag"]
    assert paths(body("2D", [vf("v.mp4", "video"), vf("a.m4a", "audio", lang=5)])) == ["files[1].languageTag"]  # type: ignore[arg-type]


# --- field types, sizes and strings -----------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "ok"),
    [
        (1, True),
        (5 * TIB, True),
        (0, False),
        (-1, False),
        (5 * TIB + 1, False),
        (10**40, False),
        (1.0, False),
        (True, False),
        ("10", False),
        (None, False),
    ],
)
def test_size_bytes(size: Any, ok: bool) -> None:
    f = {"fileName": "v.mp4", "fileRole": "video", "sizeBytes": size}
    if size is None:
        del f["sizeBytes"]
    assert paths(body("2D", [f])) == ([] if ok else ["files[0].sizeBytes"])


def test_max_file_bytes_is_configurable() -> None:
    assert paths(body("2D", [vf("v.mp4", "video", 101)]), max_file_bytes=100) == ["files[0].sizeBytes"]


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("My Video", True),
        ("  padded  ", True),
        ("x" * 255, True),
        ("日本語のビデオ 🎬", True),
        ("", False),
        ("   ", False),
        ("x" * 256, False),
        ("bad\x00name", False),
        ("tab\tname", False),
        ("\ud800", False),
        (7, False),
    ],
)
def test_video_name(name: Any, ok: bool) -> None:
    assert paths(body(videoName=name)) == ([] if ok else ["videoName"])


def test_video_name_is_trimmed() -> None:
    assert validate_start_request(body(videoName="  hi  "), **LIMITS).video_name == "hi"


@pytest.mark.parametrize(
    ("value", "ok"), [("a\nb\tc", True), ("", True), ("x" * 5000, True), ("x" * 5001, False), ("a\x07", False)]
)
def test_description(value: str, ok: bool) -> None:
    assert paths(body(description=value)) == ([] if ok else ["description"])


@pytest.mark.parametrize(("value", "ok"), [("Launch", True), ("x" * 255, True), ("", False), ("x" * 256, False)])
def test_folder_name(value: str, ok: bool) -> None:
    assert paths(body(folderName=value)) == ([] if ok else ["folderName"])


def test_null_optional_fields_mean_absent() -> None:
    assert violations(body(description=None, perspective=None, folderName=None)) == []


@pytest.mark.parametrize(
    ("name", "ok"), [("ok.mp4", True), ("x" * 251 + ".mp4", True), ("x" * 252 + ".mp4", False), ("a\x1fb.mp4", False)]
)
def test_file_name(name: str, ok: bool) -> None:
    assert ("files[0].fileName" in paths(body("2D", [vf(name, "video")]))) is not ok


@pytest.mark.parametrize("field", ["layout", "perspective"])
def test_enums_are_exact(field: str) -> None:
    good = {"layout": "2D", "perspective": "360"}[field]
    assert paths(body(**{field: good})) == []
    assert paths(body(**{field: good.lower() + "x"})) == [field]
    assert paths(body(**{field: 2})) == [field]


def test_unknown_role_and_unknown_fields() -> None:
    assert paths(body("2D", [vf("v.mp4", "video"), vf("x.mp4", "thumbnail")])) == ["files[1].fileRole"]
    assert paths(body(videoNmae="typo")) == ["videoNmae"]
    assert paths(body("2D", [{**vf("v.mp4", "video"), "langaugeTag": "en"}])) == ["files[0].langaugeTag"]


@pytest.mark.parametrize(
    ("files", "path"),
    [(None, "files"), ([], "files"), ("x", "files"), ([1], "files[0]"), ([[]], "files[0]")],
)
def test_files_shape(files: Any, path: str) -> None:
    payload = body()
    payload["files"] = files
    if files is None:
        del payload["files"]
    assert path in paths(payload)


def test_file_count_limit() -> None:
    files = [vf("v.mp4", "video")] + [vf(f"s{i}.srt", "subtitle", lang="en") for i in range(63)]
    assert violations(body("2D", files)) == []
    assert paths(body("2D", [*files, vf("x.srt", "subtitle", lang="en")])) == ["files"]


@pytest.mark.parametrize("payload", [[], "x", 3, None, True])
def test_body_must_be_an_object(payload: Any) -> None:
    assert paths(payload) == ["$"]


def test_all_violations_are_reported_together() -> None:
    payload = {
        "videoName": "",
        "layout": "Separate",
        "perspective": "sideways",
        "files": [
            vf("l.avi", "video_left"),
            vf("v.mp4", "video", 0),
            vf("a.mp4", "audio", lang="xx"),
            vf("s.srt", "subtitle"),
        ],
    }
    assert paths(payload) == [
        "videoName",
        "perspective",
        "files[0].fileName",
        "files[1].sizeBytes",
        "files[2].languageTag",
        "files[3].languageTag",
        "files",  # no video_right
        "files[1].fileRole",  # video not allowed in Separate
    ]


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("فارسی\u200cکار", True),  # zero-width non-joiner is part of Persian spelling
        ("family 👨\u200d👩\u200d👧", True),  # emoji ZWJ sequence
        ("evil\u202egnp.mov", False),  # right-to-left override: displays as another name
        ("a\u2066b\u2069", False),  # bidi isolate
        ("line\u2028break", False),
        ("x\uffff", False),
        ("x\ufdd0", False),
        ("\u200b", False),  # nothing visible
        (" \u200b\ufeff ", False),
    ],
)
def test_names_that_lie_about_themselves(name: str, ok: bool) -> None:
    assert paths(body(videoName=name)) == ([] if ok else ["videoName"])


def test_file_names_reject_bidi_overrides() -> None:
    assert paths(body("2D", [vf("clip\u202e4pm.mov", "video")])) == ["files[0].fileName"]


def test_the_readme_lists_exactly_the_accepted_language_tags() -> None:
    """README, Language tags: every tag the service takes, none it refuses (the list cannot drift from the enum)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    listed = readme.split("<!-- language-tags:begin -->", 1)[1].split("<!-- language-tags:end -->", 1)[0]
    tags = re.findall(r"`([a-z]+)`", listed)
    assert tags == [*SPOKEN_LANGUAGES, INSTRUMENTAL.value]
    assert set(tags) == {t.value for t in LanguageTag}
    assert f"these {len(SPOKEN_LANGUAGES)}:" in readme
