"""What to upload (an asset set of local files) and the service's rules it must meet, checked before any request.

The rules are the service's own, imported from its pure domain layer (app/domain: msgspec and the standard library
only, shipped with the client), so the client finds exactly what the service would, in the same words.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.client import checksums
from app.client.errors import InvalidUpload, Problem
from app.domain.contract import MAX_FILES_PER_GROUP, MAX_OBJECT_BYTES, FileRole, Layout, Perspective
from app.domain.errors import ApiError
from app.domain.rules import validate_start_request

LAYOUTS = tuple(m.value for m in Layout)
PERSPECTIVES = tuple(m.value for m in Perspective)
ROLES = tuple(m.value for m in FileRole)


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
    checksum: str | None = checksums.DEFAULT
    """Each file's checksum algorithm (CRC64NVME, CRC32C, SHA256, ...); None: no checksums."""


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
    if spec.checksum is not None and spec.checksum not in checksums.ALGORITHMS:
        problems.append(Problem("checksum", f"{spec.checksum!r} is not one of {', '.join(checksums.ALGORITHMS)}"))
    if problems:
        raise InvalidUpload(problems)
    if spec.checksum is not None:  # checked by the service against what its store verifies
        for item in body["files"]:
            item["checksumAlgorithm"] = spec.checksum
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


# --- the service's rules: the same walk the service runs (app/domain/rules.py), so the same verdict and words --


def check_start_body(body: Mapping[str, Any]) -> list[Problem]:
    """Every SPEC 3.1 violation in a start body the client built, in the service's order and words.

    The limits the service is configured with (files per group, largest file) are its business: this checks
    against the contract's own bounds, and the service refuses what its settings refuse.
    """
    try:
        validate_start_request(dict(body), max_file_bytes=MAX_OBJECT_BYTES, max_files=MAX_FILES_PER_GROUP)
    except ApiError as exc:
        return [Problem(e.path, e.message) for e in exc.errors or []]
    return []
