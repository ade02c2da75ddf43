"""Pure upload rules: request validation, part sizing and byte ranges.

No I/O here; everything is a plain function over msgspec Structs, unit-tested in tests/unit.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Annotated, Any, TypeGuard

import msgspec

from app import errors
from app.errors import FieldError
from app.models import (
    FileRole,
    FileSpec,
    Layout,
    PartPlan,
    Perspective,
    StartUploadRequest,
    UploadStrategy,
)

MIB = 1024 * 1024
# S3's multipart limits: at most 10,000 parts, every part but the last at least 5 MiB.
MAX_PARTS = 10_000
MIN_PART_SIZE = 5 * MIB
MAX_NAME_CHARS = 255
MAX_DESCRIPTION_CHARS = 5000

EXTENSIONS: Mapping[FileRole, tuple[str, ...]] = {
    FileRole.VIDEO: (".aivu", ".mp4", ".mov"),
    FileRole.VIDEO_LEFT: (".mp4", ".mov"),
    FileRole.VIDEO_RIGHT: (".mp4", ".mov"),
    FileRole.AUDIO: (".mp4", ".m4a"),
    FileRole.SUBTITLE: (".srt",),
    FileRole.AIME: (".aime",),
    FileRole.FCPXMLD: (".zip",),
}

SPOKEN_LANGUAGES = frozenset(
    (
        "en es fr de it ja ko pt ru zh af am ar az bg bn bs ca cs da el et fa fi gu he hi hr hu hy "
        "id is ka kn lt lv ml mr ms nl no pa pl ro sk sl sq sr sv sw ta te th tl tr uk ur vi"
    ).split()
)
LANGUAGES_BY_ROLE: Mapping[FileRole, frozenset[str]] = {
    FileRole.AUDIO: SPOKEN_LANGUAGES | {"zxx"},  # zxx: no linguistic content (instrumental)
    FileRole.SUBTITLE: SPOKEN_LANGUAGES,
}

_GROUP_FIELDS = frozenset({"videoName", "description", "layout", "perspective", "folderName", "files"})
_FILE_FIELDS = frozenset({"fileName", "fileRole", "sizeBytes", "languageTag"})
_LAYOUTS = {m.value: m for m in Layout}
_PERSPECTIVES = {m.value: m for m in Perspective}
_ROLES = {m.value: m for m in FileRole}


def plan_parts(size_bytes: int, preferred_part_size: int) -> PartPlan:
    """Decide single PUT or multipart, the part size and the part count for a file.

    Files up to the preferred size P go up in one PUT. Larger files use P unless that
    would need more than S3's 10,000 parts; then the part size grows to
    ceil(size / 10,000) rounded up to a whole MiB, which keeps every part a MiB
    multiple (clients slice at aligned offsets) and the count at or below 10,000:
    rounding the part size up can only lower ceil(size / part). P itself is at
    least 5 MiB (settings check), so every part except the last meets S3's minimum.
    """
    if size_bytes <= preferred_part_size:
        return PartPlan(UploadStrategy.SINGLE_PUT, size_bytes, 1)
    min_part = -(-size_bytes // MAX_PARTS)
    min_part_mib_aligned = -(-min_part // MIB) * MIB
    part_size = max(preferred_part_size, min_part_mib_aligned)
    return PartPlan(UploadStrategy.MULTIPART, part_size, -(-size_bytes // part_size))


def part_range(part_number: int, part_size: int, total_bytes: int) -> tuple[int, int]:
    """Byte range [start, end) of a 1-based part; the last part may be short."""
    start = (part_number - 1) * part_size
    return start, min(start + part_size, total_bytes)


def file_extension(file_name: str) -> str:
    """The lowercase extension (with dot) of a file name, or '' if none."""
    dot = file_name.rfind(".")
    return file_name[dot:].lower() if dot > 0 else ""


# Fast path: most strings have no C0/C1 control character and no surrogate at all.
# Characters no name needs and that make names lie about themselves: C0/C1 controls, unpaired
# surrogates, bidi embeddings/overrides/isolates (a "Trojan source" name can display as another),
# line/paragraph separators and Unicode noncharacters. Zero-width joiners stay allowed: Persian,
# Hindi and emoji sequences need them. The fast path is one regex over the whole string.
_BIDI_CONTROLS = "\u202a-\u202e\u2066-\u2069"
_FORBIDDEN = f"\x00-\x1f\x7f-\x9f\ud800-\udfff{_BIDI_CONTROLS}\u2028\u2029\ufdd0-\ufdef\ufffe\uffff"
_PLAIN_TEXT = re.compile(f"[^{_FORBIDDEN}]*")
_INVISIBLE = re.compile("[\\s\u200b-\u200d\u2060\ufeff]*")


def _bad_chars(value: str, allowed: str = "") -> str | None:  # noqa: PLR0911 - one answer per kind of bad character
    """Why a string is unacceptable (controls, surrogates, bidi overrides, separators, noncharacters), or None."""
    if _PLAIN_TEXT.fullmatch(value):
        return None
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


class _Collector:
    """Gathers every violation so the client gets all of them in one answer."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    def text(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        *,
        required: bool,
        max_chars: int,
        min_chars: int = 1,
        trim: bool = False,
        allowed_controls: str = "",
    ) -> str | None:
        value = obj.get(key)
        if value is None:
            if required:
                self.add(path, "is required")
            return None
        if not isinstance(value, str):
            self.add(path, f"must be a string, not {_json_type(value)}")
            return None
        if trim:
            value = value.strip()
        if min_chars and _INVISIBLE.fullmatch(value):
            value = ""  # only spaces or zero-width characters: nothing anyone could see
        if len(value) < min_chars:
            self.add(path, "must not be empty" if min_chars == 1 else f"must be at least {min_chars} characters")
            return None
        if len(value) > max_chars:
            self.add(path, f"must be at most {max_chars} characters (got {len(value)})")
            return None
        bad = _bad_chars(value, allowed_controls)
        if bad:
            self.add(path, bad)
            return None
        return value

    def choice(self, obj: Mapping[str, Any], key: str, path: str, choices: Mapping[str, Any], *, required: bool) -> Any:
        value = obj.get(key)
        if value is None:
            if required:
                self.add(path, f"is required (one of {', '.join(choices)})")
            return None
        if not isinstance(value, str) or value not in choices:
            shown = value if isinstance(value, str) else _json_type(value)
            self.add(path, f"must be one of {', '.join(choices)} (got {_clip(str(shown))})")
            return None
        return choices[value]

    def unknown_fields(self, obj: Mapping[str, Any], known: frozenset[str], prefix: str) -> None:
        for key in obj:
            if key not in known:
                self.add(f"{prefix}{_clip(str(key))}", "is not a known field")


def _json_type(value: Any) -> str:  # noqa: PLR0911 - one answer per JSON type
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def decode_json_body(body: bytes) -> Any:
    """Decode a request body as JSON, or raise a 400 that says where it broke."""
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise errors.MALFORMED_JSON(f"The body is not valid JSON: {exc}.") from None
    except UnicodeDecodeError:
        raise errors.MALFORMED_JSON("The body is not valid UTF-8.") from None
    except RecursionError:
        raise errors.MALFORMED_JSON("The body is nested too deeply.") from None


def parse_start_request(body: bytes, *, max_file_bytes: int, max_files: int) -> StartUploadRequest:
    """Decode and validate a start body (SPEC 3.1): raise one 400 listing every violation.

    A valid body takes the typed fast path (msgspec decodes and types it in C; a few cheap checks remain).
    Anything the fast path does not accept whole goes the reference way, `validate_start_request` over
    the untyped JSON, which finds and reports every violation. The fast path only ever accepts what the
    reference accepts, with the same result (tests/unit/test_fast_start.py checks this).
    """
    fast = _fast_start_request(body, max_file_bytes=max_file_bytes, max_files=max_files)
    if fast is not None:
        return fast
    return validate_start_request(decode_json_body(body), max_file_bytes=max_file_bytes, max_files=max_files)


_Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME_CHARS)]


class _TypedFile(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    file_name: _Name
    file_role: FileRole
    size_bytes: Annotated[int, msgspec.Meta(ge=1)]
    language_tag: str | None = None


class _TypedStart(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    video_name: str
    layout: Layout
    files: Annotated[list[_TypedFile], msgspec.Meta(min_length=1)]
    description: Annotated[str, msgspec.Meta(max_length=MAX_DESCRIPTION_CHARS)] | None = None
    perspective: Perspective | None = None
    folder_name: str | None = None


_typed_start = msgspec.json.Decoder(_TypedStart)


def _fast_name(value: str, *, trim: bool) -> str | None:
    """A name as `_Collector.text` would accept it (1-255 visible characters, no forbidden ones), else None."""
    if trim:
        value = value.strip()
    if not 1 <= len(value) <= MAX_NAME_CHARS or _INVISIBLE.fullmatch(value) or not _PLAIN_TEXT.fullmatch(value):
        return None
    return value


def _fast_start_request(body: bytes, *, max_file_bytes: int, max_files: int) -> StartUploadRequest | None:
    """The validated request if the body is valid in every respect, else None (the caller takes the slow way)."""
    try:
        typed = _typed_start.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        return None
    video_name = _fast_name(typed.video_name, trim=True)
    folder_name = None if typed.folder_name is None else _fast_name(typed.folder_name, trim=True)
    if video_name is None or (typed.folder_name is not None and folder_name is None) or len(typed.files) > max_files:
        return None
    if typed.description is not None and _bad_chars(typed.description, "\t\n\r"):
        return None
    files: list[FileSpec | None] = []
    for f in typed.files:
        name = _fast_name(f.file_name, trim=False)
        allowed = LANGUAGES_BY_ROLE.get(f.file_role)
        tag = f.language_tag.lower() if f.language_tag is not None else None
        if (
            name is None
            or f.size_bytes > max_file_bytes
            or file_extension(name) not in EXTENSIONS[f.file_role]
            or (tag is not None if allowed is None else tag not in allowed)
        ):
            return None
        files.append(FileSpec(file_name=name, file_role=f.file_role, size_bytes=f.size_bytes, language_tag=tag))
    c = _Collector()
    _check_group_rules(c, typed.layout, typed.perspective, files)
    if c.errors:
        return None
    return StartUploadRequest(
        video_name=video_name, layout=typed.layout, files=tuple(f for f in files if f is not None),
        description=typed.description, perspective=typed.perspective, folder_name=folder_name,
    )  # fmt: skip


def validate_start_request(payload: Any, *, max_file_bytes: int, max_files: int) -> StartUploadRequest:
    """Check a decoded start body against every SPEC 3.1 rule; raise one 400 listing all violations."""
    c, payload = _body_object(payload, _GROUP_FIELDS, "request")
    video_name = c.text(payload, "videoName", "videoName", required=True, max_chars=MAX_NAME_CHARS, trim=True)
    description = c.text(
        payload,
        "description",
        "description",
        required=False,
        max_chars=MAX_DESCRIPTION_CHARS,
        min_chars=0,
        allowed_controls="\t\n\r",
    )
    layout = c.choice(payload, "layout", "layout", _LAYOUTS, required=True)
    perspective = c.choice(payload, "perspective", "perspective", _PERSPECTIVES, required=False)
    folder_name = c.text(payload, "folderName", "folderName", required=False, max_chars=MAX_NAME_CHARS, trim=True)

    files: list[FileSpec | None] = []
    raw_files = payload.get("files")
    if raw_files is None:
        c.add("files", "is required (an array of at least one file)")
    elif not isinstance(raw_files, list):
        c.add("files", f"must be an array, not {_json_type(raw_files)}")
    elif not raw_files:
        c.add("files", "must contain at least one file")
    elif len(raw_files) > max_files:
        c.add("files", f"must contain at most {max_files} files (got {len(raw_files)})")
    else:
        files = [_validate_file(c, raw, f"files[{i}]", max_file_bytes) for i, raw in enumerate(raw_files)]

    if files:
        _check_group_rules(c, layout, perspective, files)
    if c.errors:
        n = len(c.errors)
        raise errors.INVALID_REQUEST(
            f"{n} problem{'s' if n > 1 else ''} in the request: {c.errors[0].path} {c.errors[0].message}"
            + ("" if n == 1 else f" (and {n - 1} more)"),
            errors=c.errors,
        )
    assert video_name is not None and layout is not None  # guaranteed when no errors
    return StartUploadRequest(
        video_name=video_name,
        layout=layout,
        files=tuple(f for f in files if f is not None),
        description=description,
        perspective=perspective,
        folder_name=folder_name,
    )


def _validate_file(c: _Collector, raw: Any, path: str, max_file_bytes: int) -> FileSpec | None:
    if not isinstance(raw, dict):
        c.add(path, f"must be an object, not {_json_type(raw)}")
        return None
    before = len(c.errors)
    c.unknown_fields(raw, _FILE_FIELDS, f"{path}.")
    name = c.text(raw, "fileName", f"{path}.fileName", required=True, max_chars=MAX_NAME_CHARS)
    role: FileRole | None = c.choice(raw, "fileRole", f"{path}.fileRole", _ROLES, required=True)
    size = _size(c, raw.get("sizeBytes"), f"{path}.sizeBytes", max_file_bytes)
    language: str | None = None
    if role is not None:
        language = _language(c, raw.get("languageTag"), f"{path}.languageTag", role)
        if name is not None and file_extension(name) not in EXTENSIONS[role]:
            c.add(
                f"{path}.fileName",
                f"a {role.value} file must end in {' or '.join(EXTENSIONS[role])} (got {_clip(name)!r})",
            )
    if len(c.errors) > before or name is None or role is None or size is None:
        # Keep the role for the group rules even when other fields of this file are wrong.
        return FileSpec(file_name=name or "", file_role=role, size_bytes=0) if role is not None else None
    return FileSpec(file_name=name, file_role=role, size_bytes=size, language_tag=language)


def _size(c: _Collector, size: Any, path: str, max_file_bytes: int) -> int | None:
    """A file's sizeBytes: a positive integer up to the largest object accepted."""
    if size is None:
        c.add(path, "is required")
    elif not _is_int(size):
        c.add(path, f"must be an integer, not {_json_type(size)}")
    elif size < 1:
        c.add(path, f"must be a positive integer (got {size})")
    elif size > max_file_bytes:
        c.add(path, f"must be at most {max_file_bytes} bytes (got {_clip(str(size))})")
    else:
        return size
    return None


def _language(c: _Collector, tag: Any, path: str, role: FileRole) -> str | None:
    """A file's languageTag, lowercased: required for audio and subtitles, absent for every other role."""
    allowed = LANGUAGES_BY_ROLE.get(role)
    if allowed is None:
        if tag is not None:
            c.add(path, f"must be omitted for fileRole {role.value}")
    elif tag is None:
        c.add(path, f"is required for fileRole {role.value}")
    elif not isinstance(tag, str):
        c.add(path, f"must be a string, not {_json_type(tag)}")
    elif tag.lower() not in allowed:
        hint = " (zxx is only for audio)" if tag.lower() == "zxx" else ""
        c.add(path, f"{_clip(tag)!r} is not a supported language tag{hint}")
    else:
        return tag.lower()
    return None


def _check_group_rules(
    c: _Collector, layout: Layout | None, perspective: Perspective | None, files: list[FileSpec | None]
) -> None:
    by_role: dict[FileRole, list[int]] = {}
    for i, f in enumerate(files):
        if f is not None:
            by_role.setdefault(f.file_role, []).append(i)
    if layout is not None:
        _check_video_roles(c, layout, by_role)
    for role in (FileRole.AIME, FileRole.FCPXMLD):
        for i in by_role.get(role, [])[1:]:
            c.add(f"files[{i}].fileRole", f"at most one {role.value} file is allowed per group")
    if layout is Layout.AIV:
        _check_aiv(c, perspective, files, by_role)


def _check_video_roles(c: _Collector, layout: Layout, by_role: dict[FileRole, list[int]]) -> None:
    """Separate takes exactly one left and one right video and no main video; every other layout the reverse."""
    wanted, refused = (
        ((FileRole.VIDEO_LEFT, FileRole.VIDEO_RIGHT), (FileRole.VIDEO,))
        if layout is Layout.SEPARATE
        else ((FileRole.VIDEO,), (FileRole.VIDEO_LEFT, FileRole.VIDEO_RIGHT))
    )
    for role in wanted:
        where = by_role.get(role, [])
        if not where:
            c.add("files", f"layout {layout.value} requires exactly one {role.value} file")
        for i in where[1:]:
            c.add(f"files[{i}].fileRole", f"only one {role.value} file is allowed")
    for role in refused:
        for i in by_role.get(role, []):
            c.add(f"files[{i}].fileRole", f"layout {layout.value} does not allow {role.value} files")


def _check_aiv(
    c: _Collector, perspective: Perspective | None, files: list[FileSpec | None], by_role: dict[FileRole, list[int]]
) -> None:
    """Apple Immersive Video: perspective 180, and an .aivu video or both metadata files."""
    if perspective is not Perspective.HALF:
        c.add("perspective", "layout AIV requires perspective 180")
    has_aivu = any(
        (f := files[i]) is not None and file_extension(f.file_name) == ".aivu" for i in by_role.get(FileRole.VIDEO, [])
    )
    if not has_aivu and not (by_role.get(FileRole.AIME) and by_role.get(FileRole.FCPXMLD)):
        c.add("files", "layout AIV requires a video file ending in .aivu, or both an aime and an fcpxmld file")


# --- part-urls and complete requests ---------------------------------------------------------

_SELECTION_FIELDS = frozenset({"partNumbers", "startPartNumber", "count"})
_COMPLETE_FIELDS = frozenset({"parts"})
_PART_FIELDS = frozenset({"partNumber", "etag"})
MAX_ETAG_CHARS = 1024


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _raise_if(c: _Collector, what: str) -> None:
    if c.errors:
        first = c.errors[0]
        more = "" if len(c.errors) == 1 else f" (and {len(c.errors) - 1} more)"
        raise errors.INVALID_REQUEST(f"Invalid {what}: {first.path} {first.message}{more}", errors=c.errors)


def _body_object(payload: Any, known: frozenset[str], what: str) -> tuple[_Collector, dict[str, Any]]:
    """A collector for a body that must be a JSON object; a non-object is a 400 at once, unknown fields are noted."""
    c = _Collector()
    if not isinstance(payload, dict):
        c.add("$", f"the body must be a JSON object, not {_json_type(payload)}")
        _raise_if(c, what)
    c.unknown_fields(payload, known, "")
    return c, payload


def _listed_parts(c: _Collector, numbers: Any, total_parts: int) -> None:
    """partNumbers: a non-empty array of distinct part numbers within the file."""
    if not isinstance(numbers, list):
        c.add("partNumbers", f"must be an array, not {_json_type(numbers)}")
    elif not numbers:
        c.add("partNumbers", "must contain at least one part number")
    elif len(numbers) > MAX_PARTS:
        c.add("partNumbers", f"must contain at most {MAX_PARTS} part numbers")
    else:
        seen: set[int] = set()
        for i, n in enumerate(numbers):
            if not _is_int(n):
                c.add(f"partNumbers[{i}]", f"must be an integer, not {_json_type(n)}")
            elif not 1 <= n <= total_parts:
                c.add(f"partNumbers[{i}]", f"must be between 1 and {total_parts} (got {_clip(str(n))})")
            elif n in seen:
                c.add(f"partNumbers[{i}]", f"part {n} is listed twice")
            else:
                seen.add(n)


def select_parts(payload: Any, total_parts: int) -> list[int]:
    """Which part numbers a part-urls request asks for (SPEC 3.2); None/{} means all of them."""
    c, payload = _body_object({} if payload is None else payload, _SELECTION_FIELDS, "part selection")
    numbers = payload.get("partNumbers")
    start = payload.get("startPartNumber")
    count = payload.get("count")
    if numbers is not None and (start is not None or count is not None):
        c.add("partNumbers", "use either partNumbers or startPartNumber/count, not both")
        _raise_if(c, "part selection")
    if numbers is not None:
        _listed_parts(c, numbers, total_parts)
        _raise_if(c, "part selection")
        return list(numbers)
    if start is None:
        start = 1
    elif not _is_int(start):
        c.add("startPartNumber", f"must be an integer, not {_json_type(start)}")
    elif not 1 <= start <= total_parts:
        c.add("startPartNumber", f"must be between 1 and {total_parts} (got {_clip(str(start))})")
    if count is None:
        count = total_parts
    elif not _is_int(count):
        c.add("count", f"must be an integer, not {_json_type(count)}")
    elif not 1 <= count <= MAX_PARTS:
        c.add("count", f"must be between 1 and {MAX_PARTS} (got {_clip(str(count))})")
    _raise_if(c, "part selection")
    return list(range(start, min(start + count - 1, total_parts) + 1))


def completed_parts(payload: Any, total_parts: int, *, required: bool) -> list[tuple[int, str]]:
    """The (partNumber, etag) list of a complete request: every part 1..total_parts exactly once."""
    c, payload = _body_object({} if payload is None else payload, _COMPLETE_FIELDS, "completion")
    parts = payload.get("parts")
    out: list[tuple[int, str]] = []
    if parts is None:
        if required:
            c.add("parts", f"is required: list all {total_parts} parts with their ETags")
    elif not isinstance(parts, list):
        c.add("parts", f"must be an array, not {_json_type(parts)}")
    elif len(parts) > MAX_PARTS:
        c.add("parts", f"must contain at most {MAX_PARTS} parts")
    else:
        seen: set[int] = set()
        for i, p in enumerate(parts):
            entry = _completed_part(c, p, f"parts[{i}]", total_parts, seen)
            if entry is not None:
                seen.add(entry[0])
                out.append(entry)
        if required and not c.errors:
            missing = [n for n in range(1, total_parts + 1) if n not in seen]
            if missing:
                shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
                c.add("parts", f"must list every part 1..{total_parts}; missing {len(missing)}: {shown}")
    _raise_if(c, "completion")
    return sorted(out)


def _completed_part(c: _Collector, p: Any, path: str, total_parts: int, seen: set[int]) -> tuple[int, str] | None:
    """One {partNumber, etag} of a complete request, or None when it is wrong (its errors noted)."""
    if not isinstance(p, dict):
        c.add(path, f"must be an object, not {_json_type(p)}")
        return None
    c.unknown_fields(p, _PART_FIELDS, f"{path}.")
    raw_n = p.get("partNumber")
    etag = p.get("etag")
    n: int | None = None
    if not _is_int(raw_n):
        c.add(f"{path}.partNumber", "is required" if raw_n is None else f"must be an integer, not {_json_type(raw_n)}")
    elif not 1 <= raw_n <= total_parts:
        c.add(f"{path}.partNumber", f"must be between 1 and {total_parts} (got {_clip(str(raw_n))})")
    elif raw_n in seen:
        c.add(f"{path}.partNumber", f"part {raw_n} is listed twice")
    else:
        n = raw_n
    if not isinstance(etag, str) or not etag.strip('" '):
        c.add(f"{path}.etag", "is required (the ETag header S3 returned for the part)"
              if etag is None else "must be a non-empty string")  # fmt: skip
    elif len(etag) > MAX_ETAG_CHARS:
        c.add(f"{path}.etag", "is too long")
    elif not (etag.isascii() and etag.isprintable()):
        c.add(f"{path}.etag", "must be printable ASCII, as S3 returns it (a quoted hex digest)")
    elif n is not None:
        return n, etag
    return None
