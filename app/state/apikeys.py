"""API keys: random secrets shown once, stored only as a SHA-256 digest, cached briefly by the API.

A key belongs to one account and has one role; `KeyCache` keeps lookups off Redis on the hot path.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections import OrderedDict
from enum import StrEnum
from typing import TypeVar

import msgspec
from redis.asyncio import Redis

from app.domain import errors
from app.domain.clock import iso_ms, now_ms
from app.state.keys import API_KEYS_INDEX, api_key_key

V = TypeVar("V")
KEY_PREFIX = "sgk_"
ACCOUNT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Role(StrEnum):
    """What a key may do: admin and upload mutate, readonly only reads."""

    ADMIN = "admin"
    UPLOAD = "upload"
    READONLY = "readonly"


WRITE_ROLES = frozenset({Role.ADMIN, Role.UPLOAD})
READ_ROLES = frozenset(Role)
ADMIN_ROLES = frozenset({Role.ADMIN})
"""Account settings such as webhook endpoints."""


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: the account and role of a valid key."""

    account: str
    role: Role
    key_id: str


class KeyInfo(msgspec.Struct, frozen=True):
    """A stored key as listed by the admin CLI (never the secret)."""

    key_id: str
    account: str
    role: str
    label: str
    created_at: str


def digest(secret: str) -> str:
    """SHA-256 hex digest of a key; the only form stored."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def key_id_of(key_digest: str) -> str:
    """Short public id of a key (prefix of its digest), used to list and revoke."""
    return key_digest[:16]


async def create_key(redis: Redis, *, account: str, role: str, label: str = "") -> tuple[str, KeyInfo]:
    """Create a key; returns the secret (shown once) and its stored description."""
    if not ACCOUNT_PATTERN.match(account):
        raise ValueError("account must be 1-64 characters of letters, digits, '_', '.', '-' (starting alphanumeric)")
    role_value = Role(role)
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    d = digest(secret)
    created = now_ms()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(
            api_key_key(d), mapping={"account": account, "role": role_value.value, "label": label, "created": created}
        )
        pipe.zadd(API_KEYS_INDEX, {d: created})
        await pipe.execute()
    return secret, KeyInfo(key_id_of(d), account, role_value.value, label, iso_ms(created))


async def list_keys(redis: Redis) -> list[KeyInfo]:
    """Every stored key, oldest first."""
    digests = [d.decode() for d in await redis.zrange(API_KEYS_INDEX, 0, -1)]
    async with redis.pipeline(transaction=False) as pipe:
        for d in digests:
            pipe.hgetall(api_key_key(d))
        rows = await pipe.execute()
    out = []
    for d, row in zip(digests, rows, strict=True):
        if not row:
            continue
        r = {k.decode(): v.decode() for k, v in row.items()}
        out.append(KeyInfo(key_id_of(d), r["account"], r["role"], r.get("label", ""), iso_ms(int(r["created"]))))
    return out


class AmbiguousKeyId(ValueError):
    """A revoke by an id prefix that several keys share: nothing was revoked."""

    def __init__(self, key_id: str, matches: list[str]) -> None:
        super().__init__(f"{key_id!r} is the start of {len(matches)} key ids ({', '.join(matches)}); give the whole "
                         "id of the one to revoke")  # fmt: skip
        self.matches = matches


MIN_KEY_ID_CHARS = 8


async def revoke_key(redis: Redis, key_id: str) -> str | None:
    """Delete the one key whose id (its digest prefix; at least 8 characters of it may be given) starts with
    `key_id`; returns its whole id, or None when no key matches. When several keys match, nothing is revoked:
    AmbiguousKeyId names them."""
    key_id = key_id.strip().lower()
    if len(key_id) < MIN_KEY_ID_CHARS or any(c not in "0123456789abcdef" for c in key_id):
        return None
    matches = [d for d in (x.decode() for x in await redis.zrange(API_KEYS_INDEX, 0, -1)) if d.startswith(key_id)]
    if len(matches) > 1:
        raise AmbiguousKeyId(key_id, sorted(key_id_of(d) for d in matches))
    if not matches:
        return None
    (d,) = matches
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(api_key_key(d))
        pipe.zrem(API_KEYS_INDEX, d)
        await pipe.execute()
    return key_id_of(d)


class KeyCache:
    """Resolves keys to principals, caching answers (so revocation bites within `ttl` seconds).

    Two bounded least-recently-used caches: known keys, and unknown ones apart with their own smaller cap and
    shorter life, so a spray of random invalid keys can only evict other invalid keys, never a valid one.
    """

    MAX_KNOWN = 10_000
    MAX_UNKNOWN = 2_000

    def __init__(self, redis: Redis, ttl: float) -> None:
        self.redis = redis
        self.ttl = ttl
        # Unknown keys are cached for a shorter time, so a key created a moment ago works quickly.
        self.negative_ttl = min(ttl, 2.0)
        self._known: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._unknown: OrderedDict[str, float] = OrderedDict()

    async def resolve(self, secret: str | None) -> Principal:
        """The principal of a key, or a 401 ApiError."""
        if not secret:
            raise errors.MISSING_API_KEY("Send your API key in the X-SPATIALGEN-APPKEY header.")
        if len(secret) > 256:
            raise errors.INVALID_API_KEY("The API key is not valid.")
        d = digest(secret)
        now = time.monotonic()
        hit = self._known.get(d)
        if hit is not None and hit[0] > now:
            self._known.move_to_end(d)
            return hit[1]
        miss_until = self._unknown.get(d)
        if miss_until is not None and miss_until > now:
            raise errors.INVALID_API_KEY("The API key is not valid.")
        principal = await self._load(d)
        if principal is None:
            _remember(self._unknown, d, now + self.negative_ttl, self.MAX_UNKNOWN)
            self._known.pop(d, None)
            raise errors.INVALID_API_KEY("The API key is not valid.")
        _remember(self._known, d, (now + self.ttl, principal), self.MAX_KNOWN)
        self._unknown.pop(d, None)
        return principal

    async def _load(self, d: str) -> Principal | None:
        row: list[bytes | None] = await self.redis.hmget(api_key_key(d), ["account", "role"])  # type: ignore[misc]
        if row[0] is None or row[1] is None:
            return None
        return Principal(row[0].decode(), Role(row[1].decode()), key_id_of(d))


def _remember(cache: OrderedDict[str, V], key: str, value: V, cap: int) -> None:
    """Put an entry at the recent end, dropping the least recently used ones past the cap."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > cap:
        cache.popitem(last=False)
