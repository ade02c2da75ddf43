"""Webhooks against real Valkey + moto: the endpoint API (roles, tenant isolation, secrets shown once), every event
delivered to a real receiving HTTP server and verified there with the Standard Webhooks reference verifier
(`standardwebhooks.Webhook(secret).verify`), retries with the same webhook-id, 410, Retry-After, secret rotation,
redelivery, the delivery log and the admin CLI. The retry schedule is compressed to fractions of a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from arq.connections import RedisSettings
from arq.worker import Worker
from redis.asyncio import Redis
from standardwebhooks import Webhook

from app.admin import cli
from app.domain.events import EVENT_DOCUMENTS, EventType, event_id
from app.settings import MIB, Settings
from app.state import UploadState
from app.state.apikeys import create_key
from app.state.keys import EVENTS_STREAM, EXPIRY_INDEX
from app.state.webhooks import WebhookStore
from app.upkeep.expiry import expiry_sweep
from app.webhooks import dispatch
from app.webhooks.outbound import GuardedBackend, Sender
from deploy.local.webhook_receiver import Receiver
from tests.conftest import arq_pool
from tests.integration.conftest import api_client
from tests.integration.test_upload_flow import complete, start, upload_file
from worker.settings import WorkerSettings

HOOKS = "/api/webhooks"
FAST = "0,0.2,0.4,0.6"
"""Four attempts, 0.2-0.6 s apart (the spec's schedule is minutes to a day)."""


@pytest.fixture
def hook_settings(settings: Settings) -> Settings:
    return settings.override(part_size_bytes=5 * MIB, webhook_allow_private_targets="true",
                             webhook_retry_schedule=FAST, webhook_timeout_seconds=3)  # fmt: skip


@contextlib.asynccontextmanager
async def worker(settings: Settings) -> AsyncIterator[Worker]:
    """The service's upload worker (its on_startup starts the webhook side), running in this loop."""
    pool = arq_pool(settings.redis.url)
    w = Worker(
        functions=WorkerSettings.functions, on_startup=WorkerSettings.on_startup,
        on_shutdown=WorkerSettings.on_shutdown, queue_name=settings.worker.queue_name,
        job_serializer=WorkerSettings.job_serializer, job_deserializer=WorkerSettings.job_deserializer,
        redis_settings=RedisSettings.from_dsn(settings.redis.url), redis_pool=pool, poll_delay=0.02, max_jobs=20,
        handle_signals=False, ctx={"settings": settings},
    )  # fmt: skip
    task = asyncio.create_task(w.main())
    try:
        yield w
    finally:
        w.allow_pick_jobs = False
        await asyncio.sleep(0.2)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await w.close()
        await pool.aclose()


@pytest.fixture
async def api(hook_settings: Settings, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(hook_settings) as c:
        yield c


async def key(redis: Redis, account: str = "acme", role: str = "admin") -> dict[str, str]:
    secret, _ = await create_key(redis, account=account, role=role)
    return {"X-SPATIALGEN-APPKEY": secret}


async def register(api: httpx.AsyncClient, admin: dict[str, str], url: str, **body: Any) -> dict[str, Any]:
    r = await api.post(HOOKS, json={"url": url, **body}, headers=admin)
    assert r.status_code == 201, r.text
    doc: dict[str, Any] = r.json()
    return doc


async def until(check: Any, within: float = 20.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        got = check() if not asyncio.iscoroutinefunction(check) else await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {within} s")
        await asyncio.sleep(0.05)


async def test_endpoint_api_roles_isolation_and_the_secret_shown_once(api: httpx.AsyncClient, redis: Redis) -> None:
    admin, other = await key(redis), await key(redis, "globex")
    created = await register(api, admin, "https://hooks.example.com/x", eventTypes=["upload_group.completed"])
    eid = created["endpointId"]
    assert created["secret"].startswith("whsec_") and len(Webhook(created["secret"])._whsecret) == 32
    listed = (await api.get(HOOKS, headers=admin)).json()["endpoints"]
    assert [e["endpointId"] for e in listed] == [eid] and "secret" not in listed[0]
    assert "secret" not in (await api.get(f"{HOOKS}/{eid}", headers=admin)).json()
    for role in ("upload", "readonly"):
        r = await api.get(HOOKS, headers=await key(redis, role=role))
        assert r.status_code == 403 and r.json()["code"] == "role_not_allowed"
    assert (await api.get(HOOKS, headers=other)).json()["endpoints"] == []
    for method, path in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/test"), ("POST", "/rotate-secret"),
                         ("GET", "/deliveries"), ("POST", "/redeliver")):  # fmt: skip
        body = {"enabled": True} if method == "PATCH" else ({"eventId": "evt_x"} if path == "/redeliver" else None)
        r = await api.request(method, f"{HOOKS}/{eid}{path}", headers=other, json=body)
        assert r.status_code == 404 and r.json()["code"] == "webhook_not_found", (method, path, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    bad = await api.post(HOOKS, json={"url": "ftp://x", "eventTypes": ["nope", "upload_group.failed"]}, headers=admin)
    assert bad.status_code == 400 and [e["path"] for e in bad.json()["errors"]] == ["url", "eventTypes[0]"]
    assert (await api.post(HOOKS, json={"url": 7}, headers=admin)).json()["errors"][0]["path"] == "url"
    r = await api.patch(f"{HOOKS}/{eid}", json={"eventTypes": ["upload_file.completed"], "enabled": False},
                        headers=admin)  # fmt: skip
    assert r.status_code == 200 and r.json()["eventTypes"] == ["upload_file.completed"] and not r.json()["enabled"]
    rotated = (await api.post(f"{HOOKS}/{eid}/rotate-secret", headers=admin)).json()
    assert rotated["secret"] != created["secret"] and rotated["previousSecretValidUntil"]
    assert (await api.get(f"{HOOKS}/{eid}", headers=admin)).json()["secretRotatingUntil"]
    assert (await api.delete(f"{HOOKS}/{eid}", headers=admin)).json() == {"endpointId": eid, "deleted": True}
    assert (await api.get(f"{HOOKS}/{eid}", headers=admin)).status_code == 404


async def test_accounts_without_endpoints_record_no_events(
    api: httpx.AsyncClient, redis: Redis, hook_settings: Settings, store: Any
) -> None:
    upload = await key(redis, role="upload")
    doc = await start(api, upload, {"video_left": 10, "video_right": 20})
    assert (await api.delete(f"/api/videos/uploads/{doc['sessionId']}", headers=upload)).status_code == 200
    assert await redis.xlen(EVENTS_STREAM) == 0


async def test_every_event_is_delivered_signed_and_verified(
    api: httpx.AsyncClient, redis: Redis, hook_settings: Settings, store: Any
) -> None:
    admin, upload = await key(redis), await key(redis, role="upload")
    receiver = await Receiver().start()
    created = await register(api, admin, receiver.url)
    receiver.secrets = [created["secret"]]
    await register(api, await key(redis, "globex"), receiver.url)  # another account's endpoint gets none of these
    async with worker(hook_settings):
        done = await start(api, upload, {"video_left": 6 * MIB, "video_right": 20})
        for f in done["files"]:
            parts = await upload_file(api, upload, done["sessionId"], f, os.urandom(f["totalBytes"]))
            r = await complete(api, upload, done["sessionId"], f["uploadId"],
                               parts if f["uploadStrategy"] == "multipart" else None)  # fmt: skip
            assert r.status_code == 200, r.text
        library_id = r.json()["libraryId"]
        canceled = await start(api, upload, {"video_left": 10, "video_right": 20})
        await api.delete(f"/api/videos/uploads/{canceled['sessionId']}", headers=upload)
        failed = await start(api, upload, {"video_left": 10, "video_right": 20})
        bad = failed["files"][0]
        await upload_file(api, upload, failed["sessionId"], bad, b"y" * 10)
        async with httpx.AsyncClient() as http:  # replace it with 9 bytes through a fresh URL: a size mismatch
            urls = (await api.post(f"/api/videos/uploads/{failed['sessionId']}/files/{bad['uploadId']}/part-urls",
                                   headers=upload)).json()  # fmt: skip
            await http.put(urls["parts"][0]["url"], content=b"y" * 9)
        await complete(api, upload, failed["sessionId"], bad["uploadId"], None)
        expired = await start(api, upload, {"video_left": 10, "video_right": 20})
        await redis.zadd(EXPIRY_INDEX, {expired["sessionId"]: 1})
        state = UploadState(redis)
        await expiry_sweep(state, hook_settings)
        state.close()
        expected = {
            event_id("upload_file.completed", done["sessionId"], f["uploadId"]) for f in done["files"]
        } | {event_id("upload_group.completed", done["sessionId"]), event_id("upload_group.canceled", canceled[
            "sessionId"]), event_id("upload_group.failed", failed["sessionId"]),
             event_id("upload_group.expired", expired["sessionId"])}  # fmt: skip
        await until(lambda: {r.webhook_id for r in receiver.received} >= expected)
    await receiver.stop()
    got = [r for r in receiver.received if r.webhook_id in expected]
    assert all(r.verified and r.answered == 200 for r in got)
    by_type = {}
    for r in got:
        assert Webhook(created["secret"]).verify(r.body, r.headers)["id"] == r.webhook_id
        event = r.event()
        msgspec.convert(event, EVENT_DOCUMENTS[EventType(event["type"])])  # the documented shape
        by_type.setdefault(event["type"], []).append(event)
    group = by_type["upload_group.completed"][0]["data"]
    assert group["libraryId"] == library_id and group["status"] == "completed"
    assert [f["sizeBytes"] for f in group["files"]] == [6 * MIB, 20]
    assert len(by_type["upload_file.completed"]) == 2
    assert by_type["upload_group.failed"][0]["data"]["reason"] == "size_mismatch"
    assert by_type["upload_group.failed"][0]["data"]["uploadId"] == bad["uploadId"]
    assert by_type["upload_group.expired"][0]["data"]["status"] == "expired"
    assert len(got) == len(expected)  # the other account's endpoint saw none of acme's events, nothing twice
    log = (await api.get(f"{HOOKS}/{created['endpointId']}/deliveries", headers=admin)).json()
    assert {d["eventId"] for d in log["deliveries"]} == expected
    assert {d["outcome"] for d in log["deliveries"]} == {"delivered"}


async def test_failures_are_retried_with_the_same_id_then_delivered(
    api: httpx.AsyncClient, redis: Redis, hook_settings: Settings
) -> None:
    admin = await key(redis)
    answers = [(500, {}, 0.0), (429, {"Retry-After": "1"}, 0.0), (302, {"Location": "http://127.0.0.1:1/"}, 0.0)]

    def policy(headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], float]:
        return answers.pop(0) if answers else (204, {}, 0.0)

    receiver = await Receiver(policy=policy).start()
    created = await register(api, admin, receiver.url)
    receiver.secrets = [created["secret"]]
    async with worker(hook_settings):
        await api.post(f"{HOOKS}/{created['endpointId']}/test", headers=admin)
        await until(lambda: any(r.answered == 204 for r in receiver.received))
    await receiver.stop()
    assert [r.answered for r in receiver.received] == [500, 429, 302, 204]
    assert len({r.webhook_id for r in receiver.received}) == 1
    assert len({r.headers["webhook-timestamp"] for r in receiver.received}) >= 1
    assert receiver.received[2].at - receiver.received[1].at >= 1.0  # Retry-After: 1 beat the 0.4 s schedule
    log = (await api.get(f"{HOOKS}/{created['endpointId']}/deliveries", headers=admin)).json()["deliveries"]
    assert [(d["attempt"], d["outcome"], d["status"]) for d in reversed(log)] == [
        (1, "retrying", 500),
        (2, "retrying", 429),
        (3, "retrying", 302),
        (4, "delivered", 204),
    ]
    assert "redirects are not followed" in log[1]["error"] and log[1]["nextAttemptAt"]
    assert log[0]["latencyMs"] >= 0 and log[0]["error"] is None


async def test_the_last_failure_is_kept_and_410_disables_the_endpoint(
    api: httpx.AsyncClient, redis: Redis, hook_settings: Settings
) -> None:
    admin = await key(redis)
    gone = await Receiver(policy=lambda h, b: (410, {}, 0.0)).start()
    down = await Receiver(policy=lambda h, b: (503, {}, 0.0)).start()
    e_gone = await register(api, admin, gone.url)
    e_down = await register(api, admin, down.url)
    async with worker(hook_settings):
        for e in (e_gone, e_down):
            await api.post(f"{HOOKS}/{e['endpointId']}/test", headers=admin)

        async def settled() -> bool:
            logs = [(await api.get(f"{HOOKS}/{e['endpointId']}/deliveries", headers=admin)).json()
                    for e in (e_gone, e_down)]  # fmt: skip
            return bool(logs[0]["deliveries"]) and any(d["outcome"] == "failed" for d in logs[1]["deliveries"])

        await until(settled)
    for r in (gone, down):
        await r.stop()
    shown = (await api.get(f"{HOOKS}/{e_gone['endpointId']}", headers=admin)).json()
    assert not shown["enabled"] and "410" in shown["disabledReason"] and len(gone.received) == 1
    assert len(down.received) == len(FAST.split(","))  # every attempt of the schedule, then failed (kept)
    down_log = (await api.get(f"{HOOKS}/{e_down['endpointId']}/deliveries", headers=admin)).json()
    assert down_log["deliveries"][0]["outcome"] == "failed" and down_log["endpoint"]["failingSince"]
    metrics = (await api.get("/metrics")).text
    assert 'spatialgen_webhook_deliveries_total{outcome="failed"} 1.0' in metrics
    assert "spatialgen_webhook_endpoints_disabled 1.0" in metrics


async def test_rotation_signs_with_both_secrets_and_redelivery_keeps_the_id(
    api: httpx.AsyncClient, redis: Redis, hook_settings: Settings
) -> None:
    admin = await key(redis)
    receiver = await Receiver().start()
    created = await register(api, admin, receiver.url)
    eid = created["endpointId"]
    new = (await api.post(f"{HOOKS}/{eid}/rotate-secret", headers=admin)).json()["secret"]
    async with worker(hook_settings):
        first = (await api.post(f"{HOOKS}/{eid}/test", headers=admin)).json()["eventIds"][0]
        await until(lambda: receiver.received)
        r = await api.post(f"{HOOKS}/{eid}/redeliver", json={"eventId": first}, headers=admin)
        assert r.status_code == 202 and r.json()["eventIds"] == [first]
        r = await api.post(f"{HOOKS}/{eid}/redeliver", json={"since": "2020-01-01T00:00:00Z"}, headers=admin)
        assert r.json()["eventIds"] == [first]
        await until(lambda: len(receiver.received) == 3)
        missing = await api.post(f"{HOOKS}/{eid}/redeliver", json={"eventId": "evt_unknown"}, headers=admin)
        assert missing.status_code == 404 and missing.json()["code"] == "event_not_found"
    await receiver.stop()
    assert {r.webhook_id for r in receiver.received} == {first}
    for r in receiver.received:
        assert len(r.headers["webhook-signature"].split(" ")) == 2
        for secret in (created["secret"], new):  # a receiver knowing either secret verifies it
            Webhook(secret).verify(r.body, r.headers)


async def test_the_admin_cli_manages_endpoints_and_shows_the_log(
    redis: Redis, hook_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--redis-url", hook_settings.redis.url, "--json"]
    assert await cli.run(["webhooks", "create", "--account", "acme", "--url", "https://h.example.com/",
                          "--events", "upload_group.failed", *url]) == 0  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    created = json.loads(out[0])
    assert out[1] == created["secret"] and created["eventTypes"] == ["upload_group.failed"]
    eid = created["endpointId"]
    assert await cli.run(["webhooks", "list", *url]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(e["endpointId"], e["account"]) for e in listed] == [(eid, "acme")] and "secret" not in listed[0]
    assert await cli.run(["webhooks", "update", eid, "--disable", *url]) == 0
    assert json.loads(capsys.readouterr().out)["enabled"] is False
    assert await cli.run(["webhooks", "deliveries", eid, *url]) == 0
    assert json.loads(capsys.readouterr().out)["deliveries"] == []
    assert await cli.run(["webhooks", "redeliver", eid, "--since", "2020-01-01T00:00:00Z", *url]) == 0
    assert await cli.run(["webhooks", "show", "nope", *url]) == 1
    assert await cli.run(["webhooks", "delete", eid, *url]) == 0


async def test_private_targets_are_refused_at_connect_time_even_after_rebinding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receiver = await Receiver().start()
    guarded = Sender(timeout=2, allow_private=False)
    try:
        answer = await guarded.post(f"https://127.0.0.1:{receiver.port}/hooks", {}, b"{}")
        assert answer.status is None and answer.error is not None and answer.error.startswith("refused")
        plain = await guarded.post(receiver.url, {}, b"{}")
        assert plain.error is not None and "https" in plain.error

        async def rebound(self: GuardedBackend, host: str, port: int) -> list[str]:
            return ["127.0.0.1"]  # a public-looking name that resolves to loopback when the delivery connects

        monkeypatch.setattr(GuardedBackend, "resolve", rebound)
        answer = await guarded.post(f"https://hooks.example.com:{receiver.port}/x", {}, b"{}")
        assert answer.error is not None and answer.error.startswith("refused"), answer
        monkeypatch.undo()
        allowed = Sender(timeout=2, allow_private=True)
        assert (await allowed.post(receiver.url, {}, b"{}")).status == 200
        await allowed.aclose()
    finally:
        await guarded.aclose()
        await receiver.stop()
    assert len(receiver.received) == 1  # only the allowed one reached it


async def test_an_event_waits_for_a_worker_and_outlives_a_dispatcher_that_died(
    api: httpx.AsyncClient, redis: Redis, hook_settings: Settings, monkeypatch: pytest.MonkeyPatch, store: Any
) -> None:
    admin, upload = await key(redis), await key(redis, role="upload")
    receiver = await Receiver().start()
    receiver.secrets = [(await register(api, admin, receiver.url))["secret"]]
    sid = (await start(api, upload, {"video_left": 10, "video_right": 20}))["sessionId"]
    assert (await api.delete(f"/api/videos/uploads/{sid}", headers=upload)).status_code == 200  # no worker runs
    store = WebhookStore(redis)
    await store.ensure_group()
    taken = await store.read_new("a-dispatcher-that-dies", count=10, block_ms=0)  # taken, never acknowledged
    store.close()
    assert [e.id for e in taken] == [event_id("upload_group.canceled", sid)]
    monkeypatch.setattr(dispatch, "CLAIM_IDLE_MS", 300)
    async with worker(hook_settings):
        await until(lambda: receiver.received)
    await receiver.stop()
    assert [r.webhook_id for r in receiver.received] == [taken[0].id] and receiver.received[0].verified


async def test_an_endpoint_failing_for_too_long_is_disabled_with_the_reason(
    api: httpx.AsyncClient, redis: Redis, hook_settings: Settings
) -> None:
    settings = hook_settings.override(webhook_disable_after_seconds=1, webhook_retry_schedule="0,0.6,0.6,0.6,0.6")
    admin = await key(redis)
    receiver = await Receiver(policy=lambda h, b: (500, {}, 0.0)).start()
    eid = (await register(api, admin, receiver.url))["endpointId"]
    async with worker(settings):
        await api.post(f"{HOOKS}/{eid}/test", headers=admin)

        async def disabled() -> bool:
            return not (await api.get(f"{HOOKS}/{eid}", headers=admin)).json()["enabled"]

        await until(disabled)
    await receiver.stop()
    shown = (await api.get(f"{HOOKS}/{eid}", headers=admin)).json()
    assert shown["disabledReason"].startswith("every delivery failed since") and shown["disabledAt"]
    assert 3 <= len(receiver.received) < 5  # disabled before the schedule ran out
    r = await api.patch(f"{HOOKS}/{eid}", json={"enabled": True}, headers=admin)
    assert r.json()["enabled"] and r.json()["disabledReason"] is None and r.json()["failingSince"] is None


async def test_an_endpoint_s_deliveries_wait_in_line_beyond_its_concurrency(
    api: httpx.AsyncClient, redis: Redis, hook_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = hook_settings.override(webhook_endpoint_concurrency=2)
    admin = await key(redis)
    in_flight, most = 0, 0

    async def slow(headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], float]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.3)
        in_flight -= 1
        return 200, {}, 0.0

    receiver = await Receiver(policy=slow).start()
    eid = (await register(api, admin, receiver.url))["endpointId"]
    # A slot held by a delivery whose worker died (its lease lapses in 0.5 s): the line moves on without it.
    await redis.zadd(f"sg:webhook:{eid}:busy", {"a-killed-delivery": int(time.time() * 1000) + 500})
    monkeypatch.setattr(dispatch, "WAKE_SECONDS", 0.2)
    async with worker(settings):
        sent = [(await api.post(f"{HOOKS}/{eid}/test", headers=admin)).json()["eventIds"][0] for _ in range(8)]
        await until(lambda: len(receiver.received) == 8)
    await receiver.stop()
    assert sorted(r.webhook_id for r in receiver.received) == sorted(sent) and most <= 2
    assert await redis.zcard(f"sg:webhook:{eid}:waiting") == 0 and await redis.hlen(f"sg:webhook:{eid}:parked") == 0


async def test_each_transition_records_its_event_once(
    api: httpx.AsyncClient, redis: Redis, hook_settings: Settings
) -> None:
    admin, upload = await key(redis), await key(redis, role="upload")
    await register(api, admin, "https://hooks.example.com/x")
    sid = (await start(api, upload, {"video_left": 10, "video_right": 20}))["sessionId"]
    for _ in range(2):  # a repeated cancel answers the same and changes nothing
        assert (await api.delete(f"/api/videos/uploads/{sid}", headers=upload)).status_code == 200
    await redis.zadd(EXPIRY_INDEX, {sid: 1})  # an ended group that the sweep meets: no second end
    state = UploadState(redis)
    await expiry_sweep(state, hook_settings)
    state.close()
    entries = await redis.xrange(EVENTS_STREAM)
    assert [(f[b"type"], f[b"id"].decode()) for _, f in entries] == [
        (b"upload_group.canceled", event_id("upload_group.canceled", sid))
    ]
    assert entries[0][1][b"account"] == b"acme" and entries[0][1][b"status"] == b"canceled"


async def test_completed_events_carry_the_checksums_storage_verified(
    api: httpx.AsyncClient, redis: Redis, hook_settings: Settings, store: Any
) -> None:
    from tests.sigv4_front import checksum_value

    admin, upload = await key(redis), await key(redis, role="upload")
    receiver = await Receiver().start()
    receiver.secrets = [(await register(api, admin, receiver.url))["secret"]]
    files = [{"fileName": "l.mov", "fileRole": "video_left", "sizeBytes": 6 * MIB, "checksumAlgorithm": "CRC64NVME"},
             {"fileName": "r.mov", "fileRole": "video_right", "sizeBytes": 20}]  # fmt: skip
    async with worker(hook_settings):
        answer = await api.post("/api/videos/uploads", headers=upload,
                                json={"videoName": "sums", "layout": "Separate", "files": files})  # fmt: skip
        doc = answer.json()
        sid, (left, right) = doc["sessionId"], doc["files"]
        data = os.urandom(left["totalBytes"])
        size = left["partSizeBytes"]
        sums = {str(n): checksum_value("crc64nvme", data[(n - 1) * size : n * size]) for n in (1, 2)}
        urls = (await api.post(f"/api/videos/uploads/{sid}/files/{left['uploadId']}/part-urls", headers=upload,
                               json={"checksums": sums})).json()["parts"]  # fmt: skip
        done = []
        async with httpx.AsyncClient() as http:
            for part in urls:
                sent = await http.put(part["url"], content=data[part["byteStart"] : part["byteEnd"]],
                                      headers=part["headers"])  # fmt: skip
                done.append({"partNumber": part["partNumber"], "etag": sent.headers["etag"]})
        assert (await complete(api, upload, sid, left["uploadId"], done)).status_code == 200
        await upload_file(api, upload, sid, right, os.urandom(20))
        assert (await complete(api, upload, sid, right["uploadId"], None)).status_code == 200
        expected = {event_id("upload_group.completed", sid), event_id("upload_file.completed", sid, left["uploadId"])}
        await until(lambda: {r.webhook_id for r in receiver.received} >= expected)
    await receiver.stop()
    events = {r.event()["type"]: r.event()["data"] for r in receiver.received if r.webhook_id in expected}
    recorded = {"algorithm": "CRC64NVME", "type": "FULL_OBJECT", "value": checksum_value("crc64nvme", data)}
    assert events["upload_file.completed"]["file"]["checksum"] == recorded
    group_files = events["upload_group.completed"]["files"]
    assert group_files[0]["checksum"] == recorded and "checksum" not in group_files[1]
    for event_type, data_doc in events.items():
        msgspec.convert({"id": "x", "type": event_type, "timestamp": "t", "data": data_doc},
                        EVENT_DOCUMENTS[EventType(event_type)])  # fmt: skip
