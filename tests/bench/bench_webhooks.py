"""Benchmark: webhook deliveries per second per worker, and what webhooks add to a completion's Redis work.

[1] The completing script (finish_complete.lua) on one-file groups, for an account without endpoints (the baseline:
    one EXISTS more than before webhooks) and one with an endpoint (two events appended to the outbox): Redis
    commands per script and Valkey CPU per script (INFO commandstats, which counts the commands a script runs).
[2] One worker process (`spatialgen-worker`, the webhook side included) delivering test events to a local receiver
    (verifying every signature with the reference verifier): deliveries per second to one endpoint (its concurrency
    limit binds) and spread over 20 endpoints; the baseline is plain httpx POSTs from this process to the same
    receiver at the same concurrency, in the same run.
Ratios, never thresholds: these machines are shared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from redis.asyncio import Redis  # noqa: E402

from app.domain.clock import now_ms  # noqa: E402
from app.domain.lifecycle import FileStatus  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.state.apikeys import Principal, Role  # noqa: E402
from app.state.jobs import LibraryTemplate  # noqa: E402
from app.state.keys import FileField, file_field, state_key  # noqa: E402
from app.state.webhooks import Endpoint, WebhookStore  # noqa: E402
from app.uploads.complete import library_payload  # noqa: E402
from app.uploads.service import UploadService  # noqa: E402
from app.uploads.start import start_upload_group  # noqa: E402
from app.webhooks.signing import new_secret  # noqa: E402
from deploy.local.devstack import free_port, start_moto, start_valkey, stop, worker_command  # noqa: E402
from deploy.local.webhook_receiver import Receiver  # noqa: E402

BODY = b'{"videoName":"bench","layout":"2D","files":[{"fileName":"v.mp4","fileRole":"video","sizeBytes":1000}]}'


async def completions(state: WebhookStore, settings: Settings, account: str, n: int) -> tuple[float, float, float]:
    """n one-file groups completed through finish_complete.lua: (Redis commands per script, Valkey µs per script,
    client ms per script)."""
    service = UploadService(settings, state)
    who = Principal(account, Role.UPLOAD, "bench-key")
    records = []
    for _ in range(n):
        created = await start_upload_group(service, who, BODY, None)
        snap = await state.snapshot(created.session_id)
        assert snap is not None
        f = snap.record.files[0]
        await state.redis.hset(
            state_key(snap.record.session_id), file_field(FileField.STATUS, f.upload_id), FileStatus.COMPLETING.value
        )
        records.append(snap.record)
    await state.redis.config_resetstat()
    start = time.perf_counter()
    for record in records:
        t = now_ms()
        library = LibraryTemplate.build(library_payload(record, "bench", t), now_ms=t)
        await state.finish_complete(
            record, record.files[0].upload_id, now_ms=t, retention_ms=86_400_000, library=library,
            processing_queue="bench:processing",
        )  # fmt: skip
    took = time.perf_counter() - start
    stats = await state.redis.info("commandstats")
    scripts = stats["cmdstat_evalsha"]
    inner = sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_evalsha", "cmdstat_config", "cmdstat_info"))
    return inner / scripts["calls"], scripts["usec"] / scripts["calls"], took * 1000 / n


async def completion_cost(state: WebhookStore, settings: Settings, n: int, rounds: int) -> dict[str, list[float]]:
    """Alternating rounds without and with an endpoint (so drift hits both alike): per-round figures by account."""
    hooked = Endpoint(
        endpoint_id=str(uuid.uuid4()),
        account="hooked",
        url="https://x.example/",
        types=(),
        created_ms=now_ms(),
        secret=new_secret(),
    )
    await state.add_endpoint(hooked, max_endpoints=20)
    await completions(state, settings, "warmup", 200)
    out: dict[str, list[float]] = {"plain": [], "hooked": [], "plain_cmds": [], "hooked_cmds": []}
    for _ in range(rounds):
        for account in ("plain", "hooked"):
            cmds, usec, _ = await completions(state, settings, account, n)
            out[account].append(usec)
            out[f"{account}_cmds"].append(cmds)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def deliveries(store: WebhookStore, receiver: Receiver, endpoints: int, events: int) -> float:
    """Deliveries per second by the running worker: `events` test events spread over `endpoints` endpoints."""
    ids = []
    for i in range(endpoints):
        e = Endpoint(
            endpoint_id=str(uuid.uuid4()),
            account=f"bench{i}",
            url=receiver.url,
            types=(),
            created_ms=now_ms(),
            secret=receiver.secrets[0],
        )
        await store.add_endpoint(e, max_endpoints=100)
        ids.append(e)
    before = len(receiver.received)
    start = time.perf_counter()
    async with store.redis.pipeline(transaction=False) as pipe:
        for i in range(events):
            e = ids[i % endpoints]
            pipe.xadd("sg:events", {"id": f"evt_{uuid.uuid4().hex}", "type": "webhook.test", "account": e.account,
                                    "ep": e.endpoint_id, "at": now_ms()})  # fmt: skip
        await pipe.execute()
    while len(receiver.received) - before < events:  # noqa: ASYNC110 - polling the receiver's list is the measure
        await asyncio.sleep(0.01)
    took = time.perf_counter() - start
    assert all(r.verified for r in receiver.received[before:])
    return events / took


async def raw_posts(receiver: Receiver, concurrency: int, n: int) -> float:
    """The baseline: plain unsigned POSTs from this process at the same concurrency."""
    saved, receiver.secrets = receiver.secrets, []
    try:
        async with httpx.AsyncClient() as client:
            sem = asyncio.Semaphore(concurrency)

            async def one() -> None:
                async with sem:
                    await client.post(receiver.url, content=b'{"id":"x"}')

            start = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(n)))
            return n / (time.perf_counter() - start)
    finally:
        receiver.secrets = saved


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    valkey = start_valkey(free_port(), tmp / "valkey", appendonly=False)
    s3_port = free_port()
    moto = start_moto(s3_port)
    env = {**os.environ, "PYTHONPATH": str(REPO), "SPATIALGEN_REDIS_URL": valkey.url,
           "SPATIALGEN_S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}", "SPATIALGEN_S3_ACCESS_KEY_ID": "bench",
           "SPATIALGEN_S3_SECRET_ACCESS_KEY": "bench", "SPATIALGEN_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
           "SPATIALGEN_RATE_LIMITS": "off", "SPATIALGEN_QUOTA_LIVE_GROUPS": str(10**9)}  # fmt: skip
    settings = Settings.from_env(env)
    redis = Redis.from_url(valkey.url)
    store = WebhookStore(redis)
    proc = None
    try:
        n, rounds = args.completions, 4
        cost = await completion_cost(store, settings, n, rounds)
        exists = (await redis.info("commandstats")).get("cmdstat_exists", {}).get("usec_per_call", 0.0)
        plain, hooked = statistics.median(cost["plain"]), statistics.median(cost["hooked"])
        print(f"[1] completing script (finish_complete.lua), {rounds} alternating rounds of {n} one-file groups: the")
        print("    last file completes its group (an endpoint gets two events: upload_file and upload_group.completed)")
        print(
            f"    no endpoint (baseline)  {cost['plain_cmds'][0]:5.1f} Redis commands (one of them EXISTS, "
            f"{exists:.2f} µs), {plain:6.1f} µs Valkey CPU (median; rounds "
            f"{', '.join(f'{x:.1f}' for x in cost['plain'])})"
        )
        print(
            f"    with an endpoint        {cost['hooked_cmds'][0]:5.1f} Redis commands (+2 XADD), {hooked:6.1f} µs "
            f"Valkey CPU (rounds {', '.join(f'{x:.1f}' for x in cost['hooked'])}): ×{hooked / plain:.2f}, "
            f"{hooked - plain:+.1f} µs per completion"
        )
        await redis.flushall()

        receiver = await Receiver([new_secret()]).start()
        worker_cpu: dict[str, float] = {}
        quiet = asyncio.subprocess.DEVNULL
        proc = await asyncio.create_subprocess_exec(*worker_command(), env=env, cwd=REPO, stdout=quiet, stderr=quiet)
        await deliveries(store, receiver, 1, 50)  # warm up: the worker started, connections open
        limit = settings.webhooks.endpoint_concurrency
        cpu = cpu_seconds(proc.pid)
        one = await deliveries(store, receiver, 1, args.events)
        worker_cpu["one"] = (cpu_seconds(proc.pid) - cpu) / args.events
        base_one = await raw_posts(receiver, limit, args.events)
        cpu = cpu_seconds(proc.pid)
        many = await deliveries(store, receiver, 20, args.events)
        worker_cpu["many"] = (cpu_seconds(proc.pid) - cpu) / args.events
        base_many = await raw_posts(receiver, limit * 20, args.events)
        print(f"[2] one worker process, {args.events} test events each run, verified by the receiver")
        print(
            f"    one endpoint ({limit} at a time)   {one:7.0f} deliveries/s; raw POSTs at {limit}: "
            f"{base_one:7.0f}/s (×{one / base_one:.2f})"
        )
        print(
            f"    20 endpoints ({20 * limit} at a time) {many:7.0f} deliveries/s; raw POSTs at {20 * limit}: "
            f"{base_many:7.0f}/s (×{many / base_many:.2f})"
        )
        print(
            f"    worker CPU per delivery (dispatch, job, POST): {worker_cpu['one'] * 1e6:.0f} µs (one endpoint), "
            f"{worker_cpu['many'] * 1e6:.0f} µs (20 endpoints): ~{1 / worker_cpu['many']:.0f} deliveries/s per core"
        )
        await receiver.stop()
    finally:
        if proc is not None:
            proc.terminate()
            await proc.wait()
        store.close()
        await redis.aclose()
        stop([moto])
        valkey.stop()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--completions", type=int, default=2000)
    parser.add_argument("--events", type=int, default=2000)
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
