"""Fixtures of the fault tests: every test gets its own stack of real processes, stopped whatever happens.

`worker_way` runs a test twice: with workers started by `spatialgen-worker`, and by arq's own CLI
(`arq worker.settings.WorkerSettings`); recovery must not depend on how the worker is started.
"""

from __future__ import annotations

import contextlib
import functools
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from deploy.local.devstack import WORKER_WAYS, DevValkey, free_port, start_sentinel
from tests.processes import Stack, eventually

MASTER = "spatialgen"
"""The Sentinel master name of the `ha` stack."""


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    s = Stack(tmp_path)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(params=WORKER_WAYS)
def worker_way(request: pytest.FixtureRequest, stack: Stack) -> str:
    """The stack's workers start this way (both ways, one test run each)."""
    stack.worker_way = request.param
    return str(request.param)


@pytest.fixture
async def ha(tmp_path: Path) -> AsyncIterator[tuple[Stack, DevValkey, list[DevValkey], list[int]]]:
    stack = Stack(tmp_path)
    stack.start_stores()  # the stack's own Valkey becomes the primary
    assert stack.valkey is not None
    primary = stack.valkey
    replicas = [DevValkey(free_port(), tmp_path / f"replica{i}", extra={"replicaof": f"127.0.0.1 {primary.port}"})
                .start() for i in range(2)]  # fmt: skip
    sentinels: list[subprocess.Popen[bytes]] = []
    ports = []
    try:
        for replica in replicas:
            admin = Redis.from_url(replica.url)
            await eventually(functools.partial(_linked, admin), within=30)
            await admin.aclose()
        for i in range(3):
            port = free_port()
            sentinels.append(start_sentinel(port, tmp_path / f"sentinel{i}", MASTER, primary.port))
            ports.append(port)
        yield stack, primary, replicas, ports
    finally:
        for s in sentinels:
            s.terminate()
        for s in sentinels:
            with contextlib.suppress(subprocess.TimeoutExpired):
                s.wait(10)
        stack.stop()
        for replica in replicas:
            replica.stop()


async def _linked(replica: Redis) -> bool:
    info = await replica.info("replication")
    return info.get("master_link_status") == "up"
