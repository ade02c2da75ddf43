"""The rules of a Start Upload Group request (SPEC 3.1): the typed fast path and the full walk.

A body is first decoded straight into the contract's Struct (app/domain/contract.py: msgspec checks types and
declared limits in C), and a few cheap checks remain. A body that the fast path does not accept whole goes the
reference way, `validate_start_request` over the untyped JSON, which reads its limits from the same declarations
and reports every violation at once. The fast path only ever accepts what the reference accepts, with the same
result (tests/unit/test_fast_start.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from app.domain import errors
from app.domain.contract import (
    EXTENSIONS,
    LANGUAGES_BY_ROLE,
    ChecksumAlgorithm,
    FileRole,
    LanguageTag,
    Layout,
    Perspective,
    StartFile,
    StartUploadRequest,
    declared,
)
from app.domain.validation import (
    INVISIBLE,
    PLAIN_TEXT,
    Violations,
    bad_chars,
    body_object,
    clip,
    decode_json_body,
    is_int,
    json_type,
    wire_names,
)

_LAYOUTS = {m.value: m for m in Layout}
_PERSPECTIVES = {m.value: m for m in Perspective}
_ROLES = {m.value: m for m in FileRole}
_VIDEO_NAME = declared(StartUploadRequest, "video_name")
_FOLDER_NAME = declared(StartUploadRequest, "folder_name")
_DESCRIPTION = declared(StartUploadRequest, "description")
_FILE_NAME = declared(StartFile, "file_name")
_SIZE = declared(StartFile, "size_bytes")
ALL_CHECKSUMS = tuple(a.value for a in ChecksumAlgorithm)
_DESCRIPTION_CONTROLS = "\t\n\r"
"""A description may hold tabs and line breaks; names may not."""


def file_extension(file_name: str) -> str:
    """The lowercase extension (with dot) of a file name, or '' if none."""
    dot = file_name.rfind(".")
    return file_name[dot:].lower() if dot > 0 else ""


def parse_start_request(
    body: bytes, *, max_file_bytes: int, max_files: int, checksum_algorithms: Sequence[str] = ALL_CHECKSUMS
) -> StartUploadRequest:
    """Decode and validate a start body: the validated request, or one 400 listing every violation.

    max_file_bytes and max_files are the configured bounds (SPATIALGEN_MAX_FILE_BYTES, ..._MAX_FILES_PER_GROUP),
    at most the contract's declared ones; checksum_algorithms the ones the store verifies
    (SPATIALGEN_S3_CHECKSUM_ALGORITHMS).
    """
    fast = fast_start_request(
        body, max_file_bytes=max_file_bytes, max_files=max_files, checksum_algorithms=checksum_algorithms
    )
    if fast is not None:
        return fast
    return validate_start_request(
        decode_json_body(body), max_file_bytes=max_file_bytes, max_files=max_files,
        checksum_algorithms=checksum_algorithms,
    )  # fmt: skip


_typed_start = msgspec.json.Decoder(StartUploadRequest)


def _fast_name(value: str, limits: dict[str, int], *, trim: bool) -> str | None:
    """A name as the walk would accept it (visible characters within its limits, no forbidden ones), else None."""
    if trim:
        value = value.strip()
    if not limits["min_length"] <= len(value) <= limits["max_length"]:
        return None
    return None if INVISIBLE.fullmatch(value) or not PLAIN_TEXT.fullmatch(value) else value


def fast_start_request(
    body: bytes, *, max_file_bytes: int, max_files: int, checksum_algorithms: Sequence[str] = ALL_CHECKSUMS
) -> StartUploadRequest | None:
    """The validated request if the body is valid in every respect, else None (the caller takes the walk)."""
    try:
        typed = _typed_start.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        return None
    video_name = _fast_name(typed.video_name, _VIDEO_NAME, trim=True)
    folder_name = None if typed.folder_name is None else _fast_name(typed.folder_name, _FOLDER_NAME, trim=True)
    if video_name is None or (typed.folder_name is not None and folder_name is None) or len(typed.files) > max_files:
        return None
    if typed.description is not None and bad_chars(typed.description, _DESCRIPTION_CONTROLS):
        return None
    files: list[StartFile | None] = []
    for f in typed.files:
        name = _fast_name(f.file_name, _FILE_NAME, trim=False)
        allowed = LANGUAGES_BY_ROLE.get(f.file_role)
        tag = f.language_tag
        if (
            name is None
            or f.size_bytes > max_file_bytes
            or file_extension(name) not in EXTENSIONS[f.file_role]
            or (tag is not None if allowed is None else tag not in allowed)
            or (f.checksum_algorithm is not None and f.checksum_algorithm.value not in checksum_algorithms)
        ):
            return None
        files.append(f)
    found = Violations()
    _check_group_rules(found, typed.layout, typed.perspective, files)
    if found.errors:
        return None
    return msgspec.structs.replace(
        typed, video_name=video_name, folder_name=folder_name, files=[f for f in files if f is not None]
    )


def validate_start_request(
    payload: Any, *, max_file_bytes: int, max_files: int, checksum_algorithms: Sequence[str] = ALL_CHECKSUMS
) -> StartUploadRequest:
    """Check a decoded start body against every rule of SPEC 3.1; raise one 400 listing all violations.

    A checksumAlgorithm the store does not verify is a 400 checksum_unsupported (listing `supported`) when it is
    the body's only problem, and one more violation of the invalid_request otherwise."""
    found, payload = body_object(payload, StartUploadRequest, "request")
    video_name = found.text(payload, "videoName", "videoName", _VIDEO_NAME, required=True, trim=True)
    description = found.text(payload, "description", "description", _DESCRIPTION, required=False,
                             allowed_controls=_DESCRIPTION_CONTROLS)  # fmt: skip
    layout = found.choice(payload, "layout", "layout", _LAYOUTS, required=True)
    perspective = found.choice(payload, "perspective", "perspective", _PERSPECTIVES, required=False)
    folder_name = found.text(payload, "folderName", "folderName", _FOLDER_NAME, required=False, trim=True)

    files: list[StartFile | None] = []
    raw_files = payload.get("files")
    if raw_files is None:
        found.add("files", "is required (an array of at least one file)")
    elif not isinstance(raw_files, list):
        found.add("files", f"must be an array, not {json_type(raw_files)}")
    elif not raw_files:
        found.add("files", "must contain at least one file")
    elif len(raw_files) > max_files:
        found.add("files", f"must contain at most {max_files} files (got {len(raw_files)})")
    else:
        files = [_validate_file(found, raw, f"files[{i}]", max_file_bytes) for i, raw in enumerate(raw_files)]
        algorithms = [_checksum_algorithm(found, raw, f"files[{i}]", checksum_algorithms)
                      for i, raw in enumerate(raw_files)]  # fmt: skip
        files = [f if f is None or a is None else msgspec.structs.replace(f, checksum_algorithm=a)
                 for f, a in zip(files, algorithms, strict=True)]  # fmt: skip

    if files:
        _check_group_rules(found, layout, perspective, files)
    unsupported = [e for e in found.errors if e.message.startswith(_UNSUPPORTED)]
    if unsupported and len(unsupported) == len(found.errors):
        first = unsupported[0]
        raise errors.CHECKSUM_UNSUPPORTED(
            f"{first.path} {first.message}", errors=unsupported, extra={"supported": list(checksum_algorithms)}
        )
    if found.errors:
        n, first = len(found.errors), found.errors[0]
        raise errors.INVALID_REQUEST(
            f"{n} problem{'s' if n > 1 else ''} in the request: {first.path} {first.message}"
            + ("" if n == 1 else f" (and {n - 1} more)"),
            errors=found.errors,
        )
    assert video_name is not None and layout is not None  # guaranteed when no errors
    return StartUploadRequest(
        video_name=video_name, layout=layout, files=[f for f in files if f is not None], description=description,
        perspective=perspective, folder_name=folder_name,
    )  # fmt: skip


_FILE_FIELDS = wire_names(StartFile)


def _validate_file(found: Violations, raw: Any, path: str, max_file_bytes: int) -> StartFile | None:
    if not isinstance(raw, dict):
        found.add(path, f"must be an object, not {json_type(raw)}")
        return None
    before = len(found.errors)
    found.unknown_fields(raw, _FILE_FIELDS, f"{path}.")
    name = found.text(raw, "fileName", f"{path}.fileName", _FILE_NAME, required=True)
    role: FileRole | None = found.choice(raw, "fileRole", f"{path}.fileRole", _ROLES, required=True)
    size = _size(found, raw.get("sizeBytes"), f"{path}.sizeBytes", min(max_file_bytes, _SIZE["le"]))
    language: LanguageTag | None = None
    if role is not None:
        language = _language(found, raw.get("languageTag"), f"{path}.languageTag", role)
        if name is not None and file_extension(name) not in EXTENSIONS[role]:
            endings = " or ".join(EXTENSIONS[role])
            found.add(f"{path}.fileName", f"a {role.value} file must end in {endings} (got {clip(name)!r})")
    if len(found.errors) > before or name is None or role is None or size is None:
        # Keep the role for the group rules even when other fields of this file are wrong.
        return StartFile(file_name=name or "", file_role=role, size_bytes=1) if role is not None else None
    return StartFile(file_name=name, file_role=role, size_bytes=size, language_tag=language)


_UNSUPPORTED = "is not a checksum algorithm this store verifies"


def _checksum_algorithm(found: Violations, raw: Any, path: str, supported: Sequence[str]) -> ChecksumAlgorithm | None:
    """A file's checksumAlgorithm: absent, or one the store verifies (SPATIALGEN_S3_CHECKSUM_ALGORITHMS)."""
    value = raw.get("checksumAlgorithm") if isinstance(raw, dict) else None
    if value is None:
        return None
    if not isinstance(value, str):
        found.add(f"{path}.checksumAlgorithm", f"must be a string, not {json_type(value)}")
    elif value not in supported or value not in ALL_CHECKSUMS:
        takes = ", ".join(supported) or "none"
        found.add(f"{path}.checksumAlgorithm", f"{_UNSUPPORTED} ({clip(value)!r}; it takes: {takes})")
    else:
        return ChecksumAlgorithm(value)
    return None


def _size(found: Violations, size: Any, path: str, max_file_bytes: int) -> int | None:
    """A file's sizeBytes: a positive integer up to the largest object accepted."""
    if size is None:
        found.add(path, "is required")
    elif not is_int(size):
        found.add(path, f"must be an integer, not {json_type(size)}")
    elif size < _SIZE["ge"]:
        found.add(path, f"must be a positive integer (got {size})")
    elif size > max_file_bytes:
        found.add(path, f"must be at most {max_file_bytes} bytes (got {clip(str(size))})")
    else:
        return size
    return None


def _language(found: Violations, tag: Any, path: str, role: FileRole) -> LanguageTag | None:
    """A file's languageTag, lowercased: required for audio and subtitles, absent for every other role."""
    allowed = LANGUAGES_BY_ROLE.get(role)
    if allowed is None:
        if tag is not None:
            found.add(path, f"must be omitted for fileRole {role.value}")
    elif tag is None:
        found.add(path, f"is required for fileRole {role.value} (a language-only tag such as 'en')")
    elif not isinstance(tag, str):
        found.add(path, f"must be a string, not {json_type(tag)}")
    elif tag.lower() not in allowed:
        found.add(path, _language_hint(tag, role, allowed))
    else:
        return LanguageTag(tag.lower())
    return None


def _language_hint(tag: str, role: FileRole, allowed: frozenset[str]) -> str:
    """Why a tag is refused, and what to send instead: `en-US` -> `en`, `zxx` on a subtitle, or the list."""
    lowered = tag.lower()
    if lowered == "zxx":
        return f"{clip(tag)!r} is not a supported language tag (zxx is only for audio)"
    primary = lowered.replace("_", "-").split("-", 1)[0]
    if primary != lowered and primary in allowed:
        return f"{clip(tag)!r} is not a supported language tag: send the language only, {primary!r}"
    return (f"{clip(tag)!r} is not a supported language tag: send a two-letter language-only tag, one of "
            f"{' '.join(sorted(allowed))}")  # fmt: skip


def _check_group_rules(
    found: Violations, layout: Layout | None, perspective: Perspective | None, files: list[StartFile | None]
) -> None:
    by_role: dict[FileRole, list[int]] = {}
    for i, f in enumerate(files):
        if f is not None:
            by_role.setdefault(f.file_role, []).append(i)
    if layout is not None:
        _check_video_roles(found, layout, by_role)
    for role in (FileRole.AIME, FileRole.FCPXMLD):
        for i in by_role.get(role, [])[1:]:
            found.add(f"files[{i}].fileRole", f"at most one {role.value} file is allowed per group")
    if layout is Layout.AIV:
        _check_aiv(found, perspective, files, by_role)


def _check_video_roles(found: Violations, layout: Layout, by_role: dict[FileRole, list[int]]) -> None:
    """Separate takes exactly one left and one right video and no main video; every other layout the reverse."""
    wanted, refused = (
        ((FileRole.VIDEO_LEFT, FileRole.VIDEO_RIGHT), (FileRole.VIDEO,))
        if layout is Layout.SEPARATE
        else ((FileRole.VIDEO,), (FileRole.VIDEO_LEFT, FileRole.VIDEO_RIGHT))
    )
    for role in wanted:
        where = by_role.get(role, [])
        if not where:
            found.add("files", f"layout {layout.value} requires exactly one {role.value} file")
        for i in where[1:]:
            found.add(f"files[{i}].fileRole", f"only one {role.value} file is allowed")
    for role in refused:
        for i in by_role.get(role, []):
            found.add(f"files[{i}].fileRole", f"layout {layout.value} does not allow {role.value} files")


def _check_aiv(
    found: Violations,
    perspective: Perspective | None,
    files: list[StartFile | None],
    by_role: dict[FileRole, list[int]],
) -> None:
    """Apple Immersive Video: perspective 180, and an .aivu video or both metadata files."""
    if perspective is not Perspective.HALF:
        found.add("perspective", "layout AIV requires perspective 180")
    has_aivu = any(
        (f := files[i]) is not None and file_extension(f.file_name) == ".aivu" for i in by_role.get(FileRole.VIDEO, [])
    )
    if not has_aivu and not (by_role.get(FileRole.AIME) and by_role.get(FileRole.FCPXMLD)):
        found.add("files", "layout AIV requires a video file ending in .aivu, or both an aime and an fcpxmld file")
