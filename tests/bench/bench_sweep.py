"""Benchmark: the expiry sweep (idle tick over many live groups; expiring many due ones) and Redis memory per group.

Starts its own Valkey (no AOF) and creates real groups through UploadService; every timing has a same-run baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import msgspec  # noqa: E402
from redis.asyncio import Redis  # noqa: E402

from app.domain.clock import now_ms  # noqa: E402
from app.domain.contract import UploadStrategy  # noqa: E402
from app.domain.lifecycle import Reply  # noqa: E402
from app.domain.objectkeys import group_prefix  # noqa: E402
from app.domain.parts import part_range  # noqa: E402
from app.domain.records import FileRecord, GroupRecord  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.state import Progress, UploadState  # noqa: E402
from app.state.apikeys import Principal, Role  # noqa: E402
from app.state.jobs import purge_jobs  # noqa: E402
from app.state.keys import (  # noqa: E402
    EXPIRY_INDEX,
    TRIM_QUEUE,
    account_index_key,
    ended_index_key,
    group_key,
    state_key,
    usage_key,
)
from app.state.scripts import all_scripts  # noqa: E402
from app.state.store import PARTS_CACHE_MS  # noqa: E402
from app.upkeep.expiry import SWEEP_BATCH, expire_due_groups  # noqa: E402
from app.uploads.service import UploadService  # noqa: E402
from app.uploads.start import start_upload_group  # noqa: E402
from deploy.local.devstack import free_port, start_valkey, stop  # noqa: E402
from tests.conftest import SEED_REQUEST, worst_case_request  # noqa: E402

ACCOUNT = "bench"
CHUNK = 256  # concurrent creates per asyncio.gather
SWEEP_TARGET_MS = 10.0
MEMORY_TARGET = 2048
S3_ID_CHARS = 128  # AWS multipart upload ids run ~100-160 characters; moto's ~70
TRACKED_PARTS = 13
BASELINE_BATCH = 500

Part = tuple[int, str, int]  # partNumber, ETag, size as the parts key stores them


def ms(seconds: float) -> float:
    """Seconds to milliseconds."""
    return seconds * 1e3


def p99(values: list[float]) -> float:
    """99th percentile (inclusive method; with few samples it is close to the maximum)."""
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


@dataclass
class Bench:
    """What every measurement shares: one Valkey, one client, the service over it."""

    client: Redis
    state: UploadState
    settings: Settings
    service: UploadService
    principal: Principal
    body: bytes

    async def create_groups(self, n: int) -> tuple[list[str], float]:
        """Create n real seed groups with the service's own create script; returns their ids and the seconds taken."""
        ids: list[str] = []
        t0 = time.perf_counter()
        for start in range(0, n, CHUNK):
            created = await asyncio.gather(
                *(
                    start_upload_group(self.service, self.principal, self.body, None)
                    for _ in range(min(CHUNK, n - start))
                )
            )
            ids += [c.session_id for c in created]
        return ids, time.perf_counter() - t0

    async def valkey_cpu(self) -> float:
        """CPU seconds of Valkey's main thread (INFO cpu, microsecond resolution)."""
        info: dict[str, Any] = await self.client.info("cpu")
        return float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"])

    async def flush(self) -> None:
        """FLUSHALL SYNC (Valkey frees a plain FLUSHALL in the background by default)."""
        await self.client.execute_command("FLUSHALL", "SYNC")  # type: ignore[no-untyped-call]

    async def settle(self) -> None:
        """Close the pool's extra connections and wait until Valkey has dropped them and freed everything lazily."""
        await self.client.connection_pool.disconnect()
        for _ in range(200):
            info: dict[str, Any] = await self.client.info()
            if int(info["connected_clients"]) <= 1 and int(info.get("lazyfree_pending_objects", 0)) == 0:
                return
            await asyncio.sleep(0.01)

    async def used_memory(self) -> int:
        """INFO used_memory on a settled server, minus what its one client connection holds."""
        await self.settle()
        info: dict[str, Any] = await self.client.info("memory")
        return int(info["used_memory"]) - int(info.get("mem_clients_normal", 0))

    async def memory_usage(self, key: str) -> int:
        """MEMORY USAGE key SAMPLES 0 (every element counted)."""
        return int(await self.client.memory_usage(key, samples=0) or 0)


async def hgetall(b: Bench, key: str) -> dict[bytes, bytes]:
    """HGETALL (redis-py types it as sync-or-async)."""
    return await cast(Awaitable[dict[bytes, bytes]], b.client.hgetall(key))


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    """Wall seconds of one awaited call."""
    t0 = time.perf_counter()
    await call()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# 1. An idle sweep tick over many live groups.
# ---------------------------------------------------------------------------------------------
async def idle_tick(b: Bench, live: int, repeat: int) -> None:
    """Time expire_due_groups with nothing due, interleaved with PING round trips on the same client."""
    await b.flush()
    _, took = await b.create_groups(live)
    indexed = await b.client.zcard(EXPIRY_INDEX)
    print(
        f"[1] setup: {live} seed groups created with UploadService.start_upload_group in {took:.1f} s "
        f"({live / took:.0f} groups/s); expiry index holds {indexed}",
        flush=True,
    )
    await b.settle()  # back to one connection, as a worker's cron has
    expired = await expire_due_groups(b.state, b.settings)  # warm-up (script load, connection)
    await b.client.ping()
    sweep: list[float] = []
    ping: list[float] = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        expired += await expire_due_groups(b.state, b.settings, now=now_ms())
        sweep.append(ms(time.perf_counter() - t0))
        ping.append(ms(await timed(b.client.ping)))
    if expired:
        raise RuntimeError(f"{expired} groups were due in an idle tick")
    s50, p50 = statistics.median(sweep), statistics.median(ping)
    print(
        f"[1] sweep tick, {indexed} live / 0 due, {repeat} runs: median {s50:.3f} ms, p99 {p99(sweep):.3f} ms "
        f"(target <= {SWEEP_TARGET_MS:g} ms) | baseline PING median {p50:.3f} ms, p99 {p99(ping):.3f} ms | "
        f"sweep/PING {s50 / p50:.2f}",
        flush=True,
    )


# ---------------------------------------------------------------------------------------------
# 2. Expiring many due groups (and, on the way, memory of many groups and of the indexes).
# ---------------------------------------------------------------------------------------------
@dataclass
class ManyGroups:
    """Memory figures taken while the due groups exist."""

    n: int
    used_delta: int
    used_delta_no_jobs: int
    expiry_index: int
    account_index: int
    queue_job: int


async def many_groups_memory(b: Bench, due: int) -> tuple[list[str], ManyGroups]:
    """On a flushed DB: create `due` groups and measure used_memory and the indexes' MEMORY USAGE."""
    await b.flush()
    before = await b.used_memory()
    ids, took = await b.create_groups(due)
    after = await b.used_memory()
    expiry = await b.memory_usage(EXPIRY_INDEX)
    account = await b.memory_usage(account_index_key(ACCOUNT))
    queue = await b.memory_usage(b.settings.worker.queue_name)
    jobs = [k async for k in b.client.scan_iter(match="arq:job:provision:*", count=1000)]
    job_bytes = 0
    async with b.client.pipeline(transaction=False) as pipe:
        for k in jobs:
            pipe.memory_usage(k, samples=0)
        job_bytes = sum(int(x or 0) for x in await pipe.execute())
    print(
        f"[2] setup: flushed DB, {due} seed groups created in {took:.1f} s; all of them are due at the far-future "
        f"`now` (no other groups in the DB); each also queued its provision job ({len(jobs)} jobs, "
        f"{job_bytes / max(len(jobs), 1):.0f} B each + {queue / due:.0f} B of arq:queue)",
        flush=True,
    )
    return ids, ManyGroups(
        n=due,
        used_delta=after - before,
        used_delta_no_jobs=after - before - job_bytes - queue,
        expiry_index=expiry,
        account_index=account,
        queue_job=job_bytes + queue,
    )


def probe_process(url: str, conn: Connection) -> None:
    """Another client (its own process, so no GIL or event loop shared with the sweep): PING every ms until told."""
    import redis

    client = redis.Redis.from_url(url)
    client.ping()
    conn.send("ready")
    samples: list[tuple[float, float]] = []
    while not conn.poll():
        t0 = time.monotonic()
        client.ping()
        samples.append((t0, ms(time.monotonic() - t0)))
        time.sleep(0.001)
    conn.recv()
    conn.send(samples)
    client.close()


async def lua_call_baseline(b: Bench, ids: list[str], now: int) -> tuple[float, float]:
    """Wall and valkey CPU seconds of EVALSHA `return 0` with the sweep's exact keys and arguments, 500 a batch."""
    noop = b.client.register_script("return 0")
    retention = b.settings.uploads.retention_seconds * 1000
    vk0, t0 = await b.valkey_cpu(), time.perf_counter()
    for start in range(0, len(ids), SWEEP_BATCH):
        async with b.client.pipeline(transaction=False) as pipe:
            for sid in ids[start : start + SWEEP_BATCH]:
                purge, late = purge_jobs(b.settings, sid, group_prefix(b.settings.storage.key_prefix, ACCOUNT, sid))
                keys, args = all_scripts()["expire_group"].bind(
                    state=state_key(sid), group=group_key(sid), expiry_index=EXPIRY_INDEX, usage=usage_key(ACCOUNT),
                    now_ms=now, retention_ms=retention, idle_retention_ms=retention, session_id=sid,
                    declared_bytes=2_762_023_489, purge=purge, late_purge=late, ended=ended_index_key(ACCOUNT),
                    trim=TRIM_QUEUE, account=ACCOUNT, ended_cap=b.settings.limits.retained_ended_groups,
                )  # fmt: skip
                await noop(keys=keys, args=args, client=pipe)
            await pipe.execute()
    return time.perf_counter() - t0, await b.valkey_cpu() - vk0


async def hset_baseline(b: Bench, n: int) -> None:
    """n plain HSETs pipelined BASELINE_BATCH at a time."""
    for start in range(0, n, BASELINE_BATCH):
        async with b.client.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + BASELINE_BATCH, n)):
                pipe.hset(f"bench:hset:{i}", "st", "expired")
            await pipe.execute()


async def expire_many(b: Bench, ids: list[str]) -> None:  # noqa: PLR0915 - phases in sequence, each printed
    """Expire every group in one sweep call; baselines: pipelined HSETs, and no-op scripts with the same arguments.

    Another process PINGs Valkey every millisecond throughout, so each phase also shows what an API request waits.
    """
    n = len(ids)
    queue = b.settings.worker.queue_name
    far_future = now_ms() + (b.settings.uploads.session_ttl_seconds + 86_400) * 1000
    await b.settle()
    await b.client.ping()
    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe()
    prober = ctx.Process(target=probe_process, args=(b.settings.redis.url, there), daemon=True)
    prober.start()
    windows: dict[str, tuple[float, float]] = {}
    try:
        here.recv()
        t_quiet = time.monotonic()
        await asyncio.sleep(0.3)  # a quiet window: the other client's PING alone
        windows["idle"] = (t_quiet, time.monotonic())
        t_start = time.monotonic()
        vk0, py0, t0 = await b.valkey_cpu(), time.process_time(), time.perf_counter()
        expired = await expire_due_groups(b.state, b.settings, now=far_future)
        took = time.perf_counter() - t0
        py_sweep = time.process_time() - py0
        vk_sweep = await b.valkey_cpu() - vk0
        windows["sweep"] = (t_start, time.monotonic())

        t_start = time.monotonic()
        vk0, t0 = await b.valkey_cpu(), time.perf_counter()
        await hset_baseline(b, n)
        base = time.perf_counter() - t0
        vk_base = await b.valkey_cpu() - vk0
        windows["HSETs"] = (t_start, time.monotonic())

        t_start = time.monotonic()
        lua, vk_lua = await lua_call_baseline(b, ids, far_future)
        windows["`return 0` scripts"] = (t_start, time.monotonic())
        here.send("stop")
        samples: list[tuple[float, float]] = here.recv()
    finally:
        prober.join(5)
        if prober.is_alive():
            prober.terminate()
            prober.join()
    members = [m.decode() for m in await b.client.zrange(queue, 0, -1)]
    purges = [m for m in members if m.startswith("purge:")]
    late = sum(m.endswith(":late") for m in purges)
    left = await b.client.zcard(EXPIRY_INDEX)
    print(
        f"[2] expire {n} due groups, one expire_due_groups(now=far future) call: {expired} expired in "
        f"{ms(took):.0f} ms = {expired / took:.0f} groups/s wall | Redis-side: valkey main-thread CPU "
        f"{ms(vk_sweep):.0f} ms = {1e6 * vk_sweep / n:.1f} µs/group ({n / vk_sweep:.0f} groups per valkey CPU-second); "
        f"python CPU {1e6 * py_sweep / n:.1f} µs/group; {left} left in the expiry index",
        flush=True,
    )
    print(
        f"[2] baseline: {n} plain HSETs pipelined {BASELINE_BATCH}/batch on the same client: {ms(base):.0f} ms "
        f"({n / base:.0f}/s; valkey CPU {1e6 * vk_base / n:.2f} µs/op) | sweep/baseline wall {took / base:.1f}, "
        f"valkey CPU {vk_sweep / vk_base:.1f}",
        flush=True,
    )
    print(
        f"[2] second baseline: EVALSHA of `return 0` with the sweep's exact 12 keys + 15 args per group, "
        f"{SWEEP_BATCH}/batch: {ms(lua):.0f} ms (valkey CPU {1e6 * vk_lua / n:.1f} µs/call) | sweep/that wall "
        f"{took / lua:.1f}, valkey CPU {vk_sweep / vk_lua:.1f} (the rest is the script body)",
        flush=True,
    )
    probe = []
    for label, (lo, hi) in windows.items():
        lat = [x for t, x in samples if lo <= t <= hi]
        if lat:
            probe.append(f"{label} median {statistics.median(lat):.2f} / p99 {p99(lat):.2f} / max {max(lat):.2f} ms")
    print(f"[2] another process PINGing every ms (an API request's wait): {' | '.join(probe)}", flush=True)
    print(
        f"[2] storage calls queued: {len(purges)} purge jobs in {queue} ({len(purges) - late} immediate + {late} "
        f"deferred by part_url_ttl+60 s; {len(purges) / n:g} per group) (each purge = 1 ListMultipartUploads + "
        f"1 DeleteObjects + 1 AbortMultipartUpload per open upload); none executed by the sweep itself",
        flush=True,
    )


# ---------------------------------------------------------------------------------------------
# 3. Memory of one group through its lifecycle.
# ---------------------------------------------------------------------------------------------
@dataclass
class KeyInfo:
    """One key of a group as Valkey stores it."""

    name: str
    kind: str
    encoding: str
    bytes: int
    detail: str


async def group_keys(b: Bench, sid: str) -> list[KeyInfo]:
    """Every key of one group (SCAN MATCH on its hash tag) with its MEMORY USAGE and encoding."""
    out = []
    async for raw in b.client.scan_iter(match=f"sg:{{{sid}}}*", count=1000):
        key = raw.decode()
        kind = (await b.client.type(key)).decode()
        enc = (await b.client.object("encoding", key)).decode()
        detail = ""
        if kind == "hash":
            fields = await hgetall(b, key)
            longest = max(fields.items(), key=lambda kv: len(kv[1]))
            detail = (
                f"{len(fields)} fields, {sum(len(k) + len(v) for k, v in fields.items())} B of field+value bytes, "
                f"longest value {len(longest[1])} B in {longest[0].decode()[:6]}…"
            )
        elif kind == "string":
            detail = f"{await b.client.strlen(key)} B value"
        out.append(KeyInfo(key, kind, enc, await b.memory_usage(key), detail))
    return sorted(out, key=lambda k: -k.bytes)


def short(key: str) -> str:
    """`sg:{<sid>}:parts:<uploadId>` -> `:parts:<8 chars>…`."""
    tail = key[key.index("}") + 1 :]
    return tail[:15] + "…" if tail.startswith(":parts:") else tail


def stage_line(label: str, keys: list[KeyInfo]) -> str:
    """One printed line of a lifecycle stage."""
    total = sum(k.bytes for k in keys)
    parts = ", ".join(f"{short(k.name)} {k.bytes} B ({k.kind}/{k.encoding})" for k in keys)
    verdict = "within" if total <= MEMORY_TARGET else "OVER"
    return f"[3] {label}: {total} B over {len(keys)} keys, {verdict} the {MEMORY_TARGET} B target | {parts}"


def fake_s3_upload_id() -> str:
    """An S3-looking multipart upload id of S3_ID_CHARS characters."""
    return secrets.token_urlsafe(S3_ID_CHARS)[:S3_ID_CHARS]


def fake_parts(f: FileRecord, count: int) -> list[Part]:
    """Parts as ListParts reports them: number, quoted MD5 ETag, size (the planned one; part_size past the plan)."""
    sizes = [hi - lo for lo, hi in (part_range(n, f.part_size, f.total_bytes) for n in range(1, count + 1))]
    return [
        (n, f'"{secrets.token_hex(16)}"', size if size > 0 else f.part_size)
        for n, size in zip(range(1, count + 1), sizes, strict=True)
    ]


async def lifecycle(
    b: Bench, parts_per_file: int | None, body: bytes | None = None, idem: str | None = None
) -> tuple[str, GroupRecord, list[list[KeyInfo]]]:
    """Create one group, provision its multipart files, track their parts; the group's keys after each stage.

    parts_per_file None tracks each multipart file's real part count.
    """
    created = await start_upload_group(b.service, b.principal, body or b.body, idem)
    sid = created.session_id
    snap = await b.state.snapshot(sid)
    assert snap is not None
    record = snap.record
    stages = [await group_keys(b, sid)]
    for f in record.files:
        if f.strategy is UploadStrategy.MULTIPART:
            outcome = await b.state.record_s3_upload(record, f.upload_id, fake_s3_upload_id())
            if outcome.code is not Reply.OK:
                raise RuntimeError(f"record_s3_upload answered {outcome!r}")
    stages.append(await group_keys(b, sid))
    now = now_ms()
    for f in record.files:
        if f.strategy is UploadStrategy.MULTIPART:
            parts = fake_parts(f, parts_per_file or f.total_parts)
        else:  # refresh_parts records a single PUT's object as part 1 with no ETag
            parts = [(1, "", f.total_bytes)]
        await b.state.record_parts(
            sid, f.upload_id, parts, progress=Progress(len(parts), sum(p[2] for p in parts), now)
        )
    stages.append(await group_keys(b, sid))
    return sid, record, stages


async def one_group_memory(b: Bench, many: ManyGroups) -> None:
    """Print MEMORY USAGE of one seed group's keys through its lifecycle, then the shared and total figures."""
    await b.flush()
    _, record, stages = await lifecycle(b, TRACKED_PARTS)
    multipart = [f for f in record.files if f.strategy is UploadStrategy.MULTIPART]
    labels = [
        "(a) just created",
        f"(b) provisioned ({len(multipart)} multipart files, {S3_ID_CHARS}-char S3 upload ids via record_s3_upload)",
        f"(c) parts tracked (record_parts: {TRACKED_PARTS} parts with quoted-MD5 ETags per multipart file, "
        "1 part for the single-PUT file as refresh_parts does)",
    ]
    for label, keys in zip(labels, stages, strict=True):
        print(stage_line(label, keys), flush=True)
    _, _, real = await lifecycle(b, None)
    counts = "/".join(str(f.total_parts) for f in multipart)
    print(stage_line(f"(c') as (c) with the seed files' real part counts {counts}", real[-1]), flush=True)
    for k in stages[-1]:
        if k.detail:
            print(f"    {short(k.name)}: {k.detail}", flush=True)
    n = many.n
    share = (many.expiry_index + many.account_index) / n
    print(
        f"[3] index share per group (MEMORY USAGE with {n} groups / {n}): {EXPIRY_INDEX} {many.expiry_index / n:.1f} B "
        f"+ {account_index_key(ACCOUNT)} {many.account_index / n:.1f} B = {share:.1f} B",
        flush=True,
    )
    print(
        f"[3] INFO used_memory delta creating {n} groups (stage a): {many.used_delta / n:.0f} B/group, the honest "
        f"figure (key dicts, TTLs, indexes, and the queued provision job: {many.queue_job / n:.0f} B); without the "
        f"provision job {many.used_delta_no_jobs / n:.0f} B/group; target {MEMORY_TARGET} B",
        flush=True,
    )
    durable = [k for k in stages[-1] if ":parts:" not in k.name]
    cache = [k for k in stages[-1] if ":parts:" in k.name]
    print(
        f"[3] at (c): the group's durable keys {sum(k.bytes for k in durable)} B + index share {share:.0f} B = "
        f"{sum(k.bytes for k in durable) + share:.0f} B (target {MEMORY_TARGET} B); plus the part-list cache "
        f"{sum(k.bytes for k in cache)} B in {len(cache)} keys, expiring {PARTS_CACHE_MS // 1000} s after a refresh",
        flush=True,
    )


async def idempotency_record(b: Bench) -> KeyInfo:
    """The one idempotency record on a DB holding one group created with an Idempotency-Key."""
    keys = [k.decode() async for k in b.client.scan_iter(match="sg:idem:*", count=1000)]
    (key,) = keys
    return KeyInfo(key, "string", "", await b.memory_usage(key), f"{await b.client.strlen(key)} B value")


async def worst_case_memory(b: Bench, n: int) -> None:
    """Memory of the largest valid group (64 files, 255-character names, a 5,000-character description, all in
    4-byte characters), next to the seed group: MEMORY USAGE over its keys and its idempotency record per stage,
    and the INFO used_memory delta over n of them (indexes, usage, queued jobs included)."""
    worst = msgspec.json.encode(worst_case_request())
    figures = []
    for label, body in (("seed", b.body), ("worst", worst)):
        await b.flush()
        _, _, stages = await lifecycle(b, TRACKED_PARTS, body, idem="bench-idem-key")
        idem = await idempotency_record(b)
        created = sum(k.bytes for k in stages[0]) + idem.bytes
        tracked = sum(k.bytes for k in stages[-1]) + idem.bytes
        figures.append((label, len(body), created, tracked))
        print(f"[4] {label} ({len(body)} B body): created {created} B = "
              + ", ".join(f"{short(k.name)} {k.bytes} B" for k in stages[0]) + f", idempotency record {idem.bytes} B; "
              f"provisioned + {TRACKED_PARTS} parts tracked per multipart file: {tracked} B", flush=True)  # fmt: skip
    await b.flush()
    before = await b.used_memory()
    for start in range(0, n, CHUNK):
        await asyncio.gather(*(start_upload_group(b.service, b.principal, worst, f"w{i}")
                               for i in range(start, min(n, start + CHUNK))))  # fmt: skip
    up = b.settings.uploads
    delta = (await b.used_memory() - before) / n
    (_, _, seed_created, _), (_, worst_bytes, worst_created, worst_tracked) = figures
    print(f"[4] bytes per group: typical (seed) {seed_created} B, worst case {worst_created} B at creation "
          f"({worst_created / worst_bytes:.2f} x its body), {worst_tracked} B once provisioned and tracked; "
          f"INFO used_memory delta over {n} worst-case creates {delta:.0f} B/group (jobs, indexes included); "
          f"a group nobody uses is kept {up.idle_group_seconds // 3600} h + as long again, not "
          f"{(up.session_ttl_seconds + up.retention_seconds) // 86400} days", flush=True)  # fmt: skip


async def run(args: argparse.Namespace, tmp: Path, procs: list[Any]) -> None:
    """Start Valkey, then run the three measurements."""
    port = free_port()
    procs.append(start_valkey(port, tmp / "valkey", appendonly=False))
    url = f"redis://127.0.0.1:{port}/0"
    # The sweep never talks to S3; limits and quotas off: this measures state, not the limiter.
    settings = Settings().override(redis_url=url, s3_endpoint_url="http://127.0.0.1:9", rate_limits="off",
                        quota_live_groups=10**9, quota_live_bytes=2**62)  # fmt: skip
    client = Redis.from_url(url)
    try:
        state = UploadState(client)
        b = Bench(
            client=client,
            state=state,
            settings=settings,
            service=UploadService(settings, state),
            principal=Principal(account=ACCOUNT, role=Role.UPLOAD, key_id="bench"),
            body=msgspec.json.encode(SEED_REQUEST),
        )
        print(f"valkey {(await client.info('server'))['valkey_version']} (appendonly no), seed group of "
              f"{len(SEED_REQUEST['files'])} files, {len(b.body)}-byte request", flush=True)  # fmt: skip
        if args.live:
            await idle_tick(b, args.live, args.repeat)
        ids, many = await many_groups_memory(b, args.due)
        await expire_many(b, ids)
        await one_group_memory(b, many)
        await worst_case_memory(b, args.worst)
    finally:
        state.close()
        await client.aclose()


def main() -> None:
    """Parse options, run, and always stop Valkey."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--live", type=int, default=100_000, help="live groups for the idle tick (default 100000)")
    parser.add_argument("--due", type=int, default=10_000, help="due groups expired in one sweep (default 10000)")
    parser.add_argument("--repeat", type=int, default=20, help="idle ticks timed (default 20)")
    parser.add_argument("--worst", type=int, default=500, help="worst-case groups for used_memory (default 500)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    procs: list[Any] = []
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        try:
            asyncio.run(run(args, Path(tmp), procs))
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            sys.exit(130)
        finally:
            stop(procs)


if __name__ == "__main__":
    main()
