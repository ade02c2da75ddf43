"""Abuse limits on the real Valkey: per-key token buckets, per-account quotas at their edges, the admin CLI's
accounts command, idle groups, and the compact idempotency answer.
"""

from __future__ import annotations

import asyncio
import json

import msgspec
import pytest
from redis.asyncio import Redis

from app.admin.cli import run
from app.domain.errors import ApiError
from app.settings import Settings
from app.state import UploadState
from app.state.apikeys import create_key
from app.state.keys import (
    EXPIRY_INDEX,
    TRIM_QUEUE,
    account_index_key,
    ended_index_key,
    idempotency_key,
    tombstone_key,
    usage_key,
)
from app.upkeep.expiry import expire_due_groups
from tests.conftest import SEED_REQUEST, worst_case_request
from tests.integration.conftest import api_client
from worker import jobs

URL = "/api/videos/uploads"
SMALL = {"videoName": "v", "layout": "2D", "files": [{"fileName": "v.mp4", "fileRole": "video", "sizeBytes": 10}]}


async def key_of(redis: Redis, account: str) -> dict[str, str]:
    secret, _ = await create_key(redis, account=account, role="upload")
    return {"X-SPATIALGEN-APPKEY": secret}


async def test_a_burst_over_the_bucket_gets_429_with_retry_after_and_another_key_is_unaffected(
    settings: Settings, redis: Redis
) -> None:
    tight = settings.override(rate_limits="create=1/5,reads=1/3")
    async with api_client(tight) as api:
        noisy, quiet = await key_of(redis, "acme"), await key_of(redis, "acme")
        answers = [await api.post(URL, json=SMALL, headers=noisy) for _ in range(8)]
        assert [a.status_code for a in answers[:5]] == [201] * 5
        refused = [a for a in answers[5:] if a.status_code == 429]
        assert refused, [a.status_code for a in answers]
        doc = refused[0].json()
        assert doc["code"] == "rate_limited" and int(refused[0].headers["retry-after"]) >= 1
        assert refused[0].headers["ratelimit-policy"] == '"create";q=5;w=5'
        assert refused[0].headers["ratelimit"].startswith('"create";r=0;')
        ok = await api.post(URL, json=SMALL, headers=quiet)  # same account, another key: its own bucket
        assert ok.status_code == 201 and ok.headers["ratelimit"].startswith('"create";r=4;')
        # Reads have their own bucket, and every answer says where it stands (errors too).
        sid = answers[0].json()["sessionId"]
        reads = [await api.get(f"{URL}/{sid}", headers=noisy) for _ in range(5)]
        assert [r.status_code for r in reads[:3]] == [200] * 3 and reads[-1].status_code == 429
        assert all("ratelimit" in r.headers for r in reads)
        missing = await api.get(f"{URL}/00000000-0000-4000-8000-000000000000", headers=quiet)
        assert missing.status_code == 404 and missing.headers["ratelimit-policy"] == '"reads";q=3;w=3'


async def test_the_default_limits_never_trouble_a_real_pipeline(settings: Settings, redis: Redis) -> None:
    async with api_client(settings) as api:
        key = await key_of(redis, "acme")
        answers = await asyncio.gather(*(api.post(URL, json=SEED_REQUEST, headers=key) for _ in range(60)))
    assert {a.status_code for a in answers} == {201}


async def test_quotas_refuse_the_group_past_the_limit_and_free_up_when_groups_end(
    settings: Settings, redis: Redis
) -> None:
    capped = settings.override(quota_live_groups=2, quota_live_bytes=25)
    async with api_client(capped) as api:
        key = await key_of(redis, "acme")
        first = await api.post(URL, json=SMALL, headers=key)
        second = await api.post(URL, json=SMALL, headers=key)
        assert first.status_code == second.status_code == 201
        third = await api.post(URL, json=SMALL, headers=key)
        assert third.status_code == 429
        doc = third.json()
        assert doc["code"] == "quota_exceeded" and (doc["limit"], doc["max"], doc["current"]) == ("liveGroups", 2, 2)
        assert third.headers["retry-after"]
        assert await redis.hgetall(usage_key("acme")) == {b"groups": b"2", b"bytes": b"20"}
        # Cancelling gives the group back; then the bytes quota is the edge: 10 + 16 > 25.
        assert (await api.delete(f"{URL}/{first.json()['sessionId']}", headers=key)).status_code == 200
        big = {**SMALL, "files": [{**SMALL["files"][0], "sizeBytes": 16}]}
        over = await api.post(URL, json=big, headers=key)
        assert over.status_code == 429 and (over.json()["limit"], over.json()["current"]) == ("liveBytes", 10)
        exact = {**SMALL, "files": [{**SMALL["files"][0], "sizeBytes": 15}]}
        assert (await api.post(URL, json=exact, headers=key)).status_code == 201  # 10 + 15 = 25: at the edge
        other = await key_of(redis, "globex")  # quotas are per account
        assert (await api.post(URL, json=SMALL, headers=other)).status_code == 201
    assert await redis.hgetall(usage_key("acme")) == {b"groups": b"2", b"bytes": b"25"}


async def test_accounts_show_and_set_limits(
    capsys: pytest.CaptureFixture[str], settings: Settings, redis: Redis
) -> None:
    async with api_client(settings) as api:
        key = await key_of(redis, "acme")
        assert (await api.post(URL, json=SMALL, headers=key)).status_code == 201
        assert await run(["--redis-url", settings.redis.url, "accounts", "set-limits", "acme", "--live-groups", "1",
                          "--rate", "create=2/3", "--json"]) == 0  # fmt: skip
        doc = json.loads(capsys.readouterr().out)
        assert (doc["liveGroups"], doc["usedGroups"], doc["usedBytes"]) == (1, 1, 10)
        assert doc["rates"]["create"] == "2/3" and doc["liveBytes"] == settings.limits.quota_live_bytes
        assert sorted(doc["overridden"]) == ["burst:create", "live_groups", "rate:create"]
        refused = await api.post(URL, json=SMALL, headers=key)  # the account's own quota applies at once
        assert refused.status_code == 429 and refused.json()["max"] == 1
        assert refused.headers["ratelimit-policy"] == '"create";q=3;w=2'
    assert await run(["--redis-url", settings.redis.url, "accounts", "set-limits", "acme", "--reset"]) == 0
    out = capsys.readouterr().out
    assert "LIVE_GROUPS" in out and str(settings.limits.quota_live_groups) in out
    assert await run(["--redis-url", settings.redis.url, "accounts", "set-limits", "acme", "--rate", "bogus=1"]) == 2


async def test_a_replayed_create_is_rendered_from_the_record_and_the_key_keeps_only_a_digest(
    settings: Settings, redis: Redis
) -> None:
    async with api_client(settings) as api:
        key = await key_of(redis, "acme")
        h = {**key, "Idempotency-Key": "launch-1"}
        first = await api.post(URL, json=SEED_REQUEST, headers=h)
        again = await api.post(URL, json=SEED_REQUEST, headers=h)
    assert first.status_code == again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    stored = [await redis.get(k) for k in await redis.keys(idempotency_key("acme", "*"))]
    assert len(stored) == 1 and stored[0] is not None and len(stored[0]) == 64 + 1 + 36  # digest \\n sessionId


async def test_a_spray_of_invalid_keys_cannot_evict_a_valid_one(settings: Settings, redis: Redis) -> None:
    from app.state.apikeys import KeyCache

    cache = KeyCache(redis, ttl=60.0)
    secret, _ = await create_key(redis, account="acme", role="upload")
    assert (await cache.resolve(secret)).account == "acme"
    for i in range(3 * KeyCache.MAX_UNKNOWN):  # far more unknown keys than either cache holds
        with pytest.raises(ApiError):
            await cache.resolve(f"sgk_spray{i}")
    before = int((await redis.info("stats"))["total_commands_processed"])
    assert (await cache.resolve(secret)).account == "acme"  # still cached: no Redis call
    after = int((await redis.info("stats"))["total_commands_processed"])
    assert after - before == 1  # the INFO call itself
    assert len(cache._unknown) == KeyCache.MAX_UNKNOWN


async def test_the_largest_valid_group_costs_about_its_body_and_an_unused_one_is_kept_two_days(
    settings: Settings, redis: Redis
) -> None:
    """The bound (README "Limits"): a group's keys plus its idempotency record take at most 1.1 x the request
    body + 4 KiB, i.e. the names and text the client sent and little else; a group nobody uses lives
    idle_group_seconds, then is kept as long again."""
    body = msgspec.json.encode(worst_case_request())
    assert len(body) > 90_000
    async with api_client(settings) as api:
        key = await key_of(redis, "acme")
        r = await api.post(URL, content=body, headers={**key, "Content-Type": "application/json",
                                                       "Idempotency-Key": "worst-case"})  # fmt: skip
        assert r.status_code == 201, r.text
        assert len(r.json()["files"]) == 64
    sid = r.json()["sessionId"]
    group_keys = [k async for k in redis.scan_iter(match=f"sg:{{{sid}}}*")]
    idem = [k async for k in redis.scan_iter(match="sg:idem:*")]
    assert len(group_keys) == 2 and len(idem) == 1
    used = [int(await redis.memory_usage(k, samples=0) or 0) for k in [*group_keys, *idem]]
    assert sum(used) <= 1.1 * len(body) + 4096, used
    assert used[-1] < 512  # the idempotency record holds a digest and the session id, not a copy of the answer
    # Unused, it is due in the expiry index after idle_group_seconds (then kept as long again, see test_start).
    due = await redis.zscore(EXPIRY_INDEX, sid)
    seconds, micros = await redis.time()
    assert due is not None and due <= seconds * 1000 + micros // 1000 + settings.uploads.idle_group_seconds * 1000


async def test_an_account_keeps_at_most_its_cap_of_ended_groups_and_the_sweep_drops_the_oldest(
    capsys: pytest.CaptureFixture[str], settings: Settings, redis: Redis
) -> None:
    """A create-and-cancel loop cannot fill Redis (README "Limits"): past retained_ended_groups, the expiry sweep
    drops the account's oldest ended groups (their status answers 404); its newest ones, another account's
    groups and the account's live groups stay."""
    capped = settings.override(retained_ended_groups=3)
    state = UploadState(redis)
    ctx = {"state": state, "settings": capped, "redis": redis}
    try:
        async with api_client(capped) as api:
            looper, other = await key_of(redis, "looper"), await key_of(redis, "other")
            ended: list[str] = []
            for _ in range(5):
                sid = (await api.post(URL, json=SMALL, headers=looper)).json()["sessionId"]
                assert (await api.delete(f"{URL}/{sid}", headers=looper)).status_code == 200
                ended.append(sid)
                await asyncio.sleep(0.002)  # distinct end times: the oldest is unambiguous
            live = (await api.post(URL, json=SMALL, headers=looper)).json()["sessionId"]
            theirs = (await api.post(URL, json=SMALL, headers=other)).json()["sessionId"]
            assert (await api.delete(f"{URL}/{theirs}", headers=other)).status_code == 200
            assert await redis.smembers(TRIM_QUEUE) == {b"looper"}  # only the account over its cap is queued

            assert await jobs.expire_due_groups(ctx) == 0  # the expiry sweep's cron: nothing due, then the trim
            codes = [(await api.get(f"{URL}/{sid}", headers=looper)).status_code for sid in ended]
            assert codes == [404, 404, 200, 200, 200]
            # Only the group's end record stays (until its purges are past): what lets storage be cleaned up.
            left = [k async for k in redis.scan_iter(match=f"sg:{{{ended[0]}}}*")]
            assert left == [tombstone_key(ended[0]).encode()]
            assert (await api.get(f"{URL}/{live}", headers=looper)).json()["status"] == "initialized"
            assert (await api.get(f"{URL}/{theirs}", headers=other)).json()["status"] == "canceled"
            assert await redis.zcard(ended_index_key("looper")) == 3 and not await redis.exists(TRIM_QUEUE)
            assert await run(["--redis-url", settings.redis.url, "accounts", "show", "looper", "--json"]) == 0
            doc = json.loads(capsys.readouterr().out)
            assert (doc["endedGroups"], doc["usedGroups"]) == (3, 1)
            listed = {m.decode() for m in await redis.zrange(account_index_key("looper"), 0, -1)}
            assert listed == {*ended[2:], live}

            # Expiry feeds the same index: the live group expires unused, so it is kept only the idle time and is
            # the first to go when the account is over its cap again (the index is ordered by when keys go).
            far = (await state.snapshot(live)).record.expires_ms + 1  # type: ignore[union-attr]
            assert await expire_due_groups(state, capped, now=far) == 1
            assert await redis.smembers(TRIM_QUEUE) == {b"looper"}
            assert await state.trim_ended(capped.limits.retained_ended_groups) == 1
            assert (await api.get(f"{URL}/{live}", headers=looper)).status_code == 404
            codes = [(await api.get(f"{URL}/{sid}", headers=looper)).status_code for sid in ended[2:]]
            assert codes == [200, 200, 200]
    finally:
        state.close()
