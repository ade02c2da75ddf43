"""The uploader checks an asset set with the service's own rules before any request: the same verdict, the same
sentences, located at the local file the option named.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from app.client import config, spec
from app.client.cli import build_parser, local_files, main
from app.client.errors import InvalidUpload
from app.client.spec import LocalFile, UploadSpec, check_start_body, prepare
from app.domain import errors, rules
from app.domain.contract import LANGUAGES_BY_ROLE, FileRole, Layout, Perspective
from app.settings import DEV_ENV_FILE, ENV_PREFIX, Settings
from tests.conftest import SEED_REQUEST

MAX_FILE_BYTES = 5 * 1024**4


def test_the_client_checks_with_the_services_own_rules() -> None:
    """No copy to drift: the client's check is the service's walk (app.domain.rules), imported."""
    assert spec.validate_start_request is rules.validate_start_request
    assert tuple(m.value for m in FileRole) == spec.ROLES
    assert (tuple(m.value for m in Layout), tuple(m.value for m in Perspective)) == (spec.LAYOUTS, spec.PERSPECTIVES)


def test_dev_env_names_equal_the_services() -> None:
    assert config.DEV_ENV_FILE == DEV_ENV_FILE
    assert f"{ENV_PREFIX}DATA_DIR" == config.ENV_DATA_DIR
    assert Settings().server.data_dir == config.DEFAULT_DATA_DIR
    assert config.ENV_API_URL.startswith(ENV_PREFIX) and config.ENV_API_KEY.startswith(ENV_PREFIX)


def server_problems(body: dict[str, Any]) -> list[tuple[str, str]]:
    """What the service answers for a body: its (path, message) list, [] when valid."""
    try:
        rules.validate_start_request(body, max_file_bytes=MAX_FILE_BYTES, max_files=64)
    except errors.ApiError as exc:
        return [(e.path, e.message) for e in exc.errors or []]
    return []


def client_problems(body: dict[str, Any]) -> list[tuple[str, str]]:
    """What the client finds before sending the same body."""
    return [(p.path, p.message) for p in check_start_body(body)]


def body(layout: str, *files: tuple[str, str, str | None], **group: Any) -> dict[str, Any]:
    """A start body with (fileName, fileRole, languageTag) files of 1,000 bytes."""
    out: dict[str, Any] = {"videoName": "Film", "layout": layout, **group, "files": []}
    for name, role, tag in files:
        item: dict[str, Any] = {"fileName": name, "fileRole": role, "sizeBytes": 1000}
        if tag is not None:
            item["languageTag"] = tag
        out["files"].append(item)
    return out


# fmt: off
CASES: dict[str, dict[str, Any]] = {
    "seed": copy.deepcopy(SEED_REQUEST),
    "separate without right": body("Separate", ("l.mov", "video_left", None)),
    "separate with a video": body("Separate", ("l.mov", "video_left", None), ("r.mov", "video_right", None),
                                  ("v.mov", "video", None)),
    "2D with left eye": body("2D", ("v.mp4", "video", None), ("l.mov", "video_left", None)),
    "2D with two videos": body("2D", ("v.mp4", "video", None), ("w.mp4", "video", None)),
    "2D without video": body("2D", ("a.m4a", "audio", "en")),
    "AIV nothing right": body("AIV", ("v.mp4", "video", None)),
    "AIV with aivu": body("AIV", ("v.AIVU", "video", None), perspective="180"),
    "AIV with aime and fcpxmld": body("AIV", ("v.mov", "video", None), ("m.aime", "aime", None),
                                      ("c.zip", "fcpxmld", None), perspective="180"),
    "two aime, two fcpxmld": body("2D", ("v.mov", "video", None), ("a.aime", "aime", None), ("b.aime", "aime", None),
                                  ("c.zip", "fcpxmld", None), ("d.zip", "fcpxmld", None)),
    "wrong extensions": body("Separate", ("l.avi", "video_left", None), ("r.aivu", "video_right", None),
                             ("a.mp3", "audio", "en"), ("s.vtt", "subtitle", "en"), ("m.xml", "aime", None),
                             ("c.tar", "fcpxmld", None)),
    "no extension": body("2D", ("video", "video", None)),
    "languages": body("2D", ("v.mp4", "video", "en"), ("a.m4a", "audio", None), ("s.srt", "subtitle", None),
                      ("b.m4a", "audio", "xx"), ("t.srt", "subtitle", "zxx"), ("c.m4a", "audio", "ZXX"),
                      ("u.srt", "subtitle", "PT"), ("d.m4a", "audio", "x" * 60)),
    "blank name": body("2D", ("v.mp4", "video", None)) | {"videoName": "   "},
    "invisible name": body("2D", ("v.mp4", "video", None)) | {"videoName": "\u200b\u2060"},
    "long name": body("2D", ("v.mp4", "video", None)) | {"videoName": "n" * 256},
    "name at the limit": body("2D", ("v.mp4", "video", None)) | {"videoName": " " + "n" * 255 + " "},
    "control characters": body("2D", ("v\x07.mp4", "video", None)) | {"videoName": "a\tb"},
    "bidi override": body("2D", ("v\u202e4pm.mov", "video", None)) | {"folderName": "x\u2028y"},
    "noncharacter": body("2D", ("v\ufdd0.mp4", "video", None)),
    "description": body("2D", ("v.mp4", "video", None)) | {"description": "d" * 5001},
    "description with tabs": body("2D", ("v.mp4", "video", None)) | {"description": "a\tb\nc"},
    "empty folder": body("2D", ("v.mp4", "video", None)) | {"folderName": "  "},
    "unknown layout": body("3D", ("v.mp4", "video", None), ("l.mov", "video_left", None)),
    "unknown perspective": body("2D", ("v.mp4", "video", None)) | {"perspective": "90"},
    "empty file": body("2D", ("v.mp4", "video", None)) | {"files": [{"fileName": "v.mp4", "fileRole": "video",
                                                                     "sizeBytes": 0}]},
    "no files": body("2D"),
    "long file name": body("2D", ("v" * 252 + ".mp4", "video", None)),
}
# fmt: on


@pytest.mark.parametrize("case", CASES)
def test_client_finds_what_the_service_finds_in_its_words(case: str) -> None:
    assert client_problems(CASES[case]) == server_problems(CASES[case])


def test_prepare_reports_unusable_files_with_where_they_came_from(tmp_path: Path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "folder.mov").mkdir()
    (tmp_path / "en.m4a").write_bytes(b"x")
    files = (
        LocalFile(tmp_path / "empty.mp4", "video", origin="--video empty.mp4"),
        LocalFile(tmp_path / "folder.mov", "video_left", origin="--video-left folder.mov"),
        LocalFile(tmp_path / "gone.srt", "subtitle", "en", origin="--subtitle en=gone.srt"),
        LocalFile(tmp_path / "en.m4a", "audio", "xx", origin="--audio xx=en.m4a"),
    )
    with pytest.raises(InvalidUpload) as caught:
        prepare(UploadSpec("Film", "2D", files))
    shown = [str(p) for p in caught.value.problems]
    assert shown == [
        f"files[1] '{tmp_path / 'folder.mov'}': is not a regular file (--video-left folder.mov)",
        f"files[2] '{tmp_path / 'gone.srt'}': no such file (--subtitle en=gone.srt)",
        "files[0].sizeBytes must be a positive integer (got 0) (--video empty.mp4)",
        "files[3].languageTag 'xx' is not a supported language tag: send a two-letter language-only tag, one of "
        f"{' '.join(sorted(LANGUAGES_BY_ROLE[FileRole.AUDIO]))} (--audio xx=en.m4a)",
        "files[1].fileRole layout 2D does not allow video_left files (--video-left folder.mov)",
    ]


def test_prepare_measures_files_and_builds_the_body(tmp_path: Path) -> None:
    (tmp_path / "v.mov").write_bytes(b"v" * 10)
    (tmp_path / "a.m4a").write_bytes(b"a" * 3)
    prepared = prepare(UploadSpec("  Film ", "2D", (LocalFile(tmp_path / "v.mov", "video"),
                                                    LocalFile(tmp_path / "a.m4a", "audio", "en", name="Audio.m4a")),
                                  folder_name="Launch"))  # fmt: skip
    assert prepared.sizes == (10, 3)
    assert prepared.body == {
        "videoName": "  Film ", "layout": "2D", "folderName": "Launch",
        "files": [{"fileName": "v.mov", "fileRole": "video", "sizeBytes": 10, "checksumAlgorithm": "CRC64NVME"},
                  {"fileName": "Audio.m4a", "fileRole": "audio", "sizeBytes": 3, "languageTag": "en",
                   "checksumAlgorithm": "CRC64NVME"}],
    }  # fmt: skip
    assert server_problems(prepared.body) == []
    without = prepare(UploadSpec("Film", "2D", (LocalFile(tmp_path / "v.mov", "video"),), checksum=None))
    assert without.body["files"] == [{"fileName": "v.mov", "fileRole": "video", "sizeBytes": 10}]
    with pytest.raises(InvalidUpload, match="checksum 'MD5' is not one of CRC64NVME, CRC32C, CRC32, SHA256, SHA1"):
        prepare(UploadSpec("Film", "2D", (LocalFile(tmp_path / "v.mov", "video"),), checksum="MD5"))


def test_command_line_files_become_local_files_in_the_services_order() -> None:
    args = build_parser().parse_args(
        ["send", "--name", "n", "--layout", "Separate", "--subtitle", "en=s.srt", "--audio", "fr=a=b.mp4",
         "--video-right", "r.mov", "--audio", "solo.m4a", "--video-left", "l.mov", "--fcpxmld", "c.zip"]
    )  # fmt: skip
    assert [(str(f.path), f.role, f.language, f.origin) for f in local_files(args)] == [
        ("l.mov", "video_left", None, "--video-left l.mov"),
        ("r.mov", "video_right", None, "--video-right r.mov"),
        ("a=b.mp4", "audio", "fr", "--audio fr=a=b.mp4"),
        ("solo.m4a", "audio", None, "--audio solo.m4a"),
        ("s.srt", "subtitle", "en", "--subtitle en=s.srt"),
        ("c.zip", "fcpxmld", None, "--fcpxmld c.zip"),
    ]


def test_local_mistakes_exit_2_before_any_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "v.mov").write_bytes(b"v")
    # The URL points at nothing: had a request been made, the run would fail (1), not stop as invalid (2).
    monkeypatch.setenv("SPATIALGEN_API_KEY", "k")
    flags = ["--api-url", "http://127.0.0.1:9"]
    assert main(["send", "--name", "n", "--layout", "Separate", "--video", "v.mov", *flags]) == 2
    err = capsys.readouterr().err
    assert "files layout Separate requires exactly one video_left file" in err
    assert "files[0].fileRole layout Separate does not allow video files (--video v.mov)" in err
    for name in ("SPATIALGEN_API_URL", "SPATIALGEN_API_KEY", "SPATIALGEN_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    assert main(["send", "--name", "n", "--layout", "2D", "--video", "v.mov"]) == 2
    assert "no API URL: pass --api-url" in capsys.readouterr().err
    assert main(["resume", "5ea97a59-0000-4000-8000-000000000000", *flags]) == 2
    assert "no state file at .spatialgen-upload/5ea97a59-0000-4000-8000-000000000000.json" in capsys.readouterr().err


def test_help_says_how_to_resume_and_what_the_exit_codes_are(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "spatialgen-upload resume SESSION_ID" in text
    assert "130 interrupted (resumable)" in text


def test_readme_names_every_option_of_the_command() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Uploading from the command line", 1)[1].split("### From Python", 1)[0]
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    assert isinstance(subparsers, dict)
    for name, sub in subparsers.items():
        assert f"spatialgen-upload {name}" in section or f"`{name}`" in section, name
        for action in sub._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}" in section, f"{name} {option} is not in the README"
