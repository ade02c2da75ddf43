"""Redis high availability through Sentinel: the primary SIGKILLed under create load, a replica promoted.

Real processes: a Valkey primary and two replicas (AOF), three Sentinels (valkey-server --sentinel, quorum 2),
moto, an API process and a worker configured only through SPATIALGEN_REDIS_SENTINELS. Measured and printed:
seconds of 503s until the promoted replica serves, and acknowledged groups lost, with the replica-acknowledged
write guarantee off and on. Asserted: with it on, no acknowledged group is lost; either way the API and the
worker carry on without a restart. Two replicas, because with the guarantee on (WAIT 1) a primary needs a
replica to acknowledge anything: after the failover the second replica follows the promoted one.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from redis.asyncio import Redis

from app.state import UploadState
from app.state.jobs import PROVISION_JOB, JobSpec, provision_job_id
from deploy.local.devstack import DevValkey
from tests.faults.conftest import MASTER
from tests.processes import Stack, eventually, report

BODY = {"videoName": "ha", "layout": "2D",
        "files": [{"fileName": "v.mp4", "fileRole": "video", "sizeBytes": 6 * 1024 * 1024}]}  # fmt: skip


@pytest.mark.parametrize("write_replicas", [0, 1])
async def test_primary_killed_under_load_the_replica_takes_over(
    ha: tuple[Stack, DevValkey, list[DevValkey], list[int]], write_replicas: int
) -> None:
    stack, primary, replicas, sentinel_ports = ha
    sentinels = ",".join(f"127.0.0.1:{p}" for p in sentinel_ports)
    env = {"SPATIALGEN_REDIS_SENTINELS": sentinels, "SPATIALGEN_REDIS_SENTINEL_MASTER": MASTER,
           "SPATIALGEN_REDIS_WRITE_REPLICAS": str(write_replicas)}  # fmt: skip
    base = stack.start_api(**env)
    worker = stack.start_worker(**env)
    api_proc = stack.apis[0][0]
    load = CreateLoad(await stack.key("ha"))
    async with httpx.AsyncClient(base_url=base, timeout=15) as api:
        loaders = [asyncio.create_task(load.run(api)) for _ in range(4)]
        await eventually(lambda: _at_least(load.acknowledged, 200), within=60)
        primary.kill()  # SIGKILL, mid-load
        killed = time.monotonic()
        try:
            await eventually(lambda: _true(bool(load.recovered_at)), within=60)
        finally:
            assert load.unexpected == [], load.unexpected[:5]  # every refusal is a 503 dependency_unavailable
        more = len(load.acknowledged) + 50
        await eventually(lambda: _at_least(load.acknowledged, more), within=60)
        load.stop.set()
        await asyncio.gather(*loaders)
    acknowledged, failures, recovered_at = load.acknowledged, load.failures, load.recovered_at
    outage = recovered_at[0] - (min(failures) if failures else killed)
    roles = {}
    for replica in replicas:
        client = Redis.from_url(replica.url)
        roles[replica.url] = (await client.info("replication"))["role"]
        await client.aclose()
    assert sorted(roles.values()) == ["master", "slave"]  # one replica was promoted, the other follows it
    new_primary = Redis.from_url(next(url for url, role in roles.items() if role == "master"))
    try:
        state = UploadState(new_primary)
        lost = [sid for sid in acknowledged if await state.snapshot(sid) is None]
        # The worker carried on: a group created after the failover is provisioned through the new primary (its
        # job queued as part-urls queues it when storage does not answer the API in time).
        newest = acknowledged[-1]
        job = JobSpec.build(PROVISION_JOB, (newest,), job_id=provision_job_id(newest),
                            queue=stack.settings().worker.queue_name)  # fmt: skip
        assert await state.enqueue(job) == 1

        async def provisioned() -> bool:
            snap = await state.snapshot(newest)
            return snap is not None and snap.s3_upload_id(snap.record.files[0].upload_id) is not None

        await eventually(provisioned, within=60)
    finally:
        await new_primary.aclose()
    assert api_proc.poll() is None and worker.poll() is None  # no restart needed
    if write_replicas:
        assert lost == []
    report(f"Sentinel failover, write guarantee {'on (WAIT 1)' if write_replicas else 'off'}: 503s for "
           f"{outage:.2f} s until the promoted replica served ({len(failures)} refused requests); "
           f"{len(lost)} of {len(acknowledged)} acknowledged groups lost")  # fmt: skip


class CreateLoad:
    """Concurrent creates, recording what was acknowledged (201) and when requests were refused."""

    def __init__(self, key: dict[str, str]) -> None:
        self.key = key
        self.acknowledged: list[str] = []
        self.failures: list[float] = []
        self.recovered_at: list[float] = []
        self.unexpected: list[str] = []
        self.stop = asyncio.Event()

    async def run(self, api: httpx.AsyncClient) -> None:
        while not self.stop.is_set():
            try:
                r = await api.post("/api/videos/uploads", json=BODY, headers=self.key)
            except httpx.HTTPError:
                self.failures.append(time.monotonic())
                continue
            if r.status_code == 201:
                self.acknowledged.append(r.json()["sessionId"])
                if self.failures and not self.recovered_at:
                    self.recovered_at.append(time.monotonic())
                continue
            if r.status_code != 503 or r.json().get("code") != "dependency_unavailable":
                self.unexpected.append(f"{r.status_code} {r.text[:300]}")
            self.failures.append(time.monotonic())
            await asyncio.sleep(0.05)


async def _at_least(items: list[str], n: int) -> bool:
    return len(items) >= n


async def _true(value: bool) -> bool:
    return value
