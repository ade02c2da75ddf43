"""Benchmark: POST .../part-urls for all 10,000 parts of the largest file that has 10,000 (524 MiB parts, 4.997 TiB):
server time, HTTP time, botocore baseline, and the answer on the wire in each form (tests/bench/part_url_wire.py).

Also measures small part-urls requests while 10k batches are signed, against the same requests alone; never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http.client
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from unittest import mock
from urllib.parse import parse_qs, urlsplit

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import msgspec  # noqa: E402
from redis.asyncio import Redis  # noqa: E402

from app.domain.lifecycle import Reply  # noqa: E402
from app.settings import MIB, TIB, Settings  # noqa: E402
from app.state import ScriptReply, UploadState  # noqa: E402
from app.state.apikeys import Principal, Role, create_key, digest, key_id_of  # noqa: E402
from app.uploads import part_urls  # noqa: E402
from app.uploads.service import UploadService  # noqa: E402
from deploy.local.devstack import free_port, start_valkey  # noqa: E402
from tests.bench.bench_start import OURS_TARGET, start_server, stop_all, tree_cpu_seconds  # noqa: E402
from tests.bench.part_url_wire import measure_wire, report  # noqa: E402

ACCOUNT = "bench"
FILE_BYTES = 10_000 * 524 * MIB  # layout 2D, one video: 10,000 parts of 524 MiB (a byte more: 9,981 of 525 MiB)
FAKE_S3_UPLOAD_ID = "2~bench-" + "x" * 100  # AWS multipart upload ids run ~100-160 characters
START_BODY = {
    "videoName": "Part URL benchmark",
    "layout": "2D",
    "perspective": "Regular",
    "files": [{"fileName": "movie.mov", "fileRole": "video", "sizeBytes": FILE_BYTES}],
}
SMALL_BODY = b'{"partNumbers":[1]}'
SERVER_TARGET_MS = 150.0
RATIO_TARGET = 30.0
MAX_SAMPLES = 3

_json = msgspec.json.Encoder()


def ms(seconds: float) -> float:
    """Seconds to milliseconds."""
    return seconds * 1e3


def fmt_ms(seconds: float | None) -> str:
    """`12.3 ms`, or `n/a`."""
    return "n/a" if seconds is None else f"{ms(seconds):.1f} ms"


def pct(values: list[float], q: int) -> float:
    """Percentile q (1..99) of values, inclusive method; nan when empty."""
    if not values:
        return float("nan")
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# ---------------------------------------------------------------------------------------------
# Small-request load: its own process (its CPU never shares our GIL), raw asyncio over keep-alive
# connections, one request in flight per connection, paced at a steady total rate (0 = closed loop).
# Latency is send -> last body byte; "scheduled" latency counts from when the request was due, so a
# request held back by a stalled predecessor still shows the stall (no coordinated omission).
# ---------------------------------------------------------------------------------------------
@dataclass
class SmallJob:
    """One small-request measurement."""

    port: int
    request: bytes
    connections: int
    rate: float  # requests per second over all connections; 0 = as fast as answers come
    warmup: float
    seconds: float


@dataclass
class SmallResult:
    """Latencies (ms) of requests due inside the measured window, and what went wrong."""

    latencies_ms: list[float]
    scheduled_ms: list[float]
    errors: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)


class _SmallLoad:
    def __init__(self, job: SmallJob, loop: asyncio.AbstractEventLoop) -> None:
        self.job = job
        self.loop = loop
        now = loop.time()
        self.window_start = now + job.warmup
        self.window_end = self.window_start + job.seconds
        self.interval = job.connections / job.rate if job.rate > 0 else 0.0
        self.result = SmallResult([], [])
        self.open = 0
        self.done: asyncio.Future[None] = loop.create_future()

    def record(self, status: int, body: bytes, due: float, sent: float, now: float) -> None:
        if status != 200:
            self.result.errors[f"HTTP {status}"] += 1
            if len(self.result.samples) < MAX_SAMPLES:
                self.result.samples.append(f"HTTP {status}: {body[:300].decode(errors='replace')}")
        if self.window_start <= due < self.window_end:
            self.result.latencies_ms.append(ms(now - sent))
            self.result.scheduled_ms.append(ms(now - due))

    def closed(self, exc: Exception | None) -> None:
        """A connection ended; exc is None when we closed it after its last request."""
        self.open -= 1
        if exc is not None:
            self.result.errors[f"connection lost ({exc!r})"] += 1
        if self.open == 0 and not self.done.done():
            self.done.set_result(None)


class _SmallConn(asyncio.Protocol):
    def __init__(self, load: _SmallLoad, offset: float) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.need = -1
        self.status = 0
        self.due = load.loop.time() + offset
        self.sent = 0.0
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.load.loop.call_at(self.due, self.send)

    def send(self) -> None:
        assert self.transport is not None
        self.sent = self.load.loop.time()
        self.transport.write(self.load.job.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            self.status = int(head[9:12])
            at = head.find(b"\r\ncontent-length:")
            eol = head.find(b"\r\n", at + 2)
            self.need = int(head[at + 17 : eol if eol >= 0 else None])
            del self.buf[: end + 4]
        if len(self.buf) < self.need:
            return
        body = bytes(self.buf[: self.need])
        del self.buf[: self.need]
        self.need = -1
        load = self.load
        now = load.loop.time()
        load.record(self.status, body, self.due, self.sent, now)
        assert self.transport is not None
        # Paced: the next request is due one interval after this one was, however late this one is.
        self.due = self.due + load.interval if load.interval else now
        if self.due >= load.window_end:
            self.closing = True
            self.transport.close()
        elif self.due <= now:
            self.send()
        else:
            load.loop.call_at(self.due, self.send)

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.closed(None if self.closing else exc or ConnectionResetError("closed by server"))


async def _run_small(job: SmallJob) -> SmallResult:
    loop = asyncio.get_running_loop()
    load = _SmallLoad(job, loop)
    for i in range(job.connections):
        load.open += 1
        # Stagger the connections over one interval so the total rate is steady.
        offset = load.interval * i / job.connections
        await loop.create_connection(functools.partial(_SmallConn, load, offset), "127.0.0.1", job.port)
    await asyncio.wait_for(load.done, job.warmup + job.seconds + 60)
    return load.result


def _small_process(conn: multiprocessing.connection.Connection) -> None:
    """Entry point of the small-load process: run each job received, send back its result; None ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates us
    while (job := conn.recv()) is not None:
        conn.send(asyncio.run(_run_small(job)))


# ---------------------------------------------------------------------------------------------
# Plain HTTP (big answers, setup) on one keep-alive connection.
# ---------------------------------------------------------------------------------------------
class Http:
    """A keep-alive HTTP/1.1 connection to the API with the benchmark's key."""

    def __init__(self, port: int, api_key: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Content-Type": "application/json", "X-SPATIALGEN-APPKEY": api_key}

    def post(self, path: str, body: bytes) -> tuple[int, bytes, float]:
        """Status, body and seconds from sending the request to the last byte of the answer."""
        started = time.perf_counter()
        self.conn.request("POST", path, body=body, headers=self.headers)
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, data, time.perf_counter() - started

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


def request_bytes(port: int, path: str, api_key: str, body: bytes) -> bytes:
    """A pre-built HTTP/1.1 POST, sent over and over by the small-load process."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"X-SPATIALGEN-APPKEY: {api_key}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


_METRIC_RE = re.compile(r"^\w*http_request_duration_seconds_(sum|count)\{(.*)\} (\S+)$", re.MULTILINE)


def part_urls_metrics(port: int) -> tuple[float, int] | None:
    """(seconds, requests) the server's own /metrics reports for POST part-urls so far; None without /metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        text = resp.read().decode()
    except OSError:
        return None
    finally:
        conn.close()
    if resp.status != 200:
        return None
    found: dict[str, float] = {}
    for kind, labels, value in _METRIC_RE.findall(text):
        if "part-urls" in labels and 'method="POST"' in labels:
            found[kind] = float(value)
    if "sum" not in found or "count" not in found:
        return None
    return found["sum"], int(found["count"])


def app_time(before: tuple[float, int] | None, after: tuple[float, int] | None) -> float | None:
    """Mean seconds per part-urls request between two /metrics readings (time inside the ASGI app)."""
    if before is None or after is None or after[1] == before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


# ---------------------------------------------------------------------------------------------
# In-process: the same UploadService the server runs, over the same Valkey, timed without HTTP.
# ---------------------------------------------------------------------------------------------
class InProcess:
    """UploadService in this process, on a long-lived event loop (asyncio.Runner)."""

    def __init__(self, settings: Settings, principal: Principal, session_id: str, upload_id: str) -> None:
        self.runner = asyncio.Runner()
        self.settings = settings
        self.principal = principal
        self.session_id = session_id
        self.upload_id = upload_id
        self.redis: Redis = self.runner.run(self._connect())
        self.service = UploadService(settings, UploadState(self.redis))

    async def _connect(self) -> Redis:
        client: Redis = Redis.from_url(self.settings.redis.url)
        return client

    async def handler(self, body: bytes = b"") -> bytes:
        """What the route does after authentication: sign, then encode the view."""
        answer = await part_urls.sign_part_urls(self.service, self.principal, self.session_id, self.upload_id, body)
        return _json.encode(await answer.whole())

    def timed(self, body: bytes = b"") -> tuple[float, float, int]:
        """(seconds in sign_part_urls, seconds encoding its view, answer bytes) of one call."""

        async def go() -> tuple[float, float, int]:
            t0 = time.perf_counter()
            answer = await part_urls.sign_part_urls(self.service, self.principal, self.session_id, self.upload_id,
                                                    body)  # fmt: skip
            view = await answer.whole()  # a large selection is signed here, piece by piece
            t1 = time.perf_counter()
            answer = _json.encode(view)
            return t1 - t0, time.perf_counter() - t1, len(answer)

        return self.runner.run(go())

    def longest_block(self, make: Callable[[], Awaitable[object]]) -> tuple[float, float]:
        """(total seconds, longest stretch without yielding to the event loop) of one awaited call.

        A ticker task yields in a loop and records the gaps between its turns: the longest gap is
        how long any other request on this loop would have waited.
        """

        async def go() -> tuple[float, float]:
            gaps: list[float] = []
            stop = False

            async def ticker() -> None:
                last = time.perf_counter()
                while not stop:
                    await asyncio.sleep(0)
                    now = time.perf_counter()
                    gaps.append(now - last)
                    last = now

            task = asyncio.create_task(ticker())
            await asyncio.sleep(0)
            t0 = time.perf_counter()
            await make()
            total = time.perf_counter() - t0
            stop = True
            await task
            return total, max(gaps)

        return self.runner.run(go())

    def close(self) -> None:
        """Stop the signer process, close Redis and the loop."""
        self.service.signer.close()
        self.service.state.close()
        with suppress(Exception):
            self.runner.run(self.redis.aclose())
        self.runner.close()


# ---------------------------------------------------------------------------------------------
# Setup: Valkey, the API server, a key, a group with one 10,000-part video, a fake S3 upload id.
# ---------------------------------------------------------------------------------------------
@dataclass
class Resources:
    """Everything to tear down on exit, whatever happens."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    loader: multiprocessing.process.BaseProcess | None = None
    pipe: multiprocessing.connection.Connection | None = None
    http: list[Http] = field(default_factory=list)
    inproc: InProcess | None = None

    def close(self) -> None:
        """Stop the load process, close clients, stop the server and Valkey."""
        if self.loader is not None and self.loader.is_alive():
            with suppress(OSError):
                if self.pipe is not None:
                    self.pipe.send(None)
                self.loader.join(2)
            if self.loader.is_alive():
                self.loader.terminate()
                self.loader.join(5)
        for h in self.http:
            h.close()
        if self.inproc is not None:
            self.inproc.close()
        stop_all(self.procs, self.groups)


@dataclass
class Target:
    """The file whose part URLs are asked for."""

    port: int
    api_key: str
    session_id: str
    upload_id: str
    total_parts: int
    part_size: int

    @property
    def path(self) -> str:
        """The part-urls route of the file."""
        return f"/api/videos/uploads/{self.session_id}/files/{self.upload_id}/part-urls"


async def _make_key(url: str) -> str:
    client = Redis.from_url(url)
    try:
        secret, _ = await create_key(client, account=ACCOUNT, role="upload", label="bench_part_urls")
    finally:
        await client.aclose()
    return secret


async def _provision(url: str, session_id: str, upload_id: str) -> ScriptReply:
    """Record a fake S3 multipart upload id, as the provision worker would (no S3 call)."""
    client = Redis.from_url(url)
    try:
        state = UploadState(client)
        snap = await state.snapshot(session_id)
        assert snap is not None
        return await state.record_s3_upload(snap.record, upload_id, FAKE_S3_UPLOAD_ID)
    finally:
        state.close()
        await client.aclose()


def setup(tmp: Path, res: Resources, server_kind: str = "granian") -> tuple[Target, Settings]:
    """Start Valkey and the API, create the key and the group, mark the file provisioned."""
    vport = free_port()
    res.procs.append(start_valkey(vport, tmp / "valkey", appendonly=False))
    url = f"redis://127.0.0.1:{vport}/0"
    api_key = asyncio.run(_make_key(url))
    env = {
        **os.environ,
        "SPATIALGEN_REDIS_URL": url,
        "SPATIALGEN_S3_ENDPOINT_URL": "http://127.0.0.1:9",  # signing never talks to S3
        "SPATIALGEN_S3_ACCESS_KEY_ID": "bench",
        "SPATIALGEN_S3_SECRET_ACCESS_KEY": "bench-secret",
        # The stall test sends 200 small requests a second from one key, over the default part-urls rate.
        "SPATIALGEN_RATE_LIMITS": "off",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    server = start_server("api", server_kind, OURS_TARGET, env)
    res.procs.append(server.proc)
    res.groups.append(server.proc.pid)
    client = Http(server.port, api_key)
    res.http.append(client)
    status, answer, _ = client.post("/api/videos/uploads", msgspec.json.encode(START_BODY))
    if status != 201:
        raise SystemExit(f"start answered {status}: {answer[:500]!r}")
    created = msgspec.json.decode(answer)
    session_id, f = created["sessionId"], created["files"][0]
    outcome = asyncio.run(_provision(url, session_id, f["uploadId"]))
    if outcome.code is not Reply.OK:
        raise SystemExit(f"record_s3_upload answered {outcome!r}")
    settings = Settings.from_env(env)
    target = Target(server.port, api_key, session_id, f["uploadId"], f["totalParts"], f["partSizeBytes"])
    return target, settings


# ---------------------------------------------------------------------------------------------
# Measurements.
# ---------------------------------------------------------------------------------------------
@dataclass
class BigTimes:
    """Part 1: one all-parts request, over HTTP and in-process."""

    http_s: list[float]
    sign_s: list[float]
    encode_s: list[float]
    answer_bytes: int
    server_cpu_s: float
    app_s: float | None = None
    sample_urls: list[tuple[int, str]] = field(default_factory=list)
    part_lengths: list[int] = field(default_factory=list)  # each part's signed Content-Length


def measure_big(target: Target, client: Http, inproc: InProcess, repeats: int, server_pid: int) -> BigTimes:
    """Alternate HTTP and in-process calls (so drift hits both alike); warm both up first."""
    for _ in range(2):
        status, answer, _ = client.post(target.path, b"")
        if status != 200:
            raise SystemExit(f"part-urls answered {status}: {answer[:500]!r}")
        inproc.timed()
    parts = msgspec.json.decode(answer)["parts"]
    if len(parts) != target.total_parts:
        raise SystemExit(f"expected {target.total_parts} parts, got {len(parts)}")
    times = BigTimes([], [], [], len(answer), 0.0)
    times.sample_urls = [(p["partNumber"], p["url"]) for p in (parts[0], parts[-1])]
    times.part_lengths = [p["byteEnd"] - p["byteStart"] for p in parts]
    cpu = 0.0
    seen = part_urls_metrics(target.port)
    for _ in range(repeats):
        cpu0 = tree_cpu_seconds(server_pid)
        status, answer, seconds = client.post(target.path, b"")
        cpu += tree_cpu_seconds(server_pid) - cpu0
        assert status == 200
        times.http_s.append(seconds)
        sign, encode, _ = inproc.timed()
        times.sign_s.append(sign)
        times.encode_s.append(encode)
    times.server_cpu_s = cpu / repeats
    # /metrics counts only the HTTP requests (the in-process calls never reach the server).
    times.app_s = app_time(seen, part_urls_metrics(target.port))
    return times


def measure_botocore(
    settings: Settings, target: Target, storage_key: str, rounds: int, ours: list[tuple[int, str]], lengths: list[int]
) -> float:
    """Seconds for botocore to presign the same parts (best of rounds), after checking it signs what we sign.

    `ours` holds (part number, URL) pairs from our answer: with botocore's clock pinned to their X-Amz-Date,
    botocore's URL for the same part must carry the same query parameters (it only orders them differently).
    `lengths` are the parts' sizes: both sign each part's Content-Length.
    """
    import botocore.auth
    import botocore.config
    import botocore.session

    client = botocore.session.get_session().create_client(
        "s3",
        region_name=settings.storage.region,
        endpoint_url=settings.storage.public_endpoint_url or settings.storage.endpoint_url,
        aws_access_key_id=settings.storage.access_key_id,
        aws_secret_access_key=settings.storage.secret_access_key,
        aws_session_token=settings.storage.session_token or None,
        config=botocore.config.Config(
            signature_version="s3v4", s3={"addressing_style": settings.storage.addressing_style}
        ),
    )

    def presign(part: int, expires_in: int) -> str:
        length = lengths[part - 1]
        return str(
            client.generate_presigned_url(
                "upload_part",
                Params={"Bucket": settings.storage.bucket, "Key": storage_key, "UploadId": FAKE_S3_UPLOAD_ID,
                        "PartNumber": part, "ContentLength": length},
                ExpiresIn=expires_in,
            )
        )  # fmt: skip

    for part, url in ours:
        query = parse_qs(urlsplit(url).query)
        signed = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ")
        clock = functools.partial(lambda when, remove_tzinfo=True: when, signed)
        # botocore's Python signer: with awscrt installed botocore presigns through botocore.crt.auth instead.
        python_signer = {"s3v4-query": botocore.auth.S3SigV4QueryAuth}
        with mock.patch.object(botocore.auth, "get_current_datetime", clock), \
                mock.patch.dict(botocore.auth.AUTH_TYPE_MAPS, python_signer):  # fmt: skip
            theirs = presign(part, int(query["X-Amz-Expires"][0]))
        if parse_qs(urlsplit(theirs).query) != query or theirs.split("?")[0] != url.split("?")[0]:
            raise SystemExit(f"part {part}: our URL and botocore's differ:\n ours     {url}\n botocore {theirs}")
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for part in range(1, target.total_parts + 1):
            presign(part, settings.uploads.part_url_ttl_seconds)
        times.append(time.perf_counter() - started)
    return min(times)


@dataclass
class StallRun:
    """Part 3: small-request latencies, alone or while a client loops all-parts requests."""

    small: SmallResult
    big_s: list[float]


def stall_round(
    target: Target, pipe: multiprocessing.connection.Connection, job: SmallJob, big: Http | None
) -> StallRun:
    """Run the small load; if `big` is given, loop all-parts requests on it until the load ends."""
    pipe.send(job)
    big_s: list[float] = []
    if big is not None:
        while not pipe.poll():
            status, answer, seconds = big.post(target.path, b"")
            if status != 200:
                raise SystemExit(f"part-urls answered {status}: {answer[:500]!r}")
            big_s.append(seconds)
    small: SmallResult = pipe.recv()
    if small.errors:
        print(f"  !! small requests: {sum(small.errors.values())} errors: {dict(small.errors)}", flush=True)
        for s in small.samples:
            print(f"     {s}", flush=True)
    return StallRun(small, big_s)


def stall_line(label: str, latencies: list[float]) -> str:
    """`p50 3.1 ms p99 48.0 ms max 60.0 ms` for one set of latencies."""
    if not latencies:
        return f"{label}no samples"
    return f"{label}p50 {pct(latencies, 50):.1f} ms p99 {pct(latencies, 99):.1f} ms max {max(latencies):.1f} ms"


def stall_test(args: argparse.Namespace, res: Resources, target: Target, label: str) -> tuple[float, float]:
    """Small requests alone and during back-to-back all-parts requests, alternating; returns both p99s."""
    assert res.pipe is not None
    job = SmallJob(
        port=target.port,
        request=request_bytes(target.port, target.path, target.api_key, SMALL_BODY),
        connections=args.connections,
        rate=args.rate,
        warmup=args.warmup,
        seconds=args.seconds,
    )
    big_client = Http(target.port, target.api_key)
    res.http.append(big_client)
    alone: list[StallRun] = []
    during: list[StallRun] = []
    for rnd in range(1, args.rounds + 1):
        for with_big in (False, True) if rnd % 2 else (True, False):
            r = stall_round(target, res.pipe, job, big_client if with_big else None)
            (during if with_big else alone).append(r)
            extra = (
                f" | {len(r.big_s)} batches, median {ms(statistics.median(r.big_s)):.0f} ms each" if with_big else ""
            )
            print(
                f"  round {rnd} {'during batches' if with_big else 'alone         '}: "
                f"{stall_line('', r.small.latencies_ms)} ({len(r.small.latencies_ms)} requests){extra}",
                flush=True,
            )
    lat_d = [x for r in during for x in r.small.latencies_ms]
    lat_a = [x for r in alone for x in r.small.latencies_ms]
    sch_d = [x for r in during for x in r.small.scheduled_ms]
    sch_a = [x for r in alone for x in r.small.scheduled_ms]
    print(
        f"{label}small requests during 10k batches: {stall_line('', lat_d)} | alone {stall_line('', lat_a)} | "
        f"p99 ratio {pct(lat_d, 99) / pct(lat_a, 99):.1f}",
        flush=True,
    )
    print(
        f"  counted from when each was due (a stalled request delays its connection's next ones): during "
        f"{stall_line('', sch_d)} | alone {stall_line('', sch_a)} | p99 ratio {pct(sch_d, 99) / pct(sch_a, 99):.1f}",
        flush=True,
    )
    return pct(lat_d, 99), pct(lat_a, 99)


def run(args: argparse.Namespace, tmp: Path, res: Resources) -> None:
    """Set everything up, then run the three measurements and print their summaries."""
    target, settings = setup(tmp, res, args.server)
    server_pid = res.procs[-1].pid
    principal = Principal(ACCOUNT, Role.UPLOAD, key_id_of(digest(target.api_key)))
    res.inproc = inproc = InProcess(settings, principal, target.session_id, target.upload_id)
    snap = inproc.runner.run(inproc.service.state.snapshot(target.session_id))
    assert snap is not None
    storage_key = snap.record.storage_key(snap.record.files[0])
    client = res.http[0]
    print(
        f"part-urls of one {FILE_BYTES / TIB:.3f} TiB video: {target.total_parts} parts of "
        f"{target.part_size // 2**20} MiB; {args.server}, one worker; {os.cpu_count()} CPUs",
        flush=True,
    )

    # 1. One all-parts request: HTTP wall time and in-process server time.
    big = measure_big(target, client, inproc, args.repeats, server_pid)
    sign_med, http_med = statistics.median(big.sign_s), statistics.median(big.http_s)
    server_s = [s + e for s, e in zip(big.sign_s, big.encode_s, strict=True)]
    server_med = statistics.median(server_s)
    print(
        f"  in-process sign_part_urls: median {ms(sign_med):.1f} ms, p90 {ms(pct(big.sign_s, 90)):.1f} ms | "
        f"+ JSON encode: median {ms(server_med):.1f} ms, p90 {ms(pct(server_s, 90)):.1f} ms | HTTP wall: median "
        f"{ms(http_med):.1f} ms, p90 {ms(pct(big.http_s, 90)):.1f} ms | server CPU per HTTP request "
        f"{ms(big.server_cpu_s):.1f} ms | in the ASGI app (server's /metrics) {fmt_ms(big.app_s)} mean "
        f"({args.repeats} runs each)",
        flush=True,
    )

    # 1b. The same answer on the wire: full or compact, identity or gzip.
    if args.wire_repeats:
        path = target.path
        report(measure_wire(target.port, target.api_key, path, target.total_parts, args.wire_repeats, server_pid),
               target.total_parts)  # fmt: skip

    # 2. botocore on the same parts, same bucket/key/upload id.
    boto_s = measure_botocore(settings, target, storage_key, args.boto_rounds, big.sample_urls, big.part_lengths)
    print(
        f"part-urls {target.total_parts} parts: server {ms(server_med):.1f} ms (in-process median, sign "
        f"{ms(sign_med):.1f} + encode), HTTP {ms(http_med):.1f} ms median ({big.answer_bytes / 1e6:.1f} MB) | "
        f"botocore {ms(boto_s):.0f} ms | ratio {boto_s / server_med:.0f}x in-process, {boto_s / http_med:.0f}x HTTP "
        f"(target >= {RATIO_TARGET:.0f}x); target <= {SERVER_TARGET_MS:.0f} ms",
        flush=True,
    )

    # 3. Small requests alone, and while one client loops all-parts requests.
    ctx = multiprocessing.get_context("spawn")
    res.pipe, child = ctx.Pipe()
    res.loader = ctx.Process(target=_small_process, args=(child,), name="bench-small", daemon=True)
    res.loader.start()
    rate = f"{args.rate:g} req/s" if args.rate else "closed loop"
    print(
        f"small requests: {SMALL_BODY.decode()} on {args.connections} connections, {rate}, "
        f"{args.warmup:g} s warm-up + {args.seconds:g} s per run, {args.rounds} alternating rounds",
        flush=True,
    )
    if args.rounds:
        stall_test(args, res, target, "")


def main() -> None:
    """Parse options, run the benchmark, and tear everything down on any exit."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15, help="all-parts requests timed in part 1 (default 15)")
    parser.add_argument("--wire-repeats", type=int, default=15,
                        help="all-parts requests per form timed on the wire (default 15; 0 skips)")  # fmt: skip
    parser.add_argument("--boto-rounds", type=int, default=1, help="botocore runs, best taken (default 1, ~5 s each)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per stall run (default 5)")
    parser.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds per stall run (default 0.5)")
    parser.add_argument("--connections", type=int, default=8, help="small-request connections (default 8)")
    parser.add_argument(
        "--rate", type=float, default=200.0, help="small requests per second in total; 0 = closed loop (default 200)"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternating alone/during rounds (default 2; 0 skips the HTTP stall test)"
    )
    parser.add_argument(
        "--server", choices=["granian", "uvicorn"], default="granian", help="ASGI server (default granian)"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    res = Resources()
    with tempfile.TemporaryDirectory(prefix="bench_part_urls_") as tmp:
        try:
            run(args, Path(tmp), res)
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            sys.exit(130)
        finally:
            res.close()


if __name__ == "__main__":
    main()
