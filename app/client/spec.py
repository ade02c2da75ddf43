"""What to upload (an asset set of local files) and the service's rules it must meet, checked before any request.

The constants and sentences are copies of the service's (app/rules.py), which the client must not import;
tests/unit/test_client_spec.py keeps the copies equal to the originals.
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.client.errors import InvalidUpload, Problem

LAYOUTS = ("2D", "MVHEVC", "SBS", "TB", "Separate", "AIV")
PERSPECTIVES = ("Regular", "180", "360")
ROLES = ("video", "video_left", "video_right", "audio", "subtitle", "aime", "fcpxmld")
MAX_NAME_CHARS = 255
MAX_DESCRIPTION_CHARS = 5000
EXTENSIONS: Mapping[str, tuple[str, ...]] = {
    "video": (".aivu", ".mp4", ".mov"),
    "video_left": (".mp4", ".mov"),
    "video_right": (".mp4", ".mov"),
    "audio": (".mp4", ".m4a"),
    "subtitle": (".srt",),
    "aime": (".aime",),
    "fcpxmld": (".zip",),
}
SPOKEN_LANGUAGES = frozenset(
    (
        "en es fr de it ja ko pt ru zh af am ar az bg bn bs ca cs da el et fa fi gu he hi hr hu hy "
        "id is ka kn lt lv ml mr ms nl no pa pl ro sk sl sq sr sv sw ta te th tl tr uk ur vi"
    ).split()
)
LANGUAGES_BY_ROLE: Mapping[str, frozenset[str]] = {
    "audio": SPOKEN_LANGUAGES | {"zxx"},  # zxx: no linguistic content (instrumental)
    "subtitle": SPOKEN_LANGUAGES,
}
_INVISIBLE = re.compile("[\\s\u200b-\u200d\u2060\ufeff]*")


@dataclass(frozen=True)
class LocalFile:
    """One local file of the asset set and its role (languageTag for audio and subtitle)."""

    path: Path
    role: str
    language: str | None = None
    name: str = ""
    """The fileName sent to the service; the path's base name when empty."""
    origin: str = ""
    """How the file was given on the command line, for messages (`--audio en=a.mp4`)."""

    @property
    def file_name(self) -> str:
        """The name the service records for this file."""
        return self.name or self.path.name


@dataclass(frozen=True)
class UploadSpec:
    """An asset set to upload: the group's fields and its local files, in request order."""

    video_name: str
    layout: str
    files: tuple[LocalFile, ...]
    description: str | None = None
    perspective: str | None = None
    folder_name: str | None = None


@dataclass(frozen=True)
class PreparedSpec:
    """A spec whose files were found and measured, with the exact start body to send."""

    spec: UploadSpec
    sizes: tuple[int, ...]
    mtimes_ns: tuple[int, ...]
    body: dict[str, Any] = field(hash=False)


def start_body(spec: UploadSpec, sizes: Sequence[int]) -> dict[str, Any]:
    """The `POST /api/videos/uploads` body for a spec and its files' sizes (optional fields left out when unset)."""
    body: dict[str, Any] = {"videoName": spec.video_name}
    if spec.description is not None:
        body["description"] = spec.description
    body["layout"] = spec.layout
    if spec.perspective is not None:
        body["perspective"] = spec.perspective
    if spec.folder_name is not None:
        body["folderName"] = spec.folder_name
    files = []
    for f, size in zip(spec.files, sizes, strict=True):
        item: dict[str, Any] = {"fileName": f.file_name, "fileRole": f.role, "sizeBytes": size}
        if f.language is not None:
            item["languageTag"] = f.language
        files.append(item)
    body["files"] = files
    return body


def measure(files: Sequence[LocalFile]) -> tuple[list[int], list[int], list[Problem]]:
    """Sizes and modification times of local files, and why any of them cannot be uploaded (size -1)."""
    sizes: list[int] = []
    mtimes: list[int] = []
    problems: list[Problem] = []
    for i, f in enumerate(files):
        size, mtime, problem = _inspect(f.path)
        sizes.append(size)
        mtimes.append(mtime)
        if problem:
            problems.append(Problem(f"files[{i}]", f"{str(f.path)!r}: {problem}", f.origin))
    return sizes, mtimes, problems


def prepare(spec: UploadSpec) -> PreparedSpec:
    """Measure the local files and check the whole asset set; raise InvalidUpload listing every problem."""
    sizes, mtimes, problems = measure(spec.files)
    body = start_body(spec, [s if s >= 0 else 1 for s in sizes])  # an unreadable file is reported once, above
    origins = {f"files[{i}]": f.origin for i, f in enumerate(spec.files)}
    for p in check_start_body(body):
        problems.append(Problem(p.path, p.message, origins.get(p.path.split(".")[0], "")))
    if problems:
        raise InvalidUpload(problems)
    return PreparedSpec(spec, tuple(sizes), tuple(mtimes), body)


def _inspect(path: Path) -> tuple[int, int, str]:
    """(size, mtime_ns, problem) of a local file; size -1 and a reason when it cannot be uploaded."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return -1, 0, "no such file"
    except OSError as exc:
        return -1, 0, f"cannot be read ({exc.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return -1, 0, "is not a regular file"
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        return -1, 0, f"cannot be read ({exc.strerror})"
    return st.st_size, st.st_mtime_ns, ""


# --- the service's rules, in its words (app/rules.py: validate_start_request) --------------------


def file_extension(file_name: str) -> str:
    """The lowercase extension (with dot) of a file name, or '' if none."""
    dot = file_name.rfind(".")
    return file_name[dot:].lower() if dot > 0 else ""


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bad_chars(value: str, allowed: str = "") -> str | None:
    """Why the service would refuse a string's characters, or None."""
    for ch in value:
        if ch in allowed:
            continue
        code = ord(ch)
        cat = unicodedata.category(ch)
        if cat == "Cc":
            return f"must not contain control characters (found U+{code:04X})"
        if cat == "Cs":
            return "must not contain unpaired surrogates"
        if 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069:
            return f"must not contain bidirectional control characters (found U+{code:04X})"
        if cat in ("Zl", "Zp"):
            return f"must not contain line or paragraph separators (found U+{code:04X})"
        if 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE:
            return f"must not contain Unicode noncharacters (found U+{code:04X})"
    return None


def _text(
    out: list[Problem], value: str | None, path: str, *, required: bool, max_chars: int, min_chars: int = 1,
    trim: bool = False, allowed: str = "",
) -> None:  # fmt: skip
    if value is None:
        if required:
            out.append(Problem(path, "is required"))
        return
    if trim:
        value = value.strip()
    if min_chars and _INVISIBLE.fullmatch(value):
        value = ""
    if len(value) < min_chars:
        out.append(Problem(path, "must not be empty"))
    elif len(value) > max_chars:
        out.append(Problem(path, f"must be at most {max_chars} characters (got {len(value)})"))
    elif bad := _bad_chars(value, allowed):
        out.append(Problem(path, bad))


def _choice(out: list[Problem], value: str | None, path: str, choices: Sequence[str], *, required: bool) -> bool:
    if value is None:
        if required:
            out.append(Problem(path, f"is required (one of {', '.join(choices)})"))
        return False
    if value not in choices:
        out.append(Problem(path, f"must be one of {', '.join(choices)} (got {_clip(value)})"))
        return False
    return True


def check_start_body(body: Mapping[str, Any]) -> list[Problem]:
    """Every SPEC 3.1 violation in a start body the client built, in the service's order and words."""
    out: list[Problem] = []
    _text(out, body.get("videoName"), "videoName", required=True, max_chars=MAX_NAME_CHARS, trim=True)
    _text(out, body.get("description"), "description", required=False, max_chars=MAX_DESCRIPTION_CHARS,
          min_chars=0, allowed="\t\n\r")  # fmt: skip
    layout = body.get("layout")
    if not _choice(out, layout, "layout", LAYOUTS, required=True):
        layout = None
    perspective = body.get("perspective")
    _choice(out, perspective, "perspective", PERSPECTIVES, required=False)
    _text(out, body.get("folderName"), "folderName", required=False, max_chars=MAX_NAME_CHARS, trim=True)
    files: list[dict[str, Any]] = body.get("files") or []
    if not files:
        out.append(Problem("files", "must contain at least one file"))
        return out
    names = [_check_file(out, f, f"files[{i}]") for i, f in enumerate(files)]
    _check_group(out, layout, perspective, files, names)
    return out


def _check_file(out: list[Problem], f: Mapping[str, Any], path: str) -> str:
    """Check one file; returns its name if the name itself is valid, else '' (as the service keeps it)."""
    name: str | None = f.get("fileName")
    before = len(out)
    _text(out, name, f"{path}.fileName", required=True, max_chars=MAX_NAME_CHARS)
    name_ok = len(out) == before
    role: str = f["fileRole"]
    if not _choice(out, role, f"{path}.fileRole", ROLES, required=True):
        return ""
    size = f.get("sizeBytes", 0)
    if size < 1:
        out.append(Problem(f"{path}.sizeBytes", f"must be a positive integer (got {size})"))
    tag: str | None = f.get("languageTag")
    allowed = LANGUAGES_BY_ROLE.get(role)
    if allowed is None:
        if tag is not None:
            out.append(Problem(f"{path}.languageTag", f"must be omitted for fileRole {role}"))
    elif tag is None:
        out.append(Problem(f"{path}.languageTag", f"is required for fileRole {role}"))
    elif tag.lower() not in allowed:
        hint = " (zxx is only for audio)" if tag.lower() == "zxx" else ""
        out.append(Problem(f"{path}.languageTag", f"{_clip(tag)!r} is not a supported language tag{hint}"))
    if name is not None and name_ok and file_extension(name) not in EXTENSIONS[role]:
        endings = " or ".join(EXTENSIONS[role])
        out.append(Problem(f"{path}.fileName", f"a {role} file must end in {endings} (got {_clip(name)!r})"))
    return name if name is not None and name_ok else ""


def _check_group(  # noqa: C901 - the service's group rules in one place (tests compare it with app/rules.py)
    out: list[Problem], layout: str | None, perspective: str | None, files: list[dict[str, Any]], names: list[str]
) -> None:
    by_role: dict[str, list[int]] = {}
    for i, f in enumerate(files):
        if f.get("fileRole") in ROLES:
            by_role.setdefault(f["fileRole"], []).append(i)
    shown = layout or ""

    def exactly_one(role: str) -> None:
        where = by_role.get(role, [])
        if not where:
            out.append(Problem("files", f"layout {shown} requires exactly one {role} file"))
        for i in where[1:]:
            out.append(Problem(f"files[{i}].fileRole", f"only one {role} file is allowed"))

    def none_of(role: str) -> None:
        for i in by_role.get(role, []):
            out.append(Problem(f"files[{i}].fileRole", f"layout {shown} does not allow {role} files"))

    if layout == "Separate":
        exactly_one("video_left")
        exactly_one("video_right")
        none_of("video")
    elif layout is not None:
        exactly_one("video")
        none_of("video_left")
        none_of("video_right")
    for role in ("aime", "fcpxmld"):
        for i in by_role.get(role, [])[1:]:
            out.append(Problem(f"files[{i}].fileRole", f"at most one {role} file is allowed per group"))
    if layout == "AIV":
        if perspective != "180":
            out.append(Problem("perspective", "layout AIV requires perspective 180"))
        has_aivu = any(file_extension(names[i]) == ".aivu" for i in by_role.get("video", []))
        if not has_aivu and not (by_role.get("aime") and by_role.get("fcpxmld")):
            why = "layout AIV requires a video file ending in .aivu, or both an aime and an fcpxmld file"
            out.append(Problem("files", why))
