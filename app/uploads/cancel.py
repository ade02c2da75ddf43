"""Cancel (SPEC 3.4) and the purge that follows every end other than completion.

API half: `cancel_group` ends a live group in one script (its unfinished files and the group become `canceled`,
its quota use is given back) and queues two purges: one now, and one after the last URL handed out has lapsed, so
a late PUT cannot leave data behind. Worker half: `purge_group` aborts the group's open multipart uploads and
deletes its objects. Expiry and a failed verification queue the same purges.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.domain import errors
from app.domain.answers import CanceledGroupView
from app.domain.clock import iso_ms
from app.domain.lifecycle import PURGED_GROUP, GroupStatus, Reply
from app.state import UploadState
from app.state.apikeys import Principal
from app.state.jobs import purge_jobs
from app.uploads.refusals import script_refusal
from app.uploads.service import UploadService

if TYPE_CHECKING:
    from app.storage.s3 import ObjectStore


# --- API half ---------------------------------------------------------------------------------


async def cancel_group(service: UploadService, principal: Principal, session_id: str) -> CanceledGroupView:
    """Cancel a group; repeating it returns the same answer."""
    settings = service.settings
    snap = await service.load_group(principal, session_id)
    now = service.clock.now_ms()
    reply = await service.state.cancel_group(
        snap.record, now_ms=now, retention_ms=settings.uploads.retention_seconds * 1000,
        purges=purge_jobs(settings, session_id, snap.record.key_prefix),
        ended_cap=settings.limits.retained_ended_groups,
    )  # fmt: skip
    if reply.code is not Reply.OK:
        if reply.code is Reply.GROUP_STATE and reply.text() == GroupStatus.COMPLETED:
            raise errors.SESSION_COMPLETED(f"Upload group {session_id} is completed and cannot be canceled.")
        service.ensure_live(snap, now)
        raise script_refusal(snap, reply)
    return CanceledGroupView(
        session_id=session_id, status=GroupStatus.CANCELED.value, canceled_at=iso_ms(int(reply.values[0])),
        file_count=len(snap.record.files), canceled_file_count=int(reply.values[1]),
    )  # fmt: skip


# --- worker half ------------------------------------------------------------------------------


async def purge_group(state: UploadState, store: ObjectStore, session_id: str, key_prefix: str = "") -> dict[str, int]:
    """Abort every open multipart upload and delete every object of a canceled, expired or failed group.

    key_prefix: the group's storage prefix, carried by the job. When the group's keys are gone (its account's
    ended-groups cap dropped it before this purge ran), everything under the prefix goes: purge jobs are only
    queued when a group ends without completing, and session ids are never reused, so nothing live or
    completed is under it.
    """
    snap = await state.snapshot(session_id)
    if snap is None:
        if not key_prefix.endswith(f"/{session_id}/"):
            return {"aborted": 0, "deleted": 0}  # no record and no prefix of this group: nothing to go by
        prefix, keys = key_prefix, [o.key async for page in store.object_pages(key_prefix) for o in page]
    elif snap.status not in PURGED_GROUP:
        return {"aborted": 0, "deleted": 0}  # never purge a live or completed group
    else:
        prefix, keys = snap.record.key_prefix, [snap.record.storage_key(f) for f in snap.record.files]
    aborted = 0
    for u in await store.list_open_uploads(prefix):
        aborted += await store.abort_multipart(u.key, u.upload_id)
    await store.delete_objects(keys)
    return {"aborted": aborted, "deleted": len(keys)}
