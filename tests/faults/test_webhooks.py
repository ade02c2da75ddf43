"""Webhook faults on real processes (API and workers as console scripts, real Valkey and moto), each delivery verified
by a real receiving server with the Standard Webhooks reference verifier:

- the receiver down for a minute, then back: every event delivered, none lost, ids stable. The retry schedule is
  compressed (0, 1, 2, 4, 8 s, then every 15 s) so the minute costs a minute and not hours;
- a worker SIGKILLed mid-delivery: the event is delivered by another worker, possibly twice, with the same id;
- receivers answering 500, 429 (Retry-After) and 410: retried, delayed, disabled (workers started both ways);
- one account's receiver slow: another account's deliveries, and upload work, go on meanwhile.
Figures are printed ([measured]), never asserted against thresholds (the `within` bounds only stop a hang).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import httpx
from redis.asyncio import Redis

from app.domain.events import event_id
from app.state.apikeys import create_key
from deploy.local.webhook_receiver import Receiver
from tests.processes import Stack, eventually, report, sigkill

HOOKS = "/api/webhooks"
URL = "/api/videos/uploads"
MINUTE_SCHEDULE = "0,1,2,4,8,15,15,15,15,15,15,15"
"""Attempts over ~2 minutes: a receiver down for one minute is reached again within 15 s of coming back."""
SMALL = {"videoName": "hook", "layout": "Separate",
         "files": [{"fileName": "l.mov", "fileRole": "video_left", "sizeBytes": 10},
                   {"fileName": "r.mov", "fileRole": "video_right", "sizeBytes": 20}]}  # fmt: skip


def hook_env(schedule: str = MINUTE_SCHEDULE, timeout: float = 10) -> dict[str, str]:
    return {"SPATIALGEN_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true", "SPATIALGEN_WEBHOOK_RETRY_SCHEDULE": schedule,
            "SPATIALGEN_WEBHOOK_TIMEOUT_SECONDS": str(timeout)}  # fmt: skip


async def admin_key(stack: Stack, account: str) -> dict[str, str]:
    client = Redis.from_url(stack.redis_url)
    try:
        secret, _ = await create_key(client, account=account, role="admin")
    finally:
        await client.aclose()
    return {"X-SPATIALGEN-APPKEY": secret}


async def endpoint(api: httpx.AsyncClient, key: dict[str, str], receiver: Receiver) -> str:
    r = await api.post(HOOKS, json={"url": receiver.url}, headers=key)
    assert r.status_code == 201, r.text
    receiver.secrets = [r.json()["secret"]]
    return str(r.json()["endpointId"])


async def canceled_groups(api: httpx.AsyncClient, key: dict[str, str], n: int) -> dict[str, float]:
    """n groups created and canceled: the ids of their upload_group.canceled events, with when each was canceled."""
    ids = {}
    for _ in range(n):
        sid = (await api.post(URL, json=SMALL, headers=key)).json()["sessionId"]
        assert (await api.delete(f"{URL}/{sid}", headers=key)).status_code == 200
        ids[event_id("upload_group.canceled", sid)] = time.monotonic()
    return ids


def verified_ids(receiver: Receiver) -> set[str]:
    return {r.webhook_id for r in receiver.received if r.verified and r.answered == 200}


async def test_a_receiver_down_for_a_minute_gets_every_event_once_it_is_back(stack: Stack) -> None:
    stack.settings_env = hook_env()
    stack.start_stores()
    receiver = await Receiver().start()
    base = stack.start_api()
    stack.start_worker()
    async with httpx.AsyncClient(base_url=base, timeout=30) as api:
        key = await admin_key(stack, "acme")
        await endpoint(api, key, receiver)
        await receiver.stop()
        down = time.monotonic()
        expected = set(await canceled_groups(api, key, 40))
        await asyncio.sleep(max(0.0, 60 - (time.monotonic() - down)))
        await receiver.start()  # the same port
        back = time.monotonic()
        await eventually(lambda: _async(verified_ids(receiver) >= expected), within=120, interval=0.2)
        took = time.monotonic() - back
    assert all(r.verified for r in receiver.received)
    assert verified_ids(receiver) == expected  # none lost, no stray ids
    report(
        f"receiver down {back - down:.0f} s: all {len(expected)} events delivered {took:.1f} s after it came back "
        f"({len(receiver.received)} requests received, ids stable)"
    )


async def test_a_worker_killed_mid_delivery_delivers_it_again_with_the_same_id(stack: Stack) -> None:
    stack.settings_env = hook_env("0,1,2,4", timeout=10)
    stack.start_stores()
    arrived = asyncio.Event()

    def policy(headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], float]:
        first = not arrived.is_set()
        arrived.set()
        return 200, {}, 3.0 if first else 0.0  # the first answer takes 3 s: the worker dies meanwhile

    receiver = await Receiver(policy=policy).start()
    base = stack.start_api()
    first = stack.start_worker()
    async with httpx.AsyncClient(base_url=base, timeout=30) as api:
        key = await admin_key(stack, "acme")
        eid = await endpoint(api, key, receiver)
        (evt,) = (await api.post(f"{HOOKS}/{eid}/test", headers=key)).json()["eventIds"]
        await asyncio.wait_for(arrived.wait(), 30)
        sigkill(first)
        killed = time.monotonic()
        stack.start_worker()
        await eventually(lambda: _async(len(receiver.received) >= 2), within=90, interval=0.2)
        took = time.monotonic() - killed

        async def logged() -> bool:
            log = (await api.get(f"{HOOKS}/{eid}/deliveries", headers=key)).json()["deliveries"]
            return any(d["outcome"] == "delivered" for d in log)

        await eventually(logged, within=30)
    assert {r.webhook_id for r in receiver.received} == {evt} and all(r.verified for r in receiver.received)
    report(
        f"worker SIGKILLed mid-delivery: delivered again {took:.1f} s later, {len(receiver.received)} times in "
        "all, one webhook-id"
    )


async def test_receivers_answering_500_429_and_410(stack: Stack, worker_way: str) -> None:
    """With workers started both ways (spatialgen-worker, arq's CLI): the webhook side starts with either."""
    stack.settings_env = hook_env("0,1,1,1,1")
    stack.start_stores()
    answers: dict[str, list[tuple[int, dict[str, str], float]]] = {
        "500": [(500, {}, 0.0), (500, {}, 0.0)],
        "429": [(429, {"Retry-After": "3"}, 0.0)],
        "410": [],
    }

    def policy(name: str) -> Any:
        def answer(headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], float]:
            if name == "410":
                return 410, {}, 0.0
            return answers[name].pop(0) if answers[name] else (200, {}, 0.0)

        return answer

    receivers = {name: await Receiver(policy=policy(name)).start() for name in answers}
    base = stack.start_api()
    stack.start_worker()
    async with httpx.AsyncClient(base_url=base, timeout=30) as api:
        key = await admin_key(stack, "acme")
        ids = {name: await endpoint(api, key, r) for name, r in receivers.items()}
        await canceled_groups(api, key, 1)

        async def settled() -> bool:
            return (receivers["500"].received[-1:] and receivers["500"].received[-1].answered == 200
                    and receivers["429"].received[-1:] and receivers["429"].received[-1].answered == 200
                    and bool(receivers["410"].received))  # fmt: skip

        await eventually(settled, within=60, interval=0.2)
        first = {name: list(r.received) for name, r in receivers.items()}
        gone = (await api.get(f"{HOOKS}/{ids['410']}", headers=key)).json()
        await canceled_groups(api, key, 1)  # a later event: not sent to the disabled endpoint
        await eventually(lambda: _async(len(receivers["500"].received) == 4 and len(receivers["429"].received) == 3),
                         within=30)  # fmt: skip
    assert [r.answered for r in first["500"]] == [500, 500, 200]
    r429 = first["429"]
    assert [r.answered for r in r429] == [429, 200] and r429[1].at - r429[0].at >= 3.0
    assert len(receivers["410"].received) == 1 and not gone["enabled"] and "410" in gone["disabledReason"]
    for received in first.values():
        assert len({x.webhook_id for x in received}) == 1 and all(x.verified for x in received)
    report(f"429 with Retry-After: 3 retried after {r429[1].at - r429[0].at:.1f} s (schedule: 1 s); 410 disabled it")


async def test_a_slow_receiver_does_not_hold_up_another_account_or_uploads(stack: Stack) -> None:
    stack.settings_env = {**hook_env("0,1,2", timeout=20), "SPATIALGEN_WEBHOOK_ENDPOINT_CONCURRENCY": "2"}
    stack.start_stores()
    slow = await Receiver(policy=lambda h, b: (200, {}, 5.0)).start()
    fast = await Receiver().start()
    base = stack.start_api()
    stack.start_worker()
    async with httpx.AsyncClient(base_url=base, timeout=30) as api:
        slow_key, fast_key = await admin_key(stack, "slowco"), await admin_key(stack, "fastco")
        await endpoint(api, slow_key, slow)
        fast_id = await endpoint(api, fast_key, fast)
        await api.post(f"{HOOKS}/{fast_id}/test", headers=fast_key)  # the worker is up and delivering
        await eventually(lambda: _async(bool(fast.received)), within=60)
        alone = await latencies(api, fast_key, fast)  # the baseline: no slow deliveries anywhere
        slow_ids = set(await canceled_groups(api, slow_key, 20))  # 20 deliveries of 5 s each, 2 at a time: ~50 s
        await asyncio.sleep(1)
        latency = await latencies(api, fast_key, fast)
        t0 = time.monotonic()
        sid = (await api.post(URL, json=SMALL, headers=fast_key)).json()["sessionId"]
        r = await api.post(f"{URL}/{sid}/files/{_first_upload(await api.get(f'{URL}/{sid}', headers=fast_key))}"
                           "/part-urls", headers=fast_key)  # fmt: skip
        upload_took = time.monotonic() - t0
        slow_done = len(verified_ids(slow) & slow_ids)
    assert r.status_code == 200 and all(x.verified for x in fast.received)
    assert slow_done < len(slow_ids)  # the slow account's backlog is still being worked through
    report(f"slow receiver (5 s per answer, 2 at a time): the other account's 20 events each delivered "
           f"{statistics.median(latency):.3f} s (median), {max(latency):.3f} s (max) after its cancel, while "
           f"{len(slow_ids) - slow_done} of the slow account's were still waiting (alone, before: "
           f"{statistics.median(alone):.3f} s, {max(alone):.3f} s); a create + part-urls took {upload_took:.2f} s "
           "meanwhile")  # fmt: skip


async def latencies(api: httpx.AsyncClient, key: dict[str, str], receiver: Receiver, n: int = 20) -> list[float]:
    """Seconds from each of n cancels to its event's delivery."""
    sent = await canceled_groups(api, key, n)
    await eventually(lambda: _async(verified_ids(receiver) >= set(sent)), within=60, interval=0.05)
    return [r.at - sent[r.webhook_id] for r in receiver.received if r.webhook_id in sent]


def _first_upload(r: httpx.Response) -> str:
    return str(r.json()["files"][0]["uploadId"])


async def _async(value: bool) -> bool:
    return value
