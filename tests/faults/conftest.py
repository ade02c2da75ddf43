"""Fixtures of the fault tests: every test gets its own stack of real processes, stopped whatever happens.

`worker_way` runs a test twice: with workers started by `spatialgen-worker`, and by arq's own CLI
(`arq worker.settings.WorkerSettings`); recovery must not depend on how the worker is started.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from deploy.local.devstack import WORKER_WAYS, DevValkey
from tests.processes import MASTER, Stack, start_ha

__all__ = ["MASTER"]  # the Sentinel master name of the `ha` stack, imported from here by the fault tests


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
    """A Valkey primary (the stack's own) with two replicas and three Sentinels (`start_ha`)."""
    setup = await start_ha(Stack(tmp_path))
    try:
        assert setup.primary is not None
        yield setup.stack, setup.primary, setup.replicas, setup.sentinel_ports
    finally:
        setup.stop()
