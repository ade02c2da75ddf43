"""Fault injection on real processes: a worker SIGKILLed mid-provision and mid-complete, Valkey SIGKILLed for 12 s
and restarted on its AOF, S3 hung with SIGSTOP. Each test asserts that nothing is lost, nothing sticks, and the
service carries on without a restart; the worker tests run with workers started both ways (`spatialgen-worker` and
arq's own CLI). Recovery times are printed ([measured]), never asserted as thresholds (the `within` bounds only stop
a hang, and sit far above the time each recovery is designed to take).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import httpx
from redis.asyncio import Redis

from app.settings import MIB
from app.state import GroupSnapshot, UploadState
from app.state.jobs import PROVISION_JOB, JobSpec, provision_job_id
from app.state.keys import METRICS_KEY, MetricField
from app.storage.s3 import ObjectStore
from deploy.local.devstack import free_port
from tests.processes import SlowProxy, Stack, eventually, report, sigkill
from worker.liveness import LOCK_SECONDS

URL = "/api/videos/uploads"
SEPARATE = {
    "videoName": "fault", "layout": "Separate",
    "files": [{"fileName": "l.mov", "fileRole": "video_left", "sizeBytes": 6 * MIB},
              {"fileName": "r.mov", "fileRole": "video_right", "sizeBytes": 6 * MIB},
              {"fileName": "a.mp4", "fileRole": "audio", "sizeBytes": 6 * MIB, "languageTag": "en"}],
}  # fmt: skip


async def create_groups(api: httpx.AsyncClient, key: dict[str, str], n: int, body: dict[str, Any]) -> list[str]:
    sids = []
    for _ in range(n):
        r = await api.post(URL, json=body, headers=key)
        assert r.status_code == 201, r.text
        sids.append(r.json()["sessionId"])
    return sids


async def storage_ready(api: httpx.AsyncClient) -> None:
    """Wait until the API's S3 client is up (it is opened in the background at start), so a first part-urls call
    is provisioned by the API itself and not left to a worker."""

    async def up() -> bool:
        return bool((await api.get("/health/ready")).json()["checks"]["storage"] == "ok")

    await eventually(up, within=30)


async def snapshots(redis: Redis, sids: list[str]) -> list[GroupSnapshot]:
    state = UploadState(redis)
    snaps = [await state.snapshot(sid) for sid in sids]
    assert all(s is not None for s in snaps)
    return [s for s in snaps if s is not None]


def provisioned(snap: GroupSnapshot) -> int:
    return sum(1 for f in snap.record.files if snap.s3_upload_id(f.upload_id))


async def test_a_worker_killed_mid_provision_is_taken_over_within_its_lock_and_leaves_no_duplicate(
    stack: Stack, worker_way: str
) -> None:
    stack.start_stores()
    slow = SlowProxy(stack.s3_port, delay=0.05)  # every S3 call from the workers takes a little longer
    stack.worker_s3_url = await slow.start()
    redis = Redis.from_url(stack.redis_url)
    try:
        # An API that cannot reach storage: every client's first part-urls call is answered 503 and leaves the
        # group's provisioning to the workers (the path this test kills a worker on).
        dead_s3 = f"http://127.0.0.1:{free_port()}"
        cut_off = stack.start_api(SPATIALGEN_S3_ENDPOINT_URL=dead_s3, SPATIALGEN_PROVISION_WAIT_SECONDS="0.2")
        async with httpx.AsyncClient(base_url=cut_off, timeout=30) as api:
            key = await stack.key()
            sids = await create_groups(api, key, 50, SEPARATE)
            for sid in sids:
                first_file = (await api.get(f"{URL}/{sid}", headers=key)).json()["files"][0]["uploadId"]
                r = await api.post(f"{URL}/{sid}/files/{first_file}/part-urls", headers=key)
                assert r.status_code == 503 and r.json()["code"] == "storage_not_ready", r.text
        base = stack.start_api()
        first = stack.start_worker(SPATIALGEN_WORKER_MAX_JOBS="10")

        async def some_progress() -> bool:
            return any(provisioned(s) for s in await snapshots(redis, sids))

        await eventually(some_progress, within=60, interval=0.02)
        sigkill(first)  # mid-provision: jobs held, in-progress locks set, uploads created but not recorded
        killed = time.monotonic()
        done_at_kill = sum(provisioned(s) for s in await snapshots(redis, sids))
        # Clients ask for part URLs at once: the API provisions their files itself, adopting what the dead
        # worker opened.
        async with httpx.AsyncClient(base_url=base, timeout=30) as api:
            key = await stack.key()
            for snap in (await snapshots(redis, sids))[:10]:
                for f in snap.record.files:
                    r = await api.post(f"{URL}/{snap.record.session_id}/files/{f.upload_id}/part-urls", headers=key)
                    assert r.status_code in (200, 503), r.text
        stack.start_worker()

        async def all_provisioned() -> bool:
            return all(provisioned(s) == 3 for s in await snapshots(redis, sids))

        # arq's own lock would hold the dead worker's jobs for its longest time limit + 10 s (15 minutes here).
        await eventually(all_provisioned, within=LOCK_SECONDS * 6, interval=0.1)
        recovery = time.monotonic() - killed
        snaps = await snapshots(redis, sids)
        # What the killed worker opened without recording it was adopted, not opened again: one upload per file,
        # the recorded one, before any sweep.
        async with ObjectStore.connect(stack.settings().storage) as store:
            for snap in snaps:
                for f in snap.record.files:
                    key = snap.record.storage_key(f)
                    assert [u.upload_id for u in await store.list_open_uploads(key)] == [snap.s3_upload_id(f.upload_id)]
            assert len(await store.list_open_uploads("")) == 150
        report(f"[{worker_way}] worker SIGKILLed with {done_at_kill}/150 files provisioned; all 150 provisioned "
               f"{recovery:.1f} s after the kill (lock {LOCK_SECONDS:g} s), no duplicate upload")  # fmt: skip
    finally:
        await redis.aclose()
        await slow.close()


async def test_a_worker_killed_mid_complete_completes_every_group_exactly_once(stack: Stack, worker_way: str) -> None:
    stack.start_stores()
    slow = SlowProxy(stack.s3_port, delay=0.2)
    stack.worker_s3_url = await slow.start()
    redis = Redis.from_url(stack.redis_url)
    body = {**SEPARATE, "files": SEPARATE["files"][:2]}
    try:
        base = stack.start_api(SPATIALGEN_COMPLETE_WAIT_SECONDS="0.1")
        first = stack.start_worker()
        async with httpx.AsyncClient(base_url=base, timeout=30) as api, httpx.AsyncClient(timeout=30) as http:
            key = await stack.key()
            await storage_ready(api)
            sids = await create_groups(api, key, 10, body)
            bodies: dict[tuple[str, str], dict[str, Any]] = {}
            for sid in sids:
                doc = (await api.get(f"{URL}/{sid}", headers=key)).json()
                for f in doc["files"]:
                    r = await api.post(f"{URL}/{sid}/files/{f['uploadId']}/part-urls", headers=key)
                    assert r.status_code == 200, r.text
                    parts = []
                    for p in r.json()["parts"]:
                        put = await http.put(p["url"], content=os.urandom(p["sizeBytes"]))
                        assert put.status_code == 200
                        parts.append({"partNumber": p["partNumber"], "etag": put.headers["etag"]})
                    bodies[(sid, f["uploadId"])] = {"parts": parts}
            for (sid, uid), parts_body in bodies.items():  # every completion starts; the worker is slow
                r = await api.post(f"{URL}/{sid}/files/{uid}/complete", json=parts_body, headers=key)
                assert r.status_code in (200, 202), r.text
            sigkill(first)
            killed = time.monotonic()
            stack.start_worker()
            libraries: dict[str, set[int]] = {sid: set() for sid in sids}

            async def all_completed() -> bool:
                pending = 0
                for (sid, uid), parts_body in bodies.items():  # a client repeats complete until it is done
                    r = await api.post(f"{URL}/{sid}/files/{uid}/complete", json=parts_body, headers=key)
                    assert r.status_code in (200, 202), r.text
                    if r.status_code == 202:
                        pending += 1
                    elif r.json()["libraryId"] is not None:
                        libraries[sid].add(r.json()["libraryId"])
                return pending == 0

            await eventually(all_completed, within=LOCK_SECONDS * 8, interval=0.2)
            recovery = time.monotonic() - killed
            docs = [(await api.get(f"{URL}/{sid}", headers=key)).json() for sid in sids]
        assert [d["status"] for d in docs] == ["completed"] * 10
        for d in docs:  # one libraryId per group, the one every answer gave
            assert libraries[d["sessionId"]] == {d["libraryId"]}
        assert len({d["libraryId"] for d in docs}) == 10
        assert await redis.zcard(stack.settings().worker.processing_queue_name) == 10  # one processing job each
        assert await redis.hget(METRICS_KEY, MetricField.GROUPS_COMPLETED) == b"10"
        async with ObjectStore.connect(stack.settings().storage) as store:
            assert await store.list_open_uploads("") == []  # every multipart upload was assembled
        report(
            f"[{worker_way}] worker SIGKILLed mid-complete; 20 files completed {recovery:.1f} s later, each group once"
        )
    finally:
        await redis.aclose()
        await slow.close()


async def test_valkey_killed_for_12_s_and_restarted_on_its_aof_loses_no_acknowledged_group(
    stack: Stack, worker_way: str
) -> None:
    # appendfsync always: an acknowledged write is on disk (with everysec, up to a second of them may not be).
    stack.start_stores(valkey_config={"appendfsync": "always"})
    assert stack.valkey is not None
    body = {**SEPARATE, "files": SEPARATE["files"][:2]}
    base = stack.start_api()
    worker = stack.start_worker()
    async with httpx.AsyncClient(base_url=base, timeout=30) as api:
        key = await stack.key()
        sids = await create_groups(api, key, 100, body)
        stack.valkey.kill()  # SIGKILL
        down = [await api.post(URL, json=body, headers=key) for _ in range(3)]
        assert {r.status_code for r in down} == {503}
        assert all(r.headers["content-type"] == "application/problem+json" and r.headers["retry-after"]
                   and r.json()["code"] == "dependency_unavailable" for r in down)  # fmt: skip
        await asyncio.sleep(12.0)  # the workers' polls fail meanwhile; they must ride it out, not exit
        assert worker.poll() is None
        stack.valkey.start()  # same port, same AOF
        restarted = time.monotonic()

        async def created() -> str | None:
            r = await api.post(URL, json=body, headers=key)
            return r.json()["sessionId"] if r.status_code == 201 else None

        new_sid = await eventually(created, within=60, interval=0.05)
        back_after = time.monotonic() - restarted
        statuses = [(await api.get(f"{URL}/{sid}", headers=key)).status_code for sid in sids]
    assert statuses == [200] * 100  # every acknowledged group is intact
    redis = Redis.from_url(stack.redis_url)
    try:
        # Work for the worker that lived through the outage: the new group's provisioning job (queued as part-urls
        # queues it when storage does not answer the API in time).
        job = JobSpec.build(PROVISION_JOB, (new_sid,), job_id=provision_job_id(new_sid),
                            queue=stack.settings().worker.queue_name)  # fmt: skip
        assert await UploadState(redis).enqueue(job) == 1

        async def provisioned_by_worker() -> bool:
            [snap] = await snapshots(redis, [new_sid])
            return provisioned(snap) == 2

        await eventually(provisioned_by_worker, within=60)  # the same worker process carried on
        assert worker.poll() is None
    finally:
        await redis.aclose()
    report(f"[{worker_way}] Valkey SIGKILLed for 12 s and restarted: API answered 201 again {back_after:.2f} s "
           "after the restart, "
           "100/100 acknowledged groups intact, the worker provisioned a new group without a restart")  # fmt: skip


async def test_a_hung_s3_keeps_creates_fast_and_everything_provisions_once_it_answers(stack: Stack) -> None:
    stack.start_stores()
    assert stack.moto is not None
    base = stack.start_api(SPATIALGEN_PROVISION_WAIT_SECONDS="1")
    stack.start_worker()
    redis = Redis.from_url(stack.redis_url)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as api:
            key = await stack.key()
            await storage_ready(api)
            os.kill(stack.moto.pid, signal.SIGSTOP)
            t0 = time.monotonic()
            sids = await create_groups(api, key, 5, SEPARATE)
            creates = (time.monotonic() - t0) / 5
            doc = (await api.get(f"{URL}/{sids[0]}", headers=key)).json()
            for sid in sids:  # each client's first part-urls: storage does not answer, the workers take over
                first_file = (await api.get(f"{URL}/{sid}", headers=key)).json()["files"][0]["uploadId"]
                r = await api.post(f"{URL}/{sid}/files/{first_file}/part-urls", headers=key)
                assert r.status_code == 503 and r.json()["code"] == "storage_not_ready" and r.headers["retry-after"]
            await asyncio.sleep(1.1)  # a fresh readiness result (one is shared for up to a second)
            ready = await api.get("/health/ready")
            # Reported, but the API stays in rotation: creates and status reads work without S3.
            assert ready.status_code == 200 and ready.json()["checks"]["storage"] == "timeout"
            await asyncio.sleep(1)
            os.kill(stack.moto.pid, signal.SIGCONT)
            resumed = time.monotonic()

            async def all_provisioned() -> bool:
                return all(provisioned(s) == 3 for s in await snapshots(redis, sids))

            await eventually(all_provisioned, within=120)
            after = time.monotonic() - resumed
            r = await api.post(f"{URL}/{sids[0]}/files/{doc['files'][0]['uploadId']}/part-urls", headers=key)
            assert r.status_code == 200
            assert (await api.get("/health/ready")).status_code == 200
    finally:
        await redis.aclose()
    report(f"S3 hung: creates took {creates * 1000:.1f} ms each; part-urls 503 with Retry-After; readiness 200 "
           "reporting storage timeout; everything "
           f"provisioned {after:.2f} s after S3 answered again")  # fmt: skip
