"""The operations port (SPATIALGEN_OPS_PORT): liveness, readiness and /metrics on a port of their own, served from
the event loop of the API process they describe, by a granian server embedded in that loop.

Why inside the API process and its loop, and not a second server process: liveness must mean that this loop
answers, readiness uses this process's Redis client, and /metrics counts this process's requests (the figures
shared through Redis are read per scrape either way). A granian server binds one address, so the API's own server
cannot answer on two ports; granian's embeddable server (`granian.server.embed`, documented as experimental: it
logs a warning at each start) runs over an existing loop. It lives and dies with the process: started last in the
app's lifespan, stopped first, and a listener that ends on its own ends the process (SIGTERM to itself: granian
restarts the worker, a lone process exits), so probes never describe a process that is not serving.

With SPATIALGEN_API_WORKERS > 1 every worker process binds the port (SO_REUSEPORT, as granian does for the API's
own port on Linux); the kernel hands each connection to one of them, so a scrape sees one worker's counters.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from granian.constants import Interfaces
from granian.server.embed import Server
from litestar.types import ASGIApp

log = logging.getLogger("spatialgen.api")

STOP_SECONDS = 5.0
"""Longest wait for the listener to close at shutdown (probes and scrapes are short)."""


class OpsPortError(RuntimeError):
    """The operations port could not be opened."""


@asynccontextmanager
async def serve_ops_port(app: ASGIApp, host: str, port: int) -> AsyncIterator[None]:
    """Serve `app` on host:port from the running event loop while the block runs."""
    server = Server(app, address=host, port=port, interface=Interfaces.ASGINL, websockets=False, log_access=False)
    task = asyncio.create_task(server.serve(), name=f"spatialgen-ops-port-{port}")
    # serve() binds the address in its first step, before its first wait: one pass of the loop tells whether
    # it could. A port taken by another user's process fails here, at start, not on the first probe.
    await asyncio.sleep(0)
    if task.done():
        raise OpsPortError(f"cannot serve the operations port {host}:{port}") from _failure(task)
    stopping = False

    def ended(done: asyncio.Task[None]) -> None:
        if stopping:
            return
        log.error("operations port %s:%s stopped (%r): stopping this API process", host, port, _failure(done))
        os.kill(os.getpid(), signal.SIGTERM)

    task.add_done_callback(ended)
    log.info("operations routes on %s:%s", host, port)
    try:
        yield
    finally:
        stopping = True
        server.stop()  # type: ignore[no-untyped-call]
        try:
            await asyncio.wait_for(task, STOP_SECONDS)
        except TimeoutError:
            log.warning("operations port %s:%s did not close within %s s", host, port, STOP_SECONDS)


def _failure(task: asyncio.Task[None]) -> BaseException | None:
    """Why a finished listener task ended (None: it returned)."""
    if task.cancelled():
        return asyncio.CancelledError()
    return task.exception()
