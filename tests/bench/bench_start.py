"""Benchmark: throughput and latency of POST /api/videos/uploads (Start Upload Group) under 32 keep-alive clients.

Compares our app (with Valkey) to a bare Litestar app on the same ASGI server, or our app on granian vs uvicorn.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import multiprocessing
import multiprocessing.connection
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PATH = "/api/videos/uploads"
OURS_TARGET = "app.http.asgi:app"
BARE_TARGET = "tests.bench.bare_app:app"
TARGET_RATIO = 0.50
UNREACHABLE_LIMITS = "create=1000000/1000000,part_urls=1000000/1000000,complete=1000000/1000000,reads=1000000/1000000"
ANSWER_ENV = "BENCH_BARE_ANSWER"  # read by bare_app.py
MAX_SAMPLES = 3


# ---------------------------------------------------------------------------------------------
# Load generator: runs in its own process, so its CPU never competes with the server's GIL.
# Raw asyncio protocols over persistent connections, one request in flight per connection;
# it parses only the status line and Content-Length of each answer.
# ---------------------------------------------------------------------------------------------
@dataclass
class LoadJob:
    """What the load process should do for one measurement."""

    port: int
    request: bytes
    connections: int
    warmup: float
    seconds: float


@dataclass
class LoadResult:
    """What one measurement produced (only answers completed inside the measured window count)."""

    requests: int
    seconds: float
    latencies_ms: list[float]
    errors: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    total_completed: int = 0
    client_cores: float = 0.0

    @property
    def rps(self) -> float:
        """Answers per second in the window (errors included; they are reported separately)."""
        return self.requests / self.seconds

    def percentile(self, q: int) -> float:
        """Latency percentile in ms (q in 1..99)."""
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else float("nan")
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[q - 1]


class _Load:
    """State shared by the connections of one measurement."""

    def __init__(self, job: LoadJob, loop: asyncio.AbstractEventLoop) -> None:
        self.job = job
        self.loop = loop
        self.window_start = 0.0
        self.window_end = float("inf")
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.samples: list[str] = []
        self.completed = 0
        self.in_window = 0
        self.open = 0
        self.reconnects: set[asyncio.Task[None]] = set()
        self.done: asyncio.Future[None] = loop.create_future()

    def record(self, status: int, body: bytes, started: float, now: float) -> None:
        self.completed += 1
        if status != 201:
            self.errors[f"HTTP {status}"] += 1
            if len(self.samples) < MAX_SAMPLES:
                self.samples.append(f"HTTP {status}: {body[:300].decode(errors='replace')}")
        if self.window_start <= now <= self.window_end:
            # Throughput counts every answer inside the window; latency only requests sent inside it.
            self.in_window += 1
            if started >= self.window_start:
                self.latencies.append((now - started) * 1e3)

    def closed(self, conn: _Conn, exc: Exception | None) -> None:
        self.open -= 1
        if time.perf_counter() < self.window_end:
            # The server dropped a connection mid-run: count it and reconnect, keeping concurrency.
            self.errors[f"connection lost ({exc!r})" if exc else "connection closed by server"] += 1
            task = self.loop.create_task(self.connect())
            self.reconnects.add(task)
            task.add_done_callback(self.reconnects.discard)
        elif self.open == 0 and not self.done.done():
            self.done.set_result(None)

    async def connect(self) -> None:
        self.open += 1
        try:
            await self.loop.create_connection(lambda: _Conn(self), "127.0.0.1", self.job.port)
        except OSError as exc:
            self.open -= 1
            self.errors[f"connect failed ({exc!r})"] += 1
            if not self.done.done():
                self.done.set_exception(exc)


class _Conn(asyncio.Protocol):
    """One keep-alive connection sending the same pre-built request again and again."""

    def __init__(self, load: _Load) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.need = -1  # body bytes still expected; -1 while reading the head
        self.status = 0
        self.started = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.send()

    def send(self) -> None:
        assert self.transport is not None
        self.started = time.perf_counter()
        self.transport.write(self.load.job.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        while True:
            if self.need < 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    self.buf = buf
                    return
                head = buf[:end].lower()
                self.status = int(head[9:12])
                at = head.find(b"\r\ncontent-length:")
                if at < 0:
                    raise RuntimeError(f"answer without Content-Length: {head[:200]!r}")
                eol = head.find(b"\r\n", at + 2)
                self.need = int(head[at + 17 : eol if eol >= 0 else None])
                buf = buf[end + 4 :]
            if len(buf) < self.need:
                self.buf = buf
                return
            body, buf, self.need = buf[: self.need], buf[self.need :], -1
            now = time.perf_counter()
            self.load.record(self.status, body, self.started, now)
            assert self.transport is not None
            if now >= self.load.window_end:
                self.buf = b""
                self.transport.close()
                return
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.closed(self, exc)


async def _run_load(job: LoadJob) -> LoadResult:
    loop = asyncio.get_running_loop()
    load = _Load(job, loop)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    load.window_start = t0 + job.warmup
    load.window_end = load.window_start + job.seconds
    await asyncio.gather(*(load.connect() for _ in range(job.connections)))
    await asyncio.wait_for(load.done, job.warmup + job.seconds + 30)
    wall = time.perf_counter() - t0
    return LoadResult(
        requests=load.in_window,
        seconds=job.seconds,
        latencies_ms=load.latencies,
        errors=load.errors,
        samples=load.samples,
        total_completed=load.completed,
        client_cores=(time.process_time() - cpu0) / wall,
    )


def _load_process(conn: multiprocessing.connection.Connection) -> None:
    """Entry point of the load process: run each job received, send back its result; None ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates us
    while (job := conn.recv()) is not None:
        conn.send(asyncio.run(_run_load(job)))


# ---------------------------------------------------------------------------------------------
# Processes: Valkey, the servers, and their CPU time (read from /proc, whole process tree).
# ---------------------------------------------------------------------------------------------
def tree_cpu_seconds(root: int) -> float:
    """User+system CPU seconds of a process and all its descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2 :].split()
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / tick
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return sum(cpu.get(pid, 0.0) for pid in tree)


@dataclass
class Server:
    """A running ASGI server process."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    uses_redis: bool = True


def start_server(name: str, kind: str, target: str, env: dict[str, str]) -> Server:
    """Start `target` on a free port with the project's own server command line (one worker)."""
    from deploy.local.devstack import BIN, free_port, wait_for_port

    port = free_port()
    if kind == "uvicorn":
        cmd = [str(BIN / "uvicorn"), target, "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
               "--log-level", "warning"]  # fmt: skip
    else:  # the options app/serve.py (spatialgen-api) gives granian
        cmd = [str(BIN / "granian"), "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--no-ws", "--log-level", "warning", target]  # fmt: skip
    # A session of its own: Ctrl-C reaches only us, and the whole group can be killed by its id.
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, start_new_session=True)
    try:
        wait_for_port(port, proc)
    except BaseException:
        stop_all([proc], [proc.pid])
        raise
    return Server(name, port, proc)


def stop_all(procs: list[subprocess.Popen[bytes]], groups: list[int]) -> None:
    """Stop our processes newest first (servers before Valkey), then kill leftovers of our server groups."""
    from deploy.local.devstack import stop

    for p in reversed(procs):
        stop([p])
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def post_once(port: int, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """One plain request (used to capture our real answer and to check the baseline)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", PATH, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


class RedisJanitor:
    """Keeps Valkey small between runs: flush everything but the benchmark's API key."""

    def __init__(self, url: str, key_hash: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.key_hash = key_hash
        saved = self.client.dump(key_hash)
        if not isinstance(saved, bytes):
            raise RuntimeError(f"API key hash {key_hash} not found")
        self.saved = saved

    def used_memory_mb(self) -> float:
        """Valkey's used_memory in MiB."""
        info = self.client.info("memory")
        assert isinstance(info, dict)
        return float(info["used_memory"]) / 2**20

    def reset(self) -> None:
        """FLUSHALL, then restore the API key (the servers' key caches keep working)."""
        self.client.flushall()
        self.client.restore(self.key_hash, 0, self.saved)

    def close(self) -> None:
        """Close the connection."""
        self.client.close()


# ---------------------------------------------------------------------------------------------
# Measurement and reporting.
# ---------------------------------------------------------------------------------------------
@dataclass
class Sample:
    """One measured run of one server."""

    result: LoadResult
    server_us_per_req: float
    valkey_us_per_req: float


@dataclass
class Bench:
    """Everything a run needs: the load process, the request, the options."""

    args: argparse.Namespace
    request_body: bytes
    api_key: str
    valkey_pid: int
    janitor: RedisJanitor
    pipe: multiprocessing.connection.Connection

    def request_bytes(self, port: int) -> bytes:
        """The pre-built HTTP/1.1 request sent over and over."""
        head = (
            f"POST {PATH} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n"
            "Content-Type: application/json\r\n"
            f"X-SPATIALGEN-APPKEY: {self.api_key}\r\n"
            f"Content-Length: {len(self.request_body)}\r\n"
            "\r\n"
        )
        return head.encode() + self.request_body

    def measure(self, server: Server) -> Sample:
        """Run the load against one server and collect throughput, latency and CPU per request."""
        job = LoadJob(
            port=server.port,
            request=self.request_bytes(server.port),
            connections=self.args.connections,
            warmup=self.args.warmup,
            seconds=self.args.seconds,
        )
        cpu0, vk0 = tree_cpu_seconds(server.proc.pid), tree_cpu_seconds(self.valkey_pid)
        self.pipe.send(job)
        result: LoadResult = self.pipe.recv()
        cpu1, vk1 = tree_cpu_seconds(server.proc.pid), tree_cpu_seconds(self.valkey_pid)
        n = max(result.total_completed, 1)
        if result.errors:
            print(f"  !! {server.name}: {sum(result.errors.values())} errors: {dict(result.errors)}", flush=True)
            for s in result.samples:
                print(f"     {s}", flush=True)
        mem = self.janitor.used_memory_mb()
        self.janitor.reset()
        if mem > 1024:
            print(f"  !! valkey used {mem:.0f} MiB during this run", flush=True)
        return Sample(result, (cpu1 - cpu0) / n * 1e6, (vk1 - vk0) / n * 1e6)


def fmt(name: str, rps: float, p50: float, p99: float) -> str:
    """`name 2150 req/s (p50 14.1 ms, p99 31.0 ms)`."""
    return f"{name} {rps:.0f} req/s (p50 {p50:.1f} ms, p99 {p99:.1f} ms)"


def summary(samples: list[Sample]) -> tuple[float, float, float]:
    """Medians over rounds of req/s, p50 and p99."""
    return (
        statistics.median(s.result.rps for s in samples),
        statistics.median(s.result.percentile(50) for s in samples),
        statistics.median(s.result.percentile(99) for s in samples),
    )


def cpu_summary(labels: list[str], servers: list[Server], samples: list[list[Sample]]) -> str:
    """Medians over rounds of server CPU per request: steadier than req/s on a shared 2-core machine."""
    parts = []
    for label, server, runs in zip(labels, servers, samples, strict=True):
        us = statistics.median(s.server_us_per_req for s in runs)
        vk = statistics.median(s.valkey_us_per_req for s in runs)
        parts.append(f"{label} {us:.0f} µs" + (f" (+ valkey {vk:.0f} µs)" if server.uses_redis else ""))
    a, b = (statistics.median(s.server_us_per_req for s in runs) for runs in samples)
    return f"server CPU per request: {' | '.join(parts)} | {labels[1]}/{labels[0]} {b / a:.2f}"


def run_rounds(bench: Bench, servers: list[Server], labels: list[str], ratio_label: str) -> list[list[Sample]]:
    """Alternate the two servers (order flipped each round), printing one line per round."""
    samples: list[list[Sample]] = [[] for _ in servers]
    for rnd in range(1, bench.args.rounds + 1):
        order = list(range(len(servers))) if rnd % 2 else list(reversed(range(len(servers))))
        for i in order:
            samples[i].append(bench.measure(servers[i]))
        last = [s[-1] for s in samples]
        line = " | ".join(
            fmt(label, s.result.rps, s.result.percentile(50), s.result.percentile(99))
            for label, s in zip(labels, last, strict=True)
        )
        print(f"round {rnd}/{bench.args.rounds}: {line} | {ratio_label} {last[0].result.rps / last[1].result.rps:.2f}")
        cpu = " | ".join(
            f"{label} {s.server_us_per_req:.0f} µs"
            + (f" + valkey {s.valkey_us_per_req:.0f} µs" if srv.uses_redis else "")
            for label, s, srv in zip(labels, last, servers, strict=True)
        )
        cores = ", ".join(f"{s.result.client_cores:.2f}" for s in last)
        print(f"    CPU per request: {cpu} | load generator busy {cores} cores", flush=True)
    return samples


@dataclass
class Resources:
    """Everything to tear down on exit, whatever happens."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)  # process groups of the servers (their own sessions)
    loader: multiprocessing.process.BaseProcess | None = None
    pipe: multiprocessing.connection.Connection | None = None
    janitor: RedisJanitor | None = None

    def close(self) -> None:
        """Stop the load process, close Redis, stop servers and Valkey."""
        if self.loader is not None and self.loader.is_alive():
            try:
                if self.pipe is not None:
                    self.pipe.send(None)
                self.loader.join(2)
            except OSError:
                pass
            if self.loader.is_alive():
                self.loader.terminate()
                self.loader.join(5)
        if self.janitor is not None:
            with contextlib.suppress(Exception):
                self.janitor.close()
        stop_all(self.procs, self.groups)


async def _create_key(url: str) -> str:
    from redis.asyncio import Redis

    from app.state.apikeys import create_key

    client = Redis.from_url(url)
    try:
        secret, _ = await create_key(client, account="bench", role="upload", label="bench_start")
    finally:
        await client.aclose()
    return secret


def _check(server: Server, body: bytes, headers: dict[str, str]) -> tuple[dict[str, str], bytes]:
    status, answer_headers, answer = post_once(server.port, body, headers)
    if status != 201:
        raise SystemExit(f"{server.name} answered {status} instead of 201: {answer[:500]!r}")
    return answer_headers, answer


def run(args: argparse.Namespace, tmp: Path, res: Resources) -> None:  # noqa: PLR0915 - the bench's steps in order
    """Start Valkey, the load process and the servers, then run and report the rounds."""
    import msgspec

    from app.state.apikeys import digest
    from app.state.keys import api_key_key
    from deploy.local.devstack import free_port, start_valkey
    from tests.conftest import SEED_REQUEST

    vport = free_port()
    res.procs.append(start_valkey(vport, tmp / "valkey", appendonly=False))
    url = f"redis://127.0.0.1:{vport}/0"
    api_key = asyncio.run(_create_key(url))
    res.janitor = RedisJanitor(url, api_key_key(digest(api_key)))
    env = {
        **os.environ,
        "SPATIALGEN_REDIS_URL": url,
        "SPATIALGEN_S3_ENDPOINT_URL": "http://127.0.0.1:9",  # start never talks to S3
        "SPATIALGEN_S3_ACCESS_KEY_ID": "bench",
        "SPATIALGEN_S3_SECRET_ACCESS_KEY": "bench-secret",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    # Rate limits on but out of reach (the bucket is taken on every create, as in production), quotas out of
    # reach too: the bench creates thousands of groups a second from one key. `--limiter` compares with `off`.
    env |= {"SPATIALGEN_RATE_LIMITS": UNREACHABLE_LIMITS, "SPATIALGEN_QUOTA_LIVE_GROUPS": str(10**9),
            "SPATIALGEN_QUOTA_LIVE_BYTES": str(2**62)}  # fmt: skip
    body = msgspec.json.encode(SEED_REQUEST)
    headers = {"Content-Type": "application/json", "X-SPATIALGEN-APPKEY": api_key}

    ctx = multiprocessing.get_context("spawn")
    res.pipe, child = ctx.Pipe()
    res.loader = ctx.Process(target=_load_process, args=(child,), name="bench-load", daemon=True)
    res.loader.start()
    bench = Bench(args, body, api_key, res.procs[0].pid, res.janitor, res.pipe)

    def launch(name: str, kind: str, target: str, server_env: dict[str, str]) -> Server:
        server = start_server(name, kind, target, server_env)
        res.procs.append(server.proc)
        res.groups.append(server.proc.pid)
        return server

    print(
        f"POST {PATH}: {len(body)}-byte seed request, {args.connections} keep-alive connections, "
        f"{args.warmup:g} s warm-up + {args.seconds:g} s per run, {args.rounds} alternating rounds, "
        f"one worker per server, {os.cpu_count()} CPUs",
        flush=True,
    )
    if args.compare_servers:
        servers = [launch(k, k, args.app, env) for k in ("granian", "uvicorn")]
        for s in servers:
            _check(s, body, headers)
        res.janitor.reset()
        samples = run_rounds(bench, servers, ["granian", "uvicorn"], "granian/uvicorn")
        (g_rps, g50, g99), (u_rps, u50, u99) = summary(samples[0]), summary(samples[1])
        print(
            f"our app by server: {fmt('granian', g_rps, g50, g99)} | {fmt('uvicorn', u_rps, u50, u99)} | "
            f"granian/uvicorn {g_rps / u_rps:.2f}",
            flush=True,
        )
        print(cpu_summary(["granian", "uvicorn"], servers, samples), flush=True)
        return

    ours = launch("ours", args.server, args.app, env)
    answer_headers, answer = _check(ours, body, headers)
    answer_file = tmp / "answer"
    answer_file.write_bytes(answer_headers["location"].encode() + b"\n" + answer)
    bare = launch("bare", args.server, BARE_TARGET, {**env, ANSWER_ENV: str(answer_file)})
    bare.uses_redis = False
    _, bare_answer = _check(bare, body, headers)
    if len(bare_answer) != len(answer):
        raise SystemExit(f"baseline answer is {len(bare_answer)} bytes, ours {len(answer)}")
    print(f"server {args.server}; our 201 answer: {len(answer)} bytes (baseline answers the same bytes)", flush=True)
    res.janitor.reset()
    if args.limiter:
        off = launch("ours-limiter-off", args.server, args.app, {**env, "SPATIALGEN_RATE_LIMITS": "off"})
        _check(off, body, headers)
        res.janitor.reset()
        limiter_report(bench, ours, off)
        off.proc.terminate()
        res.janitor.reset()
    report(bench, ours, bare, "API only (no worker, no S3)")
    if not args.no_stack:
        run_with_stack(bench, ours, bare, env, res)


def limiter_report(bench: Bench, on: Server, off: Server) -> None:
    """Alternating rounds of the same app with rate limits on (never reached) and off."""
    samples = run_rounds(bench, [on, off], ["limiter on", "limiter off"], "on/off")
    (on_rps, on50, on99), (off_rps, off50, off99) = summary(samples[0]), summary(samples[1])
    print(f"rate limiter cost: {fmt('limiter on', on_rps, on50, on99)} | {fmt('limiter off', off_rps, off50, off99)} "
          f"| on/off {on_rps / off_rps:.3f} (target >= 0.95)", flush=True)  # fmt: skip
    print(cpu_summary(["limiter on", "limiter off"], [on, off], samples), flush=True)


def run_with_stack(bench: Bench, ours: Server, bare: Server, env: dict[str, str], res: Resources) -> None:
    """The same rounds again with a worker and moto running beside the servers."""
    # The whole dev stack, as `make run` has it: a worker provisioning every created group against moto,
    # competing with the API and Valkey for the same two cores.
    from deploy.local.devstack import free_port, start_moto, worker_command

    s3_port = free_port()
    res.procs.append(start_moto(s3_port))
    stack_env = {**env, "SPATIALGEN_S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}"}
    asyncio.run(_make_bucket(stack_env))
    worker = subprocess.Popen(worker_command(), env=stack_env, cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    res.procs.append(worker)
    res.groups.append(worker.pid)
    print("whole dev stack: + one worker (provisioning every created group on moto) + moto", flush=True)
    report(bench, ours, bare, "whole dev stack")


def report(bench: Bench, ours: Server, bare: Server, label: str) -> None:
    """Alternating rounds of both servers, then the medians and the ratio."""
    samples = run_rounds(bench, [ours, bare], ["ours", "bare litestar"], "ratio")
    (o_rps, o50, o99), (b_rps, b50, b99) = summary(samples[0]), summary(samples[1])
    print(
        f"start group, {label}: {fmt('ours', o_rps, o50, o99)} | {fmt('bare litestar', b_rps, b50, b99)} | "
        f"ratio {o_rps / b_rps:.2f} (target >= {TARGET_RATIO:.2f})",
        flush=True,
    )
    print(cpu_summary(["ours", "bare litestar"], [ours, bare], samples), flush=True)


async def _make_bucket(env: dict[str, str]) -> None:
    from app.settings import Settings
    from app.storage.s3 import ObjectStore

    async with ObjectStore.connect(Settings.from_env(env).storage) as store:
        await store.ensure_bucket()


def main() -> None:
    """Parse options, run the benchmark, and tear everything down on any exit."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before each run (default 1)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections (default 32)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--server", choices=["granian", "uvicorn"], default="granian", help="ASGI server for both apps")
    parser.add_argument(
        "--compare-servers", action="store_true", help="run our app under granian and under uvicorn (no baseline)"
    )
    parser.add_argument("--no-stack", action="store_true", help="API only: skip the run with a worker and moto")
    parser.add_argument(
        "--limiter", action=argparse.BooleanOptionalAction, default=True,
        help="also compare rate limits on (out of reach) and off, same run (default on)",
    )  # fmt: skip
    parser.add_argument(
        "--app", default=OURS_TARGET, help=f"ASGI target of our app, to try a variant (default {OURS_TARGET})"
    )
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, through the cleanup below.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    res = Resources()
    with tempfile.TemporaryDirectory(prefix="bench_start_") as tmp:
        try:
            run(args, Path(tmp), res)
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            sys.exit(130)
        finally:
            res.close()


if __name__ == "__main__":
    main()
