"""The documents the API shows, built from records and snapshots (also used by `spatialgen-admin sessions show`).

Pure functions; the Structs they fill are in app/domain/answers.py.
"""

from __future__ import annotations

from typing import Any

from msgspec import UNSET

from app.domain.answers import (
    CompletedFileView,
    FileProgressView,
    GroupStatusView,
    UploadFileView,
    UploadGroupCreated,
)
from app.domain.clock import iso_ms
from app.domain.lifecycle import TRACKED_FILE, FileStatus, GroupStatus
from app.domain.records import FileRecord, GroupRecord
from app.state import GroupSnapshot
from app.state.keys import Field


def file_fields(f: FileRecord, status: FileStatus, algorithm: str | None = None) -> dict[str, Any]:
    """The file fields every file view shares (SPEC 3.1 response); `checksumAlgorithm` only when it has one."""
    fields = {
        "upload_id": f.upload_id,
        "file_role": f.role.value,
        "file_name": f.name,
        "total_bytes": f.total_bytes,
        "part_size_bytes": f.part_size,
        "total_parts": f.total_parts,
        "upload_strategy": f.strategy.value,
        "status": status.value,
    }
    if algorithm:
        fields["checksum_algorithm"] = algorithm
    return fields


def created_view(record: GroupRecord) -> UploadGroupCreated:
    """The 201 answer of Start Upload Group (on the create hot path: no intermediate dicts)."""
    initialized = FileStatus.INITIALIZED.value
    files = [
        UploadFileView(
            upload_id=f.upload_id, file_role=f.role.value, file_name=f.name, total_bytes=f.total_bytes,
            part_size_bytes=f.part_size, total_parts=f.total_parts, upload_strategy=f.strategy.value,
            status=initialized,
            checksum_algorithm=f.checksum_algorithm.value if f.checksum_algorithm is not None else UNSET,
        )
        for f in record.files
    ]  # fmt: skip
    return UploadGroupCreated(
        session_id=record.session_id, expires_at=iso_ms(record.expires_ms), video_name=record.video_name,
        file_count=len(record.files), files=files,
    )  # fmt: skip


def completed_view(snap: GroupSnapshot, f: FileRecord) -> CompletedFileView:
    """The answer of Complete File Upload."""
    return CompletedFileView(
        **file_fields(f, snap.file_status(f.upload_id), snap.checksum_algorithm(f.upload_id)),
        library_id=snap.library_id, checksum=snap.checksum(f.upload_id) or UNSET,
    )  # fmt: skip


def _iso_or_none(ms: int | None) -> str | None:
    return iso_ms(ms) if ms is not None else None


def _failure(snap: GroupSnapshot, upload_id: str, status: FileStatus) -> tuple[str | None, str | None]:
    failure = snap.failure(upload_id) if status is FileStatus.FAILED else None
    return (None, None) if failure is None else (failure[0].value, failure[1])


def group_status_view(snap: GroupSnapshot, now: int) -> GroupStatusView:
    """The status document of a group (SPEC 3.5)."""
    r = snap.record
    status = snap.shown_status(now)
    files = []
    for f in r.files:
        progress = snap.progress(f.upload_id)
        fstatus = snap.file_status(f.upload_id)
        if status is GroupStatus.EXPIRED and fstatus in TRACKED_FILE:
            fstatus = FileStatus.EXPIRED
        failure_reason, failure_detail = _failure(snap, f.upload_id, fstatus)
        files.append(
            FileProgressView(
                **file_fields(f, fstatus, snap.checksum_algorithm(f.upload_id)), language_tag=f.language,
                uploaded_parts=progress.parts, uploaded_bytes=progress.bytes,
                parts_refreshed_at=_iso_or_none(progress.refreshed_ms),
                failure_reason=failure_reason, failure_detail=failure_detail,
                checksum=snap.checksum(f.upload_id) or UNSET,
            )
        )  # fmt: skip
    return GroupStatusView(
        session_id=r.session_id, status=status.value, video_name=r.video_name, description=r.description,
        layout=r.layout.value, perspective=r.perspective.value if r.perspective else None, folder_name=r.folder_name,
        created_at=iso_ms(r.created_ms), updated_at=iso_ms(snap.ms(Field.UPDATED) or r.created_ms),
        expires_at=iso_ms(r.expires_ms), completed_at=_iso_or_none(snap.ms(Field.COMPLETED)),
        canceled_at=_iso_or_none(snap.ms(Field.CANCELED)), library_id=snap.library_id, processing=snap.handoff,
        file_count=len(r.files),
        files=files,
    )  # fmt: skip
