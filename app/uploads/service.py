"""What every step's API half needs: the settings, Redis state, the signer, storage and the clock, and the lookups
every route starts with (the caller's group or file, or a 404; a live group, or its 409; the tokens a request
costs).

The steps themselves are the modules beside this one; the HTTP layer calls them with this service.
"""

from __future__ import annotations

import re

from app.domain import errors
from app.domain.clock import SYSTEM_CLOCK, Clock
from app.domain.errors import FILE_NOT_FOUND, SESSION_NOT_FOUND
from app.domain.lifecycle import LIVE_GROUP
from app.domain.limits import Charge
from app.domain.records import FileRecord
from app.settings import Settings
from app.state import GroupSnapshot, UploadState
from app.state.apikeys import Principal
from app.state.settled import Settled
from app.storage.lazy import LazyObjectStore
from app.storage.signer import Signer
from app.uploads.refusals import group_refusal, rate_limited, too_costly

MAX_STREAMS_PER_KEY = 4
"""Large part-urls answers one API key may have in flight at once in one API process (each holds one piece of
URLs and a few sends of buffers while its client reads)."""


class StreamSlot:
    """One large answer in flight for a key; `close` (once) gives the slot back."""

    __slots__ = ("_key", "_owner")

    def __init__(self, owner: Streams, key: str) -> None:
        self._owner: Streams | None = owner
        self._key = key

    def close(self) -> None:
        """The answer was sent (or abandoned): free its slot."""
        owner, self._owner = self._owner, None
        if owner is not None:
            owner.release(self._key)


class Streams:
    """The large part-urls answers this process is sending, counted per key."""

    def __init__(self, per_key: int = MAX_STREAMS_PER_KEY) -> None:
        self.per_key = per_key
        self._open: dict[str, int] = {}

    def open(self, key_id: str) -> StreamSlot:
        """A slot for one more answer of this key, or a 429 while it has `per_key` of them unread."""
        held = self._open.get(key_id, 0)
        if held >= self.per_key:
            raise errors.RATE_LIMITED(
                f"This API key already has {held} large part-urls answers being sent by this server; read them "
                "before asking for more, or ask for fewer parts per call.", headers={"Retry-After": "1"},
            )  # fmt: skip
        self._open[key_id] = held + 1
        return StreamSlot(self, key_id)

    def release(self, key_id: str) -> None:
        """One answer of this key is done."""
        left = self._open.get(key_id, 0) - 1
        if left > 0:
            self._open[key_id] = left
        else:
            self._open.pop(key_id, None)

    @property
    def in_flight(self) -> int:
        """Large answers being sent now."""
        return sum(self._open.values())


UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class UploadService:
    """The API side of the upload steps: Redis state, the URL signer and (to provision a file a client waits for)
    storage. It never waits on storage otherwise."""

    def __init__(
        self, settings: Settings, state: UploadState, signer: Signer | None = None,
        storage: LazyObjectStore | None = None, *, clock: Clock = SYSTEM_CLOCK, settled: Settled | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.state = state
        self.settled = settled  # wakes completion waits (None: they poll)
        self.storage = storage  # to provision a file a client is waiting for (None: leave it to workers)
        self.clock = clock
        self.rates = settings.limits.rates()
        self.streams = Streams()
        self.signer = signer or Signer.from_settings(
            settings.storage, offload_min_parts=settings.api.sign_offload_min_parts
        )

    async def charge(self, principal: Principal, charge: Charge | None, tokens: int, *, capped: bool = True) -> None:
        """`tokens` more from the request's bucket, once its work is known, or a 429 (a 400 for a cost the bucket can
        never hold, unless `capped`: then it costs a full bucket). No charge: a caller outside HTTP, nothing taken."""
        if charge is None or tokens <= 0:
            return
        route_class = charge.route_class
        rate = await self.state.take_token(
            principal.key_id, principal.account, route_class, self.rates[route_class], cost=tokens, capped=capped
        )
        charge.took(rate, tokens)
        if rate.allowed:
            return
        if rate.retry_ms < 0:
            raise too_costly(route_class, rate, charge.spent + tokens)
        raise rate_limited(route_class, rate, charge.spent + tokens)

    async def afford(self, principal: Principal, charge: Charge | None, tokens: int) -> bool:
        """Like `charge`, for optional work: False (nothing taken, no error) when the bucket cannot pay now."""
        if charge is None or tokens <= 0:
            return True
        route_class = charge.route_class
        rate = await self.state.take_token(
            principal.key_id, principal.account, route_class, self.rates[route_class], cost=tokens
        )
        if rate.allowed:
            charge.took(rate, tokens)
        return rate.allowed

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
