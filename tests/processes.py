"""Whole-service stacks of real processes for fault and scale-out tests: Valkey, moto, API and worker processes.

Every process runs the same console scripts production runs, on free loopback ports, configured only through
SPATIALGEN_* variables; tests kill, stop and restart them for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
from redis.asyncio import Redis

from app.settings import MIB, Settings
from app.state.apikeys import create_key
from deploy.local.devstack import (
    DevValkey,
    api_command,
    free_port,
    start_moto,
    start_sentinel,
    wait_for_port,
    worker_command,
)

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")
MASTER = "spatialgen"
"""The Sentinel master name of the high-availability layout (`start_ha`)."""


@dataclass
class Stack:
    """Valkey (AOF), moto, API processes and worker processes, all owned by one test."""

    tmp: Path
    settings_env: dict[str, str] = field(default_factory=dict)
    valkey: DevValkey | None = None
    moto: subprocess.Popen[bytes] | None = None
    apis: list[tuple[subprocess.Popen[bytes], int]] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    s3_port: int = 0
    worker_s3_url: str | None = None
    worker_way: str = "spatialgen-worker"
    """How worker processes start: `spatialgen-worker`, or `arq` (arq's own CLI on worker.settings.WorkerSettings)."""

    def start_stores(self, *, valkey_config: dict[str, str] | None = None) -> None:
        """Valkey with AOF in tmp (config overrides, e.g. appendfsync) and moto with the bucket."""
        self.valkey = DevValkey(free_port(), self.tmp / "valkey", extra=valkey_config).start()
        self.s3_port = free_port()
        self.moto = start_moto(self.s3_port)
        with httpx.Client() as c:  # create the bucket (path-style PUT; moto accepts any credentials)
            c.put(f"http://127.0.0.1:{self.s3_port}/{self.bucket}")

    @property
    def bucket(self) -> str:
        return "spatialgen-faults"

    @property
    def redis_url(self) -> str:
        assert self.valkey is not None
        return self.valkey.url

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def env(self, **overrides: str) -> dict[str, str]:
        """The SPATIALGEN_* environment of every process of the stack."""
        return {
            **os.environ,
            # The console scripts import the checkout the tests run from (a worktree too), not the one installed.
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "SPATIALGEN_REDIS_URL": self.redis_url,
            "SPATIALGEN_S3_ENDPOINT_URL": self.s3_url,
            "SPATIALGEN_S3_BUCKET": self.bucket,
            "SPATIALGEN_S3_ACCESS_KEY_ID": "testing",
            "SPATIALGEN_S3_SECRET_ACCESS_KEY": "testing",
            "SPATIALGEN_PART_SIZE_BYTES": str(5 * MIB),
            "SPATIALGEN_KEY_CACHE_SECONDS": "0",
            "SPATIALGEN_EXPIRY_SWEEP_SECONDS": "60",
            # These tests push hundreds of groups through one key in seconds; limits have their own tests
            # (test_limits_processes.py sets them back on).
            "SPATIALGEN_RATE_LIMITS": "off",
            "SPATIALGEN_QUOTA_LIVE_GROUPS": str(10**9),
            **self.settings_env,
            **overrides,
        }

    def settings(self) -> Settings:
        """The stack's settings, for in-test helpers (state reads, sweeps)."""
        return Settings.from_env(self.env())

    def start_api(self, **overrides: str) -> str:
        """One more API process; returns its base URL (once its operations port listens too, if it has one)."""
        port = free_port()
        env = self.env(SPATIALGEN_PORT=str(port), **overrides)
        with open(self.tmp / f"api-{port}.log", "ab") as log:  # kept with the test's tmp dir, for post-mortems
            proc = subprocess.Popen(api_command(), env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
        wait_for_port(port, proc)
        if int(env.get("SPATIALGEN_OPS_PORT") or 0):
            wait_for_port(int(env["SPATIALGEN_OPS_PORT"]), proc)
        self.apis.append((proc, port))
        return f"http://127.0.0.1:{port}"

    def start_worker(self, *, way: str | None = None, **overrides: str) -> subprocess.Popen[bytes]:
        """One more worker process (its S3 endpoint may differ, e.g. a slowing proxy), started `way`
        (default: the stack's `worker_way`)."""
        env = self.env(**overrides)
        if self.worker_s3_url:
            env["SPATIALGEN_S3_ENDPOINT_URL"] = self.worker_s3_url
        with open(self.tmp / f"worker-{len(self.workers)}.log", "ab") as log:
            proc = subprocess.Popen(worker_command(way or self.worker_way), env=env, cwd=ROOT, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self.workers.append(proc)
        return proc

    async def key(self, account: str = "faults") -> dict[str, str]:
        """A fresh upload key's header."""
        client = Redis.from_url(self.redis_url)
        try:
            secret, _ = await create_key(client, account=account, role="upload")
        finally:
            await client.aclose()
        return {"X-SPATIALGEN-APPKEY": secret}

    def stop(self) -> None:
        """Everything down, whatever state it is in (stopped processes are continued first)."""
        procs = [p for p, _ in self.apis] + self.workers + ([self.moto] if self.moto else [])
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGCONT)
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.valkey is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.valkey.pid, signal.SIGCONT)
            self.valkey.stop()


@dataclass
class HA:
    """Redis through Sentinel for a Stack: its own Valkey as the first primary, two replicas and three Sentinels
    (quorum 2), as `start_ha` builds it. `stop()` stops whatever was started, in any state."""

    stack: Stack
    primary: DevValkey | None = None
    """The first primary (the stack's own Valkey); after a failover it may be a replica."""
    replicas: list[DevValkey] = field(default_factory=list)
    sentinels: list[subprocess.Popen[bytes]] = field(default_factory=list)
    sentinel_ports: list[int] = field(default_factory=list)

    @property
    def nodes(self) -> list[DevValkey]:
        """Every Valkey node, the first primary first."""
        return ([self.primary] if self.primary else []) + self.replicas

    def env(self) -> dict[str, str]:
        """The SPATIALGEN_* variables pointing a service process at the Sentinels."""
        return {"SPATIALGEN_REDIS_SENTINELS": ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports),
                "SPATIALGEN_REDIS_SENTINEL_MASTER": MASTER}  # fmt: skip

    def stop(self) -> None:
        for s in self.sentinels:
            s.terminate()
        for s in self.sentinels:
            with contextlib.suppress(subprocess.TimeoutExpired):
                s.wait(10)
        self.stack.stop()
        for replica in self.replicas:
            replica.stop()


async def start_ha(stack: Stack, *, valkey_config: dict[str, str] | None = None, down_after_ms: int = 1000) -> HA:
    """The stack's stores with its Valkey as a Sentinel-watched primary: two replicas (linked before the Sentinels
    start) and three Sentinels that call the primary down after down_after_ms without an answer. valkey_config
    applies to every node (e.g. appendfsync). On failure, whatever started is stopped."""
    ha = HA(stack)
    try:
        stack.start_stores(valkey_config=valkey_config)
        assert stack.valkey is not None
        ha.primary = primary = stack.valkey
        for i in range(2):
            extra = {**(valkey_config or {}), "replicaof": f"127.0.0.1 {primary.port}"}
            ha.replicas.append(DevValkey(free_port(), stack.tmp / f"replica{i}", extra=extra).start())
        for replica in ha.replicas:
            admin = Redis.from_url(replica.url)
            try:
                await eventually(functools.partial(replica_linked, admin), within=30)
            finally:
                await admin.aclose()
        for i in range(3):
            port = free_port()
            ha.sentinels.append(start_sentinel(port, stack.tmp / f"sentinel{i}", MASTER, primary.port,
                                               down_after_ms=down_after_ms))  # fmt: skip
            ha.sentinel_ports.append(port)
    except BaseException:
        ha.stop()
        raise
    return ha


async def replica_linked(replica: Redis) -> bool:
    """The node is a replica whose link to its primary is up."""
    info = await replica.info("replication")
    return bool(info.get("role") == "slave" and info.get("master_link_status") == "up")


def sigkill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process and its process group (no clean-up of any kind), and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


async def eventually(check: Callable[[], Awaitable[T | None]], *, within: float, interval: float = 0.1) -> T:
    """Poll until check() returns something truthy; fail after `within` s (only a hang ends it: no timing bound)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"still not true after {within:g} s")
        await asyncio.sleep(interval)


class SlowProxy:
    """A loopback TCP proxy that holds every request `delay` seconds before forwarding it (a slow S3)."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay: float) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    if delay:
                        await asyncio.sleep(delay)
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pump(reader, up_writer, self.delay), pump(up_reader, writer, 0.0))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)


def report(line: str) -> None:
    """A measured figure, printed for the test log (never asserted against a threshold)."""
    print(f"[measured] {line}")


__all__ = ["HA", "MASTER", "ROOT", "SlowProxy", "Stack", "eventually", "replica_linked", "report", "sigkill",
           "start_ha"]  # fmt: skip
