"""The operations port (SPATIALGEN_OPS_PORT) on real `spatialgen-api` processes: the ops routes there and only
there, counted with the API's own requests, and gone with the process."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from deploy.local.devstack import api_command, free_port
from tests.conftest import SEED_REQUEST
from tests.integration.test_ops import OPERATIONS, PROBLEM, URL, requests_series, samples, series
from tests.processes import ROOT, Stack, eventually

OPS_PATHS = ("/health/live", "/health/ready", "/metrics")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Valkey and moto for this module's API processes (each test starts its own)."""
    s = Stack(tmp_path_factory.mktemp("ops-port"))
    try:
        s.start_stores()
        yield s
    finally:
        s.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as c:
        yield c


async def ready(http: httpx.AsyncClient, base: str) -> dict[str, Any] | None:
    """Readiness once it answers 200 (storage may still be "starting": it does not decide readiness)."""
    r = await http.get(f"{base}/health/ready")
    return r.json() if r.status_code == 200 else None


async def test_the_ops_routes_move_to_their_port_and_count_the_api_requests(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    ops_port = free_port()
    api = stack.start_api(SPATIALGEN_OPS_PORT=str(ops_port))
    ops = f"http://127.0.0.1:{ops_port}"
    key = await stack.key()
    await eventually(lambda: ready(http, ops), within=30)

    # The API port: uploads, its documents, and no operations route (404 problem+json, as any unknown path).
    created = await http.post(f"{api}{URL}", json=SEED_REQUEST, headers=key)
    assert created.status_code == 201, created.text
    for path in OPS_PATHS:
        r = await http.get(f"{api}{path}")
        assert r.status_code == 404 and r.headers["content-type"].startswith(PROBLEM), (path, r.text)
    documented = (await http.get(f"{api}/schema/openapi.json")).json()["paths"]
    assert set(documented) == {path for _, path in OPERATIONS} - set(OPS_PATHS)

    # The ops port: the operations routes, and nothing of the API (no upload route, no documents).
    assert (await http.get(f"{ops}/health/live")).json() == {"status": "ok"}
    for path in (f"{URL}/{created.json()['sessionId']}", "/schema/openapi.json", "/schema"):
        r = await http.get(f"{ops}{path}", headers=key)
        assert r.status_code == 404 and r.headers["content-type"].startswith(PROBLEM), (path, r.text)
    assert (await http.post(f"{ops}{URL}", json=SEED_REQUEST, headers=key)).status_code == 404
    assert (await http.options(f"{ops}/metrics")).headers["allow"] == "GET, OPTIONS"

    # One process, one registry: the scrape on the ops port counts what the API port answered.
    m = samples((await http.get(f"{ops}/metrics")).text)
    assert m[requests_series(URL, "POST", 201)] == 1
    assert m["spatialgen_groups_created_total"] == 1
    assert m[requests_series("unmatched", "GET", 404)] == len(OPS_PATHS) + 3  # API port's 3 + the ops port's 3
    assert m[requests_series("/health/live", "GET", 200)] == 1
    assert m["spatialgen_state_store_up"] == 1 and m["spatialgen_groups_live"] >= 1
    assert m[series("spatialgen_queue_depth", queue="arq:queue", state="due")] >= 0
    assert m["process_resident_memory_bytes"] > 0


async def test_without_an_ops_port_the_api_port_serves_everything(stack: Stack, http: httpx.AsyncClient) -> None:
    api = stack.start_api()
    assert (await http.get(f"{api}/health/live")).json() == {"status": "ok"}
    await eventually(lambda: ready(http, api), within=30)
    m = samples((await http.get(f"{api}/metrics")).text)
    assert m[requests_series("/health/live", "GET", 200)] == 1
    documented = (await http.get(f"{api}/schema/openapi.json")).json()["paths"]
    assert set(OPS_PATHS) <= set(documented)


async def test_every_api_worker_process_answers_on_the_ops_port(stack: Stack, http: httpx.AsyncClient) -> None:
    ops_port = free_port()
    stack.start_api(SPATIALGEN_OPS_PORT=str(ops_port), SPATIALGEN_API_WORKERS="2")
    ops = f"http://127.0.0.1:{ops_port}"

    async def two_registries_answer() -> bool:
        # A new connection per scrape: the kernel hands each to one of the workers' sockets (SO_REUSEPORT). One
        # process alone would count its earlier scrapes 0, 1, 2, ...; a count seen twice is another process's.
        seen = []
        for _ in range(40):
            async with httpx.AsyncClient(timeout=10) as fresh:
                m = samples((await fresh.get(f"{ops}/metrics")).text)
            seen.append(m.get(requests_series("/metrics", "GET", 200), 0))
        return len(set(seen)) < len(seen)

    await eventually(two_registries_answer, within=30)
    assert (await http.get(f"{ops}/health/live")).status_code == 200


async def test_the_ops_port_closes_with_the_api_process(stack: Stack, http: httpx.AsyncClient) -> None:
    ops_port = free_port()
    api = stack.start_api(SPATIALGEN_OPS_PORT=str(ops_port))
    proc, api_port = stack.apis[-1]
    assert (await http.get(f"http://127.0.0.1:{ops_port}/health/live")).status_code == 200
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    for port in (api_port, ops_port):
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/health/live")
    assert api.endswith(str(api_port))


@contextlib.contextmanager
def port_taken() -> Iterator[int]:
    """A port another program listens on (no SO_REUSEPORT: nobody else may bind it)."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def test_an_ops_port_in_use_stops_the_api_at_start(stack: Stack) -> None:
    with port_taken() as taken:
        env = stack.env(SPATIALGEN_PORT=str(free_port()), SPATIALGEN_OPS_PORT=str(taken))
        done = subprocess.run(api_command(), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
                              check=False)  # fmt: skip
    assert done.returncode != 0
    assert f"cannot bind SPATIALGEN_OPS_PORT 127.0.0.1:{taken}" in done.stderr, done.stderr
