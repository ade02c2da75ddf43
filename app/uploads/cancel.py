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
from app.settings import Settings
from app.state import UploadState
from app.state.apikeys import Principal
from app.state.jobs import ending
from app.upkeep import identity
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
    end = ending(settings, session_id, snap.record.key_prefix)
    reply = await service.state.cancel_group(snap.record, now_ms=now, end=end)
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


async def purge_group(state: UploadState, store: ObjectStore, settings: Settings, session_id: str) -> dict[str, int]:
    """Abort every open multipart upload and delete every object of a canceled, expired or failed group.

    Only on positive evidence: the group's state says it ended so, or (its keys dropped early by its account's cap
    of ended groups) its end record does. A live or completed group, or one Redis knows nothing of, is never
    purged; nor is anything while Redis is not the one the objects were written with (the job retries later).
    """
    snap = await state.snapshot(session_id)
    ended = await state.end_record(session_id) if snap is None else None
    if snap is not None and snap.status not in PURGED_GROUP:
        return {"aborted": 0, "deleted": 0}  # never purge a live or completed group
    if snap is None and ended is None:
        return {"aborted": 0, "deleted": 0}  # no record and no end record: nothing to go by
    if not await identity.guard(state.redis, store, settings.storage.key_prefix, f"purge of {session_id}"):
        raise PurgeRefused(session_id)
    if snap is not None:
        prefix, keys = snap.record.key_prefix, [snap.record.storage_key(f) for f in snap.record.files]
    else:
        assert ended is not None
        prefix = ended[1]
        keys = [o.key async for page in store.object_pages(prefix) for o in page]
    aborted = 0
    for u in await store.list_open_uploads(prefix):
        aborted += await store.abort_multipart(u.key, u.upload_id)
    await store.delete_objects(keys)
    return {"aborted": aborted, "deleted": len(keys)}


class PurgeRefused(Exception):
    """Storage was not purged because Redis is not the one its objects were written with; retried later."""
