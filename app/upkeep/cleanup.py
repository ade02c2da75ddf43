"""The storage sweeps: multipart uploads and stored objects left behind, removed only on positive evidence.

A purge (app/uploads/cancel.py) removes what a canceled, expired or failed group left; these crons catch what fell
between: an upload opened by a worker that died before recording it, a second upload of one file, a purge that gave
up. They delete only what Redis says is over, never what Redis does not know:

- an object or upload of a group recorded as canceled, expired or failed (its state, or its end record once its
  other keys are gone);
- an upload of a live or completed group's file that is not the upload the record names;
- nothing of a group Redis has no record of: kept and counted (the bucket's lifecycle rule aborts stale uploads);
- nothing of a completed group's objects, ever.

Before deleting anything they check that Redis is the one the objects were written with (app/upkeep/identity.py),
and each run removes at most SPATIALGEN_SWEEP_MAX_DELETIONS. `spatialgen-admin storage sweep` shows what a run
would remove (and runs it with --confirm).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, NamedTuple

from app.domain.clock import now_ms
from app.domain.lifecycle import PURGED_GROUP, FileStatus, GroupStatus
from app.domain.objectkeys import parse_object_key, root_prefix
from app.settings import Settings
from app.state import GroupSnapshot, UploadState
from app.state.keys import METRICS_KEY, MetricField
from app.upkeep import identity

if TYPE_CHECKING:
    from app.storage.s3 import ObjectStore

log = logging.getLogger("spatialgen.upkeep")
UPLOAD, OBJECT = "upload", "object"


class Removal(NamedTuple):
    """One thing a sweep removes, and the evidence it goes by."""

    kind: str
    """UPLOAD (aborted) or OBJECT (deleted)."""
    key: str
    upload_id: str
    why: str


def object_evidence(snap: GroupSnapshot | None, ended: str | None) -> str | None:
    """Why a stored object may be deleted, or None to keep it."""
    if snap is not None:
        return f"its group was {snap.status.value}" if snap.status in PURGED_GROUP else None
    return f"its group was {ended} (end record)" if ended else None


def upload_evidence(snap: GroupSnapshot | None, ended: str | None, upload_id: str, s3_upload_id: str) -> str | None:
    """Why an open multipart upload may be aborted, or None to keep it."""
    if snap is None:
        return f"its group was {ended} (end record)" if ended else None
    if snap.status in PURGED_GROUP:
        return f"its group was {snap.status.value}"
    if snap.record.file(upload_id) is None:
        return None  # not one of the group's files: not ours to judge
    if snap.file_status(upload_id) is FileStatus.COMPLETED or snap.status is GroupStatus.COMPLETED:
        return "its file is completed"
    recorded = snap.s3_upload_id(upload_id)
    if recorded is not None and recorded != s3_upload_id:
        return "its file records another upload"
    return None  # the recorded upload, or one its provisioning will adopt


async def plan_upload_aborts(
    state: UploadState, store: ObjectStore, settings: Settings, *, now: int
) -> AsyncIterator[tuple[list[Removal], int]]:
    """Page by page: the open uploads past the grace period that may be aborted, and how many were kept unknown."""
    prefix, grace_ms = settings.storage.key_prefix, settings.sweeps.orphan_grace_seconds * 1000
    async for page in store.open_upload_pages(root_prefix(prefix)):
        old = [(u, parsed) for u in page if now - u.initiated_ms >= grace_ms
               and (parsed := parse_object_key(prefix, u.key)) is not None]  # fmt: skip
        known = await state.evidence([p.session_id for _, p in old])
        removals, unknown = [], 0
        for u, parsed in old:
            snap, ended = known[parsed.session_id]
            why = upload_evidence(snap, ended, parsed.upload_id, u.upload_id)
            unknown += snap is None and ended is None
            if why is not None:
                removals.append(Removal(UPLOAD, u.key, u.upload_id, why))
        yield removals, unknown


async def plan_object_deletions(
    state: UploadState, store: ObjectStore, settings: Settings, *, now: int
) -> AsyncIterator[tuple[list[Removal], int]]:
    """Page by page: the stored objects past the grace period that may be deleted, and how many were kept unknown."""
    prefix, grace_ms = settings.storage.key_prefix, settings.sweeps.orphan_grace_seconds * 1000
    async for page in store.object_pages(root_prefix(prefix)):
        old = [(o, parsed) for o in page if now - o.modified_ms >= grace_ms
               and (parsed := parse_object_key(prefix, o.key)) is not None]  # fmt: skip
        known = await state.evidence([p.session_id for _, p in old])
        removals, unknown = [], 0
        for o, parsed in old:
            snap, ended = known[parsed.session_id]
            why = object_evidence(snap, ended)
            unknown += snap is None and ended is None
            if why is not None:
                removals.append(Removal(OBJECT, o.key, "", why))
        yield removals, unknown


async def _run(
    plan: AsyncIterator[tuple[list[Removal], int]], store: ObjectStore, state: UploadState, settings: Settings,
    what: str,
) -> int:  # fmt: skip
    """Carry out a plan page by page, up to the cap; returns how many things were removed."""
    cap = settings.sweeps.sweep_max_deletions
    removed = unknown = 0
    async for removals, kept in plan:
        unknown += kept
        todo = removals[: max(0, cap - removed)]
        for r in (r for r in todo if r.kind == UPLOAD):
            removed += await store.abort_multipart(r.key, r.upload_id)
        objects = [r.key for r in todo if r.kind == OBJECT]
        if objects:
            await store.delete_objects(objects)
            removed += len(objects)
        if len(todo) < len(removals):
            log.warning("%s stopped at SPATIALGEN_SWEEP_MAX_DELETIONS (%d); the rest waits for the next run", what, cap)
            with contextlib.suppress(Exception):
                await state.redis.hincrby(METRICS_KEY, MetricField.DELETIONS_CAPPED, 1)  # type: ignore[misc]
            break
    if removed:
        log.warning("%s removed %d", what, removed)
    if unknown:
        log.info("%s kept %d of groups Redis has no record of (never removed on absence)", what, unknown)
    return removed


async def abort_orphan_uploads(
    state: UploadState, store: ObjectStore, settings: Settings, *, now: int | None = None
) -> int:
    """Abort the open multipart uploads the evidence allows (see the module header); returns how many."""
    what = "the orphan-upload sweep"
    if not await identity.guard(state.redis, store, settings.storage.key_prefix, what):
        return 0
    now = now_ms() if now is None else now
    return await _run(plan_upload_aborts(state, store, settings, now=now), store, state, settings, what)


async def reconcile_objects(
    state: UploadState, store: ObjectStore, settings: Settings, *, now: int | None = None
) -> int:
    """Delete the stored objects the evidence allows (see the module header); returns how many."""
    what = "the object reconciliation"
    if not await identity.guard(state.redis, store, settings.storage.key_prefix, what):
        return 0
    now = now_ms() if now is None else now
    return await _run(plan_object_deletions(state, store, settings, now=now), store, state, settings, what)
