"""What every step's API half needs: the settings, Redis state, the signer, storage and the clock, and the lookups
every route starts with (the caller's group or file, or a 404; a live group, or its 409; a rate-limit token).

The steps themselves are the modules beside this one; the HTTP layer calls them with this service.
"""

from __future__ import annotations

import re

from app.domain.clock import SYSTEM_CLOCK, Clock
from app.domain.errors import FILE_NOT_FOUND, SESSION_NOT_FOUND
from app.domain.lifecycle import LIVE_GROUP
from app.domain.limits import RateState, RouteClass
from app.domain.records import FileRecord
from app.settings import Settings
from app.state import GroupSnapshot, UploadState
from app.state.apikeys import Principal
from app.storage.lazy import LazyObjectStore
from app.storage.signer import Signer
from app.uploads.refusals import group_refusal, rate_limited

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class UploadService:
    """The API side of the upload steps: Redis state, the URL signer and (to provision a file a client waits for)
    storage. It never waits on storage otherwise."""

    def __init__(
        self, settings: Settings, state: UploadState, signer: Signer | None = None,
        storage: LazyObjectStore | None = None, clock: Clock = SYSTEM_CLOCK,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.state = state
        self.storage = storage  # to provision a file a client is waiting for (None: leave it to workers)
        self.clock = clock
        self.rates = settings.limits.rates()
        self.signer = signer or Signer.from_settings(
            settings.storage, offload_min_parts=settings.api.sign_offload_min_parts
        )

    async def take_token(self, principal: Principal, route_class: RouteClass) -> RateState:
        """One request's token from the caller's bucket for this route class, or a 429."""
        rate = await self.state.take_token(principal.key_id, principal.account, route_class, self.rates[route_class])
        if not rate.allowed:
            raise rate_limited(route_class, rate)
        return rate

    async def load_group(self, principal: Principal, session_id: str) -> GroupSnapshot:
        """The caller's group, or 404 (also for another account's group: its existence is not revealed)."""
        snap = await self.state.snapshot(session_id) if UUID_RE.fullmatch(session_id) else None
        if snap is None or snap.record.account != principal.account:
            raise SESSION_NOT_FOUND(f"No upload group {session_id[:64]!r} for this account.")
        return snap

    async def load_file(
        self, principal: Principal, session_id: str, upload_id: str
    ) -> tuple[GroupSnapshot, FileRecord]:
        """The caller's group and one of its files, or 404."""
        snap = await self.load_group(principal, session_id)
        f = snap.record.file(upload_id)
        if f is None:
            raise FILE_NOT_FOUND(f"No file {upload_id[:64]!r} in upload group {session_id}.")
        return snap, f

    @staticmethod
    def ensure_live(snap: GroupSnapshot, now: int) -> None:
        """409 unless the group still accepts uploads (past expiresAt counts as expired, swept or not)."""
        status = snap.shown_status(now)
        if status not in LIVE_GROUP:
            raise group_refusal(snap, status)
