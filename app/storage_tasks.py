"""Storage work run by the arq workers: provisioning multipart uploads (and, later, completion and cleanup).

Every task is idempotent: a retried or duplicated job converges on the same storage state.
"""

from __future__ import annotations

import logging

from botocore.exceptions import BotoCoreError, ClientError

from app.models import UploadStrategy
from app.state import UploadState
from app.storage import ObjectStore, error_code

log = logging.getLogger("spatialgen.worker")


class StorageUnavailable(Exception):
    """The object store could not be reached or answered 5xx: retry later."""


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying (network, throttling, 5xx), False for client errors."""
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return status >= 500 or status == 429 or error_code(exc) in ("SlowDown", "RequestTimeout", "InternalError")
    return isinstance(exc, BotoCoreError | OSError | TimeoutError)


async def provision_group(state: UploadState, store: ObjectStore, session_id: str) -> dict[str, str]:
    """Open one S3 multipart upload per multipart file of a group and record its id.

    Crash safety: an earlier try may have created an upload and died before recording it. So
    before creating, list the open uploads under the file's key and adopt one instead of
    opening a second; extras (and our own upload, if a concurrent try recorded first) are aborted.
    """
    snap = await state.snapshot(session_id)
    if snap is None:
        return {}
    outcome: dict[str, str] = {}
    for f in snap.record.files:
        if f.strategy is not UploadStrategy.MULTIPART or snap.s3_upload_id(f.upload_id):
            continue
        existing = sorted(
            (u for u in await store.list_open_uploads(f.storage_key) if u.key == f.storage_key),
            key=lambda u: (u.initiated_ms, u.upload_id),
        )
        if existing:
            chosen = existing[0].upload_id
            for extra in existing[1:]:
                await store.abort_multipart(f.storage_key, extra.upload_id)
        else:
            chosen = await store.create_multipart(f.storage_key)
        result = await state.record_s3_upload(session_id, f.upload_id, chosen)
        if result == "ok":
            outcome[f.upload_id] = chosen
        elif result == "dead":
            # The group was canceled or expired meanwhile: leave nothing open behind it.
            await store.abort_multipart(f.storage_key, chosen)
            outcome[f.upload_id] = "aborted"
        elif result != chosen:
            await store.abort_multipart(f.storage_key, chosen)
            outcome[f.upload_id] = result
        else:
            outcome[f.upload_id] = chosen
    return outcome
