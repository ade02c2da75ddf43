"""The storage sweeps: multipart uploads and stored objects that no group owns.

A purge (app/uploads/cancel.py) removes what a canceled, expired or failed group left; these crons catch what
fell between: an upload opened by a worker that died before recording it, a PUT that landed after the late purge,
a purge that gave up. Each listing page is dealt with before the next is read.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from app.domain.clock import now_ms
from app.domain.lifecycle import LIVE_GROUP, PURGED_GROUP
from app.domain.objectkeys import parse_object_key, root_prefix
from app.settings import Settings
from app.state import GroupSnapshot, UploadState

if TYPE_CHECKING:
    from app.storage.s3 import ObjectStore

log = logging.getLogger("spatialgen.upkeep")


async def abort_orphan_uploads(
    state: UploadState, store: ObjectStore, settings: Settings, *, now: int | None = None
) -> int:
    """Abort multipart uploads under the key prefix that no live file owns and that are past the grace period.

    Such an upload exists when a worker died between CreateMultipartUpload and recording its id, when two
    provisioning tries raced, or when a purge failed for good. An upload of a live file that is not
    recorded yet is left alone: its provisioning adopts it. Each listing page is dealt with before the
    next is read, so a sweep over millions of uploads makes progress even if it is cut short.
    """
    now = now_ms() if now is None else now
    aborted = 0
    async for page in store.open_upload_pages(root_prefix(settings.storage.key_prefix)):
        snapshots: dict[str, GroupSnapshot | None] = {}
        for u in page:
            parsed = parse_object_key(settings.storage.key_prefix, u.key)
            if now - u.initiated_ms < settings.sweeps.orphan_grace_seconds * 1000 or parsed is None:
                continue  # too young to judge, or not a key this service made (leave it to whoever did)
            if parsed.session_id not in snapshots:
                snapshots[parsed.session_id] = await state.snapshot(parsed.session_id)
            snap = snapshots[parsed.session_id]
            owned = (
                snap is not None
                and snap.status in LIVE_GROUP
                and snap.record.file(parsed.upload_id) is not None
                and snap.s3_upload_id(parsed.upload_id) in (None, u.upload_id)
            )
            if not owned:
                aborted += await store.abort_multipart(u.key, u.upload_id)
    if aborted:
        log.warning("aborted %d orphaned multipart uploads", aborted)
    return aborted


async def reconcile_objects(
    state: UploadState, store: ObjectStore, settings: Settings, *, now: int | None = None
) -> int:
    """Delete stored objects under the key prefix that belong to no live or retained group (past the grace).

    Purges delete a canceled, expired or failed group's objects; this catches what they missed (a PUT
    that landed after the late purge, a purge that gave up) and the objects of groups whose retention has
    lapsed (their keys are gone from Redis). Objects of live and completed groups are kept.
    """
    now = now_ms() if now is None else now
    deleted = 0
    async for page in store.object_pages(root_prefix(settings.storage.key_prefix)):
        snapshots: dict[str, GroupSnapshot | None] = {}
        doomed = []
        for obj in page:
            parsed = parse_object_key(settings.storage.key_prefix, obj.key)
            if now - obj.modified_ms < settings.sweeps.orphan_grace_seconds * 1000 or parsed is None:
                continue
            if parsed.session_id not in snapshots:
                snapshots[parsed.session_id] = await state.snapshot(parsed.session_id)
            snap = snapshots[parsed.session_id]
            if snap is None or snap.record.file(parsed.upload_id) is None or snap.status in PURGED_GROUP:
                doomed.append(obj.key)
        if doomed:
            await store.delete_objects(doomed)
            deleted += len(doomed)
    if deleted:
        log.warning("deleted %d stored objects no live or retained group owns", deleted)
    return deleted
