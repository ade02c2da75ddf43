"""Benchmark: Valkey main-thread CPU and memory per operation of the real service, for the capacity model.

Starts its own Valkey (AOF everysec, as deployed), moto, one API process (spatialgen-api) and one worker
(spatialgen-worker), and drives N seed-shaped groups (4 files: two 2-part multipart videos, an audio file and a
subtitle as single PUTs; sizes small so the PUTs are cheap) through the whole flow, phase by phase:

  1.  create every group: the API's create alone (one script; no job is queued, no storage call made);
  2.  part-urls for every file: the first call of a multipart file opens its upload (the API, inline);
  3.  PUT the bytes to the presigned URLs (storage only: no figures);
  4.  complete every file (completion jobs, the finishing script, library record and processing hand-off);
  5.  one re-drive pass (the worker's cron, run here with its clock 30 s ahead): it removes each completed file
      from the completing index and checks each group's processing hand-off (still queued: nobody consumes it).

Valkey CPU is INFO cpu's main-thread user+sys before and after each phase, once the worker has drained the
queue; the idle rate (API and worker running: arq polls every 50 ms; plus this bench's queue polling) is
measured in the same run and subtracted over each phase's wall time. Commands and round trips per group come
from INFO stats (total_commands_processed: what clients sent, a script once; total_reads_processed: read
events, about one per round trip, pipelines and the idle polling included). With --pace the calls are spread
over time at that many groups/s: less backlog, fewer API polls of a completion. Rate limits and quotas off; the
periodic sweeps hourly. Never asserts a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from redis.asyncio import Redis  # noqa: E402

from app.domain.clock import now_ms  # noqa: E402
from app.settings import KIB, MIB, Settings  # noqa: E402
from app.state import UploadState  # noqa: E402
from app.state.jobs import EXPIRE_CRON, ORPHAN_CRON, RECONCILE_CRON, REDRIVE_CRON  # noqa: E402
from app.state.keys import COMPLETING_INDEX, HANDOFF_INDEX, METRICS_KEY  # noqa: E402
from app.upkeep.redrive import REDRIVE_MIN_AGE_MS, redrive  # noqa: E402
from tests.bench.bench_start import tree_cpu_seconds  # noqa: E402
from tests.conftest import SEED_REQUEST  # noqa: E402
from tests.processes import Stack  # noqa: E402

PART_SIZE = 5 * MIB  # S3's minimum part size: the smallest multipart file is 2 parts, 5 MiB and a little
SIZES = {"video_left": PART_SIZE + 64 * KIB, "video_right": PART_SIZE + 64 * KIB + 1, "audio": 256 * KIB,
         "subtitle": 2401}  # fmt: skip
UPLOADS = "/api/videos/uploads"
SETTLE_POLL = 0.05  # seconds between ZCARDs of the upload queue while the worker drains it
CALIBRATION_PINGS = 2000
CALIBRATION_CLIENTS = 16
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
CRONS = tuple(f"job:{c}:" for c in (EXPIRE_CRON, ORPHAN_CRON, RECONCILE_CRON, REDRIVE_CRON))


def group_body() -> dict[str, Any]:
    """The seed request (same names, description, layout) with the small sizes."""
    body = copy.deepcopy(SEED_REQUEST)
    for f in body["files"]:
        f["sizeBytes"] = SIZES[f["fileRole"]]
    return body


@dataclass
class Reading:
    """Cumulative counters at one moment (or the difference of two readings)."""

    wall: float
    valkey: float  # main-thread CPU seconds
    valkey_sys: float  # of which in the kernel
    valkey_all: float  # the whole process (main thread, and bio threads: AOF fsync, lazy free)
    api: float  # API process tree CPU seconds
    worker: float  # worker process CPU seconds
    cmds: dict[str, tuple[int, int]]  # command -> (calls, µs inside it), INFO commandstats
    jobs: int  # job runs the worker counted (sg:metrics job:*), crons apart
    crons: int
    reads: int = 0  # INFO stats total_reads_processed: read events, about one per client round trip
    commands: int = 0  # INFO stats total_commands_processed: commands clients sent (a script counts once)

    def __sub__(self, o: Reading) -> Reading:
        cmds = {}
        for name, (calls, usec) in self.cmds.items():
            c0, u0 = o.cmds.get(name, (0, 0))
            if calls - c0:
                cmds[name] = (calls - c0, usec - u0)
        return Reading(self.wall - o.wall, self.valkey - o.valkey, self.valkey_sys - o.valkey_sys,
                       self.valkey_all - o.valkey_all, self.api - o.api, self.worker - o.worker, cmds,
                       self.jobs - o.jobs, self.crons - o.crons, self.reads - o.reads,
                       self.commands - o.commands)  # fmt: skip


@dataclass
class Phase:
    """One measured phase: its delta and the idle counters (over idle.wall seconds) that apply to it."""

    label: str
    ops: int
    delta: Reading
    idle: Reading

    def corrected(self, what: str) -> float:
        """The phase's seconds of `what` minus the idle rate over its wall time."""
        raw, idle = float(getattr(self.delta, what)), float(getattr(self.idle, what))
        return raw - idle / self.idle.wall * self.delta.wall

    def per_op_us(self, what: str = "valkey") -> float:
        return 1e6 * self.corrected(what) / self.ops


@dataclass
class Group:
    """One group as the driver sees it: its files (create answer), part URLs and ETags."""

    sid: str
    files: list[dict[str, Any]]
    parts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    done: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


@dataclass
class Bench:
    """The stack, the clients, and the driver's side of the flow."""

    stack: Stack
    settings: Settings
    redis: Redis
    api: httpx.AsyncClient
    s3: httpx.AsyncClient
    key: dict[str, str]
    concurrency: int

    @property
    def api_pid(self) -> int:
        return self.stack.apis[0][0].pid

    @property
    def worker_pid(self) -> int:
        return self.stack.workers[0].pid

    async def read(self) -> Reading:
        """Counters now (these INFO calls are in the figures: two per phase, some tens of µs)."""
        info: dict[str, Any] = await self.redis.info("cpu")
        info |= await self.redis.info("commandstats")
        info |= await self.redis.info("stats")
        cmds = {k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
                for k, v in info.items() if k.startswith("cmdstat_")}  # fmt: skip
        metrics = {k.decode(): int(v) for k, v in (await self.redis.hgetall(METRICS_KEY)).items()}  # type: ignore[misc]
        return Reading(
            wall=time.perf_counter(),
            valkey=float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"]),
            valkey_sys=float(info["used_cpu_sys_main_thread"]),
            valkey_all=float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
            api=tree_cpu_seconds(self.api_pid),
            worker=tree_cpu_seconds(self.worker_pid),
            cmds=cmds,
            jobs=sum(v for k, v in metrics.items() if k.startswith("job:") and not k.startswith(CRONS)),
            crons=sum(v for k, v in metrics.items() if k.startswith(CRONS)),
            reads=int(info.get("total_reads_processed", 0)),
            commands=int(info.get("total_commands_processed", 0)),
        )

    async def drained(self, within: float = 300.0) -> None:
        """Wait until the worker has finished every queued job (arq removes a job from the queue once done)."""
        deadline = time.monotonic() + within
        while await self.redis.zcard(self.settings.worker.queue_name):
            if time.monotonic() > deadline:
                raise SystemExit(f"the worker did not drain {self.settings.worker.queue_name} within {within:g} s")
            await asyncio.sleep(SETTLE_POLL)

    async def used_memory(self) -> int:
        """INFO used_memory minus client buffers and the AOF buffer (both transient), lazy frees done."""
        for _ in range(200):
            info: dict[str, Any] = await self.redis.info("memory")
            if int(info.get("lazyfree_pending_objects", 0)) == 0:
                break
            await asyncio.sleep(0.01)
        return int(info["used_memory"]) - int(info.get("mem_clients_normal", 0)) - int(info.get("mem_aof_buffer", 0))

    async def census(self) -> dict[str, int]:
        """MEMORY USAGE of every key, summed by key pattern (ids replaced by <id>)."""
        names = [k async for k in self.redis.scan_iter(count=1000)]
        sizes: dict[str, int] = {}
        for start in range(0, len(names), 500):
            batch = names[start : start + 500]
            async with self.redis.pipeline(transaction=False) as pipe:
                for k in batch:
                    pipe.memory_usage(k, samples=0)
                got = await pipe.execute()
            for k, n in zip(batch, got, strict=True):
                pattern = UUID.sub("<id>", k.decode())
                sizes[pattern] = sizes.get(pattern, 0) + int(n or 0)
        return sizes

    async def gated(self, calls: Sequence[Callable[[], Awaitable[None]]], rate: float = 0.0) -> None:
        """Run the calls, at most `concurrency` at once; rate > 0: the i-th starts no sooner than i / rate s."""
        gate = asyncio.Semaphore(self.concurrency)
        t0 = time.monotonic()

        async def one(i: int, call: Callable[[], Awaitable[None]]) -> None:
            if rate:
                await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            async with gate:
                await call()

        await asyncio.gather(*(one(i, c) for i, c in enumerate(calls)))

    # --- the client's side of the flow (as tests/faults/test_scale_out.py drives it) -----------------

    async def create(self, out: list[Group]) -> None:
        r = await self.api.post(UPLOADS, json=group_body(), headers=self.key)
        if r.status_code != 201:
            raise SystemExit(f"create answered {r.status_code}: {r.text[:300]}")
        doc = r.json()
        out.append(Group(doc["sessionId"], doc["files"]))

    async def part_urls(self, g: Group, f: dict[str, Any]) -> None:
        url = f"{UPLOADS}/{g.sid}/files/{f['uploadId']}/part-urls"
        while True:
            r = await self.api.post(url, headers=self.key)
            if r.status_code != 503:
                break
            await asyncio.sleep(float(r.headers.get("retry-after", "1")))
        if r.status_code != 200:
            raise SystemExit(f"part-urls answered {r.status_code}: {r.text[:300]}")
        g.parts[f["uploadId"]] = r.json()["parts"]

    async def put(self, g: Group, upload_id: str, p: dict[str, Any], data: bytes) -> None:
        r = await self.s3.put(p["url"], content=data[p["byteStart"] : p["byteEnd"]], headers=p["headers"])
        if r.status_code != 200:
            raise SystemExit(f"PUT answered {r.status_code}: {r.text[:300]}")
        g.done.setdefault(upload_id, []).append({"partNumber": p["partNumber"], "etag": r.headers["etag"]})

    async def complete(self, g: Group, f: dict[str, Any]) -> None:
        uid = f["uploadId"]
        body: dict[str, Any] = {}
        if f["uploadStrategy"] == "multipart":
            body = {"parts": sorted(g.done[uid], key=lambda p: int(p["partNumber"]))}
        while True:
            r = await self.api.post(f"{UPLOADS}/{g.sid}/files/{uid}/complete", json=body, headers=self.key)
            if r.status_code == 200:
                return
            if r.status_code != 202:
                raise SystemExit(f"complete answered {r.status_code}: {r.text[:300]}")
            await asyncio.sleep(0.2)

    async def flow(self, n: int, data: bytes) -> None:
        """n groups through the whole flow and a re-drive pass, unmeasured (warm-up)."""
        groups: list[Group] = []
        await self.gated([partial(self.create, groups) for _ in range(n)])
        await self.gated([partial(self.part_urls, g, f) for g in groups for f in g.files])
        await self.gated([partial(self.put, g, u, p, data) for g in groups for u, ps in g.parts.items() for p in ps])
        await self.gated([partial(self.complete, g, f) for g in groups for f in g.files])
        await self.drained()
        await self.redrive_pass()

    async def redrive_pass(self) -> None:
        """The re-drive cron's work on everything completed so far, as the worker runs it 30 s or more later."""
        state = UploadState(self.redis)
        try:
            for _ in range(100):
                await redrive(state, self.settings, now=now_ms() + REDRIVE_MIN_AGE_MS + 1000)
                if not await self.redis.zcard(COMPLETING_INDEX):
                    return
        finally:
            state.close()


def commands_line(phase: Phase, k: int = 8) -> str:
    """The phase's commands per operation (INFO commandstats): the most time spent inside first."""
    d = phase.delta
    cmds = sorted(d.cmds.items(), key=lambda kv: -kv[1][1])
    shown = ", ".join(f"{name} {calls / phase.ops:.1f} ({usec / phase.ops:.0f} µs)"
                      for name, (calls, usec) in cmds[:k])  # fmt: skip
    arq = ""
    if d.jobs:
        watch = d.cmds.get("watch", (0, 0))[0]
        arq = (f"; {d.jobs / phase.ops:.2f} worker jobs/op, arq WATCHed {watch / d.jobs:.1f} times per job run "
               "(1 = no re-scan of a job already running)")  # fmt: skip
    return f"     commands/op (µs inside, wall clock; a script's own calls counted again): {shown}{arq}"


def phase_line(phase: Phase, unit: str) -> str:
    d = phase.delta
    cron = f" | !! {d.crons} cron run(s) fell in this phase" if d.crons else ""
    return (
        f"[{phase.label}] {phase.ops} {unit}s in {d.wall:.2f} s: valkey main thread {1e3 * d.valkey:.1f} ms raw = "
        f"{1e6 * d.valkey / phase.ops:.1f} µs/{unit}, idle-corrected {phase.per_op_us():.1f} µs/{unit} "
        f"({d.valkey_sys / d.valkey:.0%} of it in the kernel; whole valkey process "
        f"{phase.per_op_us('valkey_all'):.1f}); API {phase.per_op_us('api') / 1e3:.2f} ms "
        f"CPU/{unit}, worker {phase.per_op_us('worker') / 1e3:.2f} ms CPU/{unit}{cron}"
    )


async def measure(
    b: Bench, label: str, ops: int, idle: Reading, unit: str, note: str, work: Callable[[], Awaitable[object]]
) -> Phase:
    """Readings before and after `work` (which includes waiting for the worker to drain); prints the phase."""
    r0 = await b.read()
    await work()
    phase = Phase(label, ops, await b.read() - r0, idle)
    print(f"{phase_line(phase, unit)} ({note})", flush=True)
    print(commands_line(phase), flush=True)
    return phase


async def idle_rate(b: Bench, seconds: float, *, poll: bool) -> Reading:
    """Counters over `seconds` of nothing to do; poll: with this bench's queue polling, as in a draining phase."""
    r0 = await b.read()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if poll:
            await b.redis.zcard(b.settings.worker.queue_name)
        await asyncio.sleep(SETTLE_POLL)
    return await b.read() - r0


async def calibrate(b: Bench, idle: Reading) -> None:
    """Main-thread CPU of a bare round trip (PING after PING) and of a pipelined PING, idle-corrected."""
    r0 = await b.read()
    for _ in range(CALIBRATION_PINGS):
        await b.redis.ping()
    one = Phase("calib", CALIBRATION_PINGS, await b.read() - r0, idle)
    r0 = await b.read()
    async with b.redis.pipeline(transaction=False) as pipe:
        for _ in range(CALIBRATION_PINGS):
            pipe.ping()
        await pipe.execute()
    piped = Phase("calib", CALIBRATION_PINGS, await b.read() - r0, idle)
    clients = [Redis.from_url(b.stack.redis_url) for _ in range(CALIBRATION_CLIENTS)]
    try:
        await asyncio.gather(*(c.ping() for c in clients))

        async def pings(c: Redis) -> None:
            for _ in range(CALIBRATION_PINGS // CALIBRATION_CLIENTS):
                await c.ping()

        r0 = await b.read()
        await asyncio.gather(*(pings(c) for c in clients))
        many = Phase("calib", CALIBRATION_PINGS, await b.read() - r0, idle)
    finally:
        for c in clients:
            await c.aclose()
    print(f"[calib] valkey main thread per PING: {one.per_op_us():.1f} µs as one round trip after another "
          f"({one.delta.valkey_sys / one.delta.valkey:.0%} in the kernel), {many.per_op_us():.1f} µs with "
          f"{CALIBRATION_CLIENTS} clients at once, {piped.per_op_us():.2f} µs pipelined {CALIBRATION_PINGS} at once: "
          "a round trip's wake-up and syscalls, not the command, is what a small command costs here, and it "
          "is shared when many clients are served per wake-up (a busier Valkey spends less per operation)",
          flush=True)  # fmt: skip


def idle_line(label: str, r: Reading) -> str:
    return (f"[idle] {label}: valkey main thread {1e6 * r.valkey / r.wall:.0f} µs/s over {r.wall:.1f} s "
            f"({r.valkey_sys / r.valkey:.0%} in the kernel) "
            f"(whole process {1e6 * r.valkey_all / r.wall:.0f} µs/s); API {1e3 * r.api / r.wall:.1f} ms/s, "
            f"worker {1e3 * r.worker / r.wall:.1f} ms/s CPU")  # fmt: skip


def per_group(label: str, sizes: dict[str, int], n: int) -> str:
    """The census's biggest patterns, in bytes per group."""
    top = sorted(sizes.items(), key=lambda kv: -kv[1])[:9]
    return f"     {label}: " + ", ".join(f"{name} {size / n:.0f} B" for name, size in top)


def census_delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0}


async def phases(b: Bench, args: argparse.Namespace, data: bytes) -> None:
    """Idle baselines, then the measured phases and the summary."""
    n, pace = args.groups, args.pace
    await b.flow(args.warmup, data)  # warm-up: every code path once, scripts cached, connections open
    await asyncio.sleep(0.5)
    running = await idle_rate(b, args.idle, poll=True)
    print(idle_line("API + worker running, bench polling the queue", running), flush=True)
    await calibrate(b, running)

    census0, mem0 = await b.census(), await b.used_memory()
    groups: list[Group] = []
    measured: list[Phase] = []

    async def create() -> None:
        await b.gated([partial(b.create, groups) for _ in range(n)], pace)
        await b.drained()  # nothing is queued by a create; this only checks it

    measured.append(await measure(b, "1", n, running, "create", "the API's create: one script, no job, no storage "
                                  "call", create))  # fmt: skip
    mem1, census1 = await b.used_memory(), await b.census()

    files = [(g, f) for g in groups for f in g.files]

    async def part_urls() -> None:
        await b.gated([partial(b.part_urls, g, f) for g, f in files], pace * len(files) / n)
        await b.drained()

    measured.append(await measure(b, "2", len(files), running, "part-urls call", "the first of each file: a "
                                  "multipart file's upload opened by the API", part_urls))  # fmt: skip
    mem2 = await b.used_memory()

    t0 = time.perf_counter()
    puts = [partial(b.put, g, u, p, data) for g in groups for u, ps in g.parts.items() for p in ps]
    await b.gated(puts)
    print(f"[3] {len(puts)} PUTs ({sum(SIZES.values()) * n / MIB:.0f} MiB) to moto in "
          f"{time.perf_counter() - t0:.1f} s (storage only, not in the figures)", flush=True)  # fmt: skip

    async def complete() -> None:
        await b.gated([partial(b.complete, g, f) for g, f in files], pace * len(files) / n)
        await b.drained()

    measured.append(await measure(b, "4", len(files), running, "completion", "per file; the group's last one "
                                  "hands the group off", complete))  # fmt: skip
    handoffs = await b.redis.zcard(HANDOFF_INDEX)
    mem4, census4 = await b.used_memory(), await b.census()
    measured.append(await measure(b, "5", n, running, "completed group", f"one re-drive pass: {len(files)} "
                                  f"completing-index entries, {handoffs} hand-off checks", b.redrive_pass))  # fmt: skip
    mem5 = await b.used_memory()

    print(f"[mem] used_memory per group: {(mem1 - mem0) / n:.0f} B created, {(mem2 - mem0) / n:.0f} B after "
          f"part-urls (live, provisioned), {(mem4 - mem0) / n:.0f} B completed, {(mem5 - mem0) / n:.0f} B completed "
          "after the re-drive pass", flush=True)  # fmt: skip
    print(per_group("created, by key pattern (MEMORY USAGE)", census_delta(census1, census0), n), flush=True)
    print(per_group("completed, by key pattern", census_delta(census4, census0), n), flush=True)

    made, urls, done, cleanup = measured
    lifecycle_us = sum(p.corrected("valkey") for p in measured) * 1e6 / n
    api_ms = sum(p.corrected("api") for p in measured) * 1e3 / n
    worker_ms = sum(p.corrected("worker") for p in measured) * 1e3 / n
    commands = sum(sum(calls for calls, _ in p.delta.cmds.values()) for p in measured) / n
    trips = sum(p.delta.reads for p in measured) / n
    idle_trips = running.reads / running.wall * sum(p.delta.wall for p in measured) / n
    print(
        f"SUMMARY valkey main-thread CPU, idle-corrected: create {made.per_op_us():.0f} µs, part-urls "
        f"{urls.per_op_us():.0f} µs/call, completion {done.per_op_us():.0f} µs/file, re-drive "
        f"{cleanup.per_op_us():.0f} µs/group; whole group lifecycle ({len(files) / n:g} files) {lifecycle_us:.0f} µs "
        f"-> one Valkey core sustains ≈ {1e6 / lifecycle_us:.0f} group lifecycles/s (≈ {1e6 / made.per_op_us():.0f} "
        f"creates/s if creates only); per group {commands:.0f} commands (a script's own calls included) and "
        f"{trips:.0f} round trips (read events; {idle_trips:.0f} of them the idle polling over the phases' time); "
        f"memory {(mem2 - mem0) / n:.0f} B per live group, {(mem5 - mem0) / n:.0f} B per completed group; "
        f"API {api_ms:.1f} ms and worker {worker_ms:.1f} ms CPU per group",
        flush=True,
    )


async def run(args: argparse.Namespace, stack: Stack) -> None:
    """Start the stack, open the clients, run the phases."""
    stack.start_stores(valkey_config=None if args.aof else {"appendonly": "no"})
    base = stack.start_api()
    stack.start_worker()
    settings = stack.settings()
    redis = Redis.from_url(stack.redis_url)
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as api, \
                httpx.AsyncClient(timeout=120, limits=limits) as s3:  # fmt: skip
            b = Bench(stack, settings, redis, api, s3, await stack.key("bench"), args.concurrency)
            info = await redis.info("server")
            max_jobs, staleness = settings.worker.worker_max_jobs, settings.uploads.parts_staleness_seconds
            print(f"valkey {info['valkey_version']} (appendonly {'everysec' if args.aof else 'no'}), 1 API process, "
                  f"1 worker (max_jobs {max_jobs}), {args.groups} groups of the seed shape (files "
                  f"{', '.join(f'{r} {s} B' for r, s in SIZES.items())}; part size {PART_SIZE // MIB} MiB), client "
                  f"concurrency {args.concurrency}{f', paced at {args.pace:g} groups/s' if args.pace else ''}, API "
                  f"key cache {settings.api.key_cache_seconds:g} s, parts staleness {staleness:g} s",
                  flush=True)  # fmt: skip
            await phases(b, args, os.urandom(max(SIZES.values())))
    finally:
        await redis.aclose()


def main() -> None:
    """Parse options, run, and always stop every process."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=200, help="groups driven through the flow (default 200)")
    parser.add_argument("--concurrency", type=int, default=16, help="client calls in flight at most (default 16)")
    parser.add_argument("--pace", type=float, default=0.0,
                        help="groups/s to spread each phase's calls over (default 0: as fast as they go)")  # fmt: skip
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle baseline (default 5)")
    parser.add_argument("--warmup", type=int, default=3, help="groups through the flow before measuring (default 3)")
    parser.add_argument("--key-cache", type=float, default=10.0,
                        help="API key cache seconds (default 10, the service's; 0: a lookup per request)")  # fmt: skip
    parser.add_argument("--no-aof", dest="aof", action="store_false", help="Valkey without AOF (default: everysec)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    env = {
        "SPATIALGEN_RATE_LIMITS": "off",
        "SPATIALGEN_QUOTA_LIVE_GROUPS": str(10**9),
        "SPATIALGEN_QUOTA_LIVE_BYTES": str(2**62),
        "SPATIALGEN_PART_SIZE_BYTES": str(PART_SIZE),
        "SPATIALGEN_PARTS_STALENESS_SECONDS": "0.2",
        "SPATIALGEN_KEY_CACHE_SECONDS": f"{args.key_cache:g}",
        # The sweeps cost per unit of time, not per operation: hourly (at hh:00:00; a phase one falls in is flagged),
        # reconciliation off. Phase 5 runs the re-drive's per-completion work itself.
        "SPATIALGEN_EXPIRY_SWEEP_SECONDS": "3600",
        "SPATIALGEN_REDRIVE_SECONDS": "3600",
        "SPATIALGEN_ORPHAN_SWEEP_SECONDS": "3600",
        "SPATIALGEN_RECONCILE_SECONDS": "0",
    }
    with tempfile.TemporaryDirectory(prefix="bench_capacity_") as tmp:
        stack = Stack(Path(tmp), settings_env=env)
        try:
            asyncio.run(run(args, stack))
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            sys.exit(130)
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
