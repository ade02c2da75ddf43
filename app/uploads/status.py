"""Status and progress (SPEC 3.5): the group document, a file's received parts, and the tracking behind them.

API half: `group_status` and `received_parts` read what workers recorded, and ask for a refresh when it is older
than SPATIALGEN_PARTS_STALENESS_SECONDS. Worker half: `refresh_group_parts` asks storage (ListParts, or HeadObject for
a single PUT) for each of the group's files still in play and records the parts and bytes received. A refresh is one
job per group, queued like any other work (never ahead of other tenants'), so however many readers poll however
many files, a group costs at most one refresh in flight.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from app.domain.answers import GroupStatusView, ReceivedPart, ReceivedPartsView
from app.domain.clock import iso_ms, now_ms
from app.domain.contract import UploadStrategy
from app.domain.lifecycle import LIVE_GROUP, RECEIVING_FILE, FileStatus
from app.domain.limits import Charge, refresh_cost
from app.domain.parts import part_range
from app.domain.records import FileRecord
from app.state import GroupSnapshot, Progress, UploadState
from app.state.apikeys import Principal
from app.state.jobs import REFRESH_GROUP_JOB, JobSpec, refresh_job_id
from app.uploads.polling import poll_until
from app.uploads.service import UploadService
from app.uploads.views import group_status_view

if TYPE_CHECKING:
    from app.storage.s3 import ObjectStore


# --- API half ---------------------------------------------------------------------------------


def refresh_job(service: UploadService, session_id: str) -> JobSpec:
    """A parts refresh of the group's files (deduplicated by its id while queued)."""
    return JobSpec.build(
        REFRESH_GROUP_JOB, (session_id,), job_id=refresh_job_id(session_id), queue=service.settings.worker.queue_name
    )


def _stale(service: UploadService, snap: GroupSnapshot, f: FileRecord, now: int) -> bool:
    """True if a live file's tracking is older than the staleness bound."""
    if snap.status not in LIVE_GROUP or snap.file_status(f.upload_id) not in RECEIVING_FILE:
        return False
    refreshed = snap.progress(f.upload_id).refreshed_ms
    return refreshed is None or now - refreshed > service.settings.uploads.parts_staleness_seconds * 1000


async def _refresh_affordable(
    service: UploadService, principal: Principal, snap: GroupSnapshot, charge: Charge | None
) -> bool:
    """Whether the reader's bucket pays for a refresh of the group (one token per file storage is asked about); a
    reader that cannot pay gets what is recorded, with its refreshedAt, and no refresh."""
    files = sum(1 for f in snap.record.files if snap.file_status(f.upload_id) in RECEIVING_FILE)
    return await service.afford(principal, charge, refresh_cost(files))


async def group_status(
    service: UploadService, principal: Principal, session_id: str, *, charge: Charge | None = None
) -> GroupStatusView:
    """The group with every file's state and progress; stale tracking is refreshed in the background."""
    snap = await service.load_group(principal, session_id)
    now = service.clock.now_ms()
    if any(_stale(service, snap, f, now) for f in snap.record.files) and await _refresh_affordable(
        service, principal, snap, charge
    ):
        await service.state.enqueue(refresh_job(service, session_id))
    return group_status_view(snap, now)


async def received_parts(
    service: UploadService, principal: Principal, session_id: str, upload_id: str, *, charge: Charge | None = None
) -> ReceivedPartsView:
    """What storage holds for a file, refreshed now (bounded wait) if the tracking is stale."""
    snap, f = await service.load_file(principal, session_id, upload_id)
    now = service.clock.now_ms()
    state = service.state
    parts = await state.received_parts(session_id, upload_id)
    # The part list is a short-lived cache; a summary saying parts exist but no list means it lapsed.
    lapsed = not parts and snap.progress(upload_id).parts > 0 and snap.file_status(upload_id) in RECEIVING_FILE
    if (lapsed or _stale(service, snap, f, now)) and await _refresh_affordable(service, principal, snap, charge):
        job = refresh_job(service, session_id)

        async def look() -> GroupSnapshot | None:
            # Asked again at every look: a refresh already running when we asked began before `now` and does not
            # count, and its id dedupes our request until it ends; the first look after it ends queues ours.
            await state.enqueue(job)
            return await state.snapshot(session_id)

        def fresh(s: GroupSnapshot | None) -> bool:
            refreshed = s.progress(upload_id).refreshed_ms if s is not None else now
            return refreshed is not None and refreshed >= now

        latest, _ = await poll_until(look, fresh, within=service.settings.api.parts_wait_seconds)
        snap = latest or snap
        parts = await state.received_parts(session_id, upload_id)
    refreshed = snap.progress(upload_id).refreshed_ms
    return ReceivedPartsView(
        upload_id=upload_id, status=snap.file_status(upload_id).value, total_parts=f.total_parts,
        refreshed_at=iso_ms(refreshed) if refreshed else None,
        parts=[ReceivedPart(part_number=n, etag=etag, size_bytes=size) for n, etag, size in parts],
    )  # fmt: skip


# --- worker half ------------------------------------------------------------------------------


async def refresh_parts(  # noqa: PLR0911 - one early return per file state with nothing (more) to track
    state: UploadState, store: ObjectStore, session_id: str, upload_id: str, *, now: int | None = None
) -> int:
    """Record which parts (and bytes) the store has received for one file; returns the part count."""
    now = now_ms() if now is None else now
    snap = await state.snapshot(session_id)
    f = snap.record.file(upload_id) if snap else None
    if snap is None or f is None:
        return 0
    status = snap.file_status(upload_id)
    if status in (FileStatus.CANCELED, FileStatus.EXPIRED, FileStatus.FAILED):
        return 0
    key = snap.record.storage_key(f)
    if status is FileStatus.COMPLETED:
        await state.record_parts(session_id, upload_id, None, progress=Progress(f.total_parts, f.total_bytes, now))
        return f.total_parts
    if f.strategy is UploadStrategy.SINGLE_PUT:
        size = await store.head_size(key)
        await state.record_parts(
            session_id, upload_id, [(1, "", size)] if size is not None else [],
            progress=Progress(int(size is not None), size or 0, now),
        )  # fmt: skip
        return int(size is not None)
    s3_id = snap.s3_upload_id(upload_id)
    if s3_id is None:
        return 0
    try:
        stored = await store.list_parts(key, s3_id)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
            return 0  # completed or aborted meanwhile; the next state change records the truth
        raise
    # Count only parts whose size fits their byte range: a short or oversized PUT is not "received".
    fitting = []
    for p in stored:
        lo, hi = part_range(p.part_number, f.part_size, f.total_bytes)
        if p.part_number <= f.total_parts and p.size == hi - lo:
            fitting.append(p)
    await state.record_parts(
        session_id, upload_id, [(p.part_number, p.etag, p.size) for p in stored],
        progress=Progress(len(fitting), sum(p.size for p in fitting), now),
    )  # fmt: skip
    return len(fitting)


async def refresh_group_parts(
    state: UploadState, store: ObjectStore, session_id: str, *, now: int | None = None
) -> int:
    """Refresh the tracking of every file of a live group that storage may still change; returns parts counted."""
    snap = await state.snapshot(session_id)
    if snap is None or snap.status not in LIVE_GROUP:
        return 0
    files = [f for f in snap.record.files if snap.file_status(f.upload_id) in RECEIVING_FILE]
    return sum([await refresh_parts(state, store, session_id, f.upload_id, now=now) for f in files])
