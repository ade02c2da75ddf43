"""The chaos soak (`make soak`): real processes, real bytes, random SIGKILLs; then every acknowledged group is
accounted for.

Per layout (`direct`: one Valkey; `sentinel`: a primary, two replicas and three Sentinels), for `--minutes`:

- the stack: two API processes, three workers (started both ways: `spatialgen-worker` and arq's own CLI on
  `worker.settings.WorkerSettings`), Valkey with AOF and `appendfsync always` (an acknowledged write survives a
  SIGKILL), moto for S3, every sweep every 5 s (orphan grace 30 s); with Sentinel, creates and completions are
  acknowledged by a replica (SPATIALGEN_REDIS_WRITE_REPLICAS=1) and the Sentinels use the deployed
  down-after-milliseconds (deploy/conf/sentinel.conf);
- `--clients` client loops create groups (a 6–11 MiB multipart 2D video, sometimes an audio or subtitle
  single_put file), PUT random bytes (keeping only their SHA-256 once the group is done), complete every file
  (following 202s) or, for about one group in ten, cancel it midway; they retry through refused connections and
  503s, move to another live API process, and send every create with an Idempotency-Key;
- a chaos loop (seeded) every 3–8 s SIGKILLs an API process or a worker and starts a replacement, SIGKILLs Valkey
  for 2–10 s and restarts it on its AOF (direct), or SIGKILLs the primary, waits for the Sentinels to promote a
  replica and restarts the killed node as a replica of the new primary (sentinel);
- an unmodified arq `Worker` in this process consumes the processing queue (README "The processing job") and
  records every job it is given.

At the deadline the faults stop, the clients finish the groups they hold (bounded), the service is left to
settle (queues drained, hand-offs taken, sweeps done), and the checks run; each is printed with its figure, and
the script exits 1 if any fails. Figures are measured, never assumed.

    .venv/bin/python -m tests.soak.soak [--minutes 3] [--layout direct|sentinel] [--clients 6] [--seed N]
                                        [--sentinel-down-after-ms MS]

The processes' logs and Valkey's data stay in the temporary directory printed first, for post-mortems.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
from arq.connections import RedisSettings
from arq.worker import Worker, func
from redis.asyncio import Redis

from app.domain.reasons import Reason
from app.settings import MIB
from app.state.connection import redis_client
from app.state.jobs import EXPIRE_CRON, ORPHAN_CRON, RECONCILE_CRON, REDRIVE_CRON
from app.state.keys import COMPLETING_INDEX, HANDOFF_INDEX, METRICS_KEY, MetricField, account_index_key, library_key
from app.storage.s3 import ObjectStore
from app.upkeep.identity import MARKER_NAME
from deploy.local.devstack import WORKER_WAYS, DevValkey
from tests.processes import HA, MASTER, ROOT, Stack, sigkill, start_ha

URL = "/api/videos/uploads"
ACCOUNT = "soak"
LAYOUTS = ("direct", "sentinel")
AOF_ALWAYS = {"appendfsync": "always"}
SWEEPS = {"SPATIALGEN_RECONCILE_SECONDS": "5", "SPATIALGEN_ORPHAN_SWEEP_SECONDS": "5",
          "SPATIALGEN_REDRIVE_SECONDS": "5", "SPATIALGEN_EXPIRY_SWEEP_SECONDS": "5",
          "SPATIALGEN_ORPHAN_GRACE_SECONDS": "30"}  # fmt: skip
API_PROCESSES = 2
WORKER_START = ("spatialgen-worker", "arq", "spatialgen-worker")
CANCEL_SHARE = 0.1
WARM_UP_GROUPS = 3
CANCEL_STAGES = ("created", "parts", "first_file")
"""created: right after the 201; parts: after half the video's parts; first_file: after the first file completed
(a one-file group: after its bytes, before its completion)."""
FAULT_EVERY = (3.0, 8.0)
VALKEY_DOWN = (2.0, 10.0)
FAILOVER_GAP = 25.0
"""Seconds between two failovers: a Sentinel starts no new failover of a master within twice its failover-timeout
(10 s, deploy/local/devstack.py start_sentinel) of the last one it took part in."""
CALL_BUDGET = 180.0
"""How long one API call or PUT is retried before its group is reported stuck."""
COMPLETE_BUDGET = 600.0
DRAIN_SECONDS = 180.0
"""After the deadline: how long the clients may take to finish the groups they hold."""
QUIESCE_SECONDS = 300.0
"""Then: how long the service may take to settle (the orphan sweep alone needs the 30 s grace + a 5 s tick)."""
RESEND = {"missing_parts", "object_missing", "storage_not_provisioned", "file_not_provisioned"}
"""Refusals after which a client asks for its part URLs again and PUTs its bytes again."""
AGAIN = {"completion_interrupted", "storage_unavailable"}
"""Refusals after which a client just completes again."""
REASONS = {r.value for r in Reason}
CRONS = (EXPIRE_CRON, ORPHAN_CRON, RECONCILE_CRON, REDRIVE_CRON)
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
GROUP_KEY = re.compile(r"^sg:\{([^}]+)\}:(.+)$")


def deployed_down_after_ms() -> int:
    """The Sentinels' down-after-milliseconds of the deployed layout (deploy/conf/sentinel.conf).

    The fault tests' 1 s makes a busy primary on a loaded machine look dead now and then, and a Sentinel then fails
    over a primary that is still up (two primaries for a moment); the soak runs with the deployed timing.
    """
    conf = (ROOT / "deploy" / "conf" / "sentinel.conf").read_text()
    found = re.search(r"^sentinel down-after-milliseconds \S+ (\d+)$", conf, re.MULTILINE)
    if found is None:
        raise SystemExit("deploy/conf/sentinel.conf sets no down-after-milliseconds")
    return int(found.group(1))


def log(line: str) -> None:
    print(line, flush=True)


# --- what the clients keep ---------------------------------------------------------------------


@dataclass
class SoakFile:
    name: str
    role: str
    size: int
    language: str | None = None
    sha256: str = ""
    upload_id: str = ""
    strategy: str = ""

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"fileName": self.name, "fileRole": self.role, "sizeBytes": self.size}
        if self.language:
            spec["languageTag"] = self.language
        return spec


@dataclass
class Group:
    """An acknowledged (201) group and what its client last saw."""

    sid: str
    client: int
    files: list[SoakFile]
    cancel_at: str | None
    outcome: str = "unfinished"
    """completed | canceled | unfinished (time ran out) | stuck | lost (404) | error (an unexpected answer)"""
    library_ids: set[int] = field(default_factory=set)
    detail: str = ""


class GroupEnded(Exception):
    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(f"{outcome}: {detail}")
        self.outcome, self.detail = outcome, detail


def problem_code(r: httpx.Response) -> str:
    with contextlib.suppress(Exception):
        return str(r.json().get("code") or "")
    return ""


def random_files(files: list[SoakFile]) -> list[bytes]:
    """Random bytes for each file; their SHA-256 is what is kept."""
    blobs = []
    for f in files:
        data = os.urandom(f.size)
        f.sha256 = hashlib.sha256(data).hexdigest()
        blobs.append(data)
    return blobs


class Client:
    """One client loop: group after group until the soak stops starting new ones."""

    def __init__(self, soak: Soak, n: int) -> None:
        self.soak, self.n = soak, n
        self.rng = random.Random(f"{soak.seed}:{soak.layout}:client{n}")
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=3.0))
        self.made = 0

    async def run(self) -> None:
        try:
            while not self.soak.stop_new.is_set():
                await self.one_group()
        finally:
            await self.http.aclose()

    async def call(self, method: str, path: str, *, json: Any = None, headers: dict[str, str] | None = None,
                   budget: float = CALL_BUDGET) -> httpx.Response:  # fmt: skip
        """An API call on a live API process, retried through refused connections and 5xx answers."""
        give_up = time.monotonic() + budget
        delay, last = 0.1, ""
        while True:
            live = self.soak.live
            if live:
                base = self.rng.choice(live)
                try:
                    r = await self.http.request(method, base + path, json=json,
                                                headers={**self.soak.key, **(headers or {})})  # fmt: skip
                except httpx.TransportError as exc:
                    self.soak.stats[f"API call: {type(exc).__name__} (retried)"] += 1
                    last = type(exc).__name__
                else:
                    if r.status_code < 500:
                        return r
                    code = problem_code(r)
                    self.soak.stats[f"API call: {r.status_code} {code or r.text[:60]!r} (retried)"] += 1
                    last = f"{r.status_code} {code}"
                    if r.status_code == 503 and (after := r.headers.get("retry-after")):
                        with contextlib.suppress(ValueError):
                            delay = min(float(after), 2.0)
            if time.monotonic() > give_up:
                raise GroupEnded("stuck", f"{method} {path}: only {last} for {budget:g} s")
            await asyncio.sleep(delay * self.rng.uniform(0.8, 1.2))
            delay = min(delay * 2, 2.0)

    async def put(self, part: dict[str, Any], data: bytes) -> str:
        """PUT one part (or a single_put file) to its presigned URL; its ETag ('' when already stored: 412)."""
        give_up = time.monotonic() + CALL_BUDGET
        delay, last = 0.1, ""
        body = data[part["byteStart"] : part["byteEnd"]]
        while True:
            try:
                r = await self.http.put(part["url"], content=body, headers=part["headers"])
            except httpx.TransportError as exc:
                self.soak.stats[f"PUT: {type(exc).__name__} (retried)"] += 1
                last = type(exc).__name__
            else:
                if r.status_code == 200:
                    return str(r.headers["etag"])
                if r.status_code == 412:  # write-once URL: the object is already there
                    self.soak.stats["PUT: 412, already stored"] += 1
                    return ""
                if r.status_code < 500:
                    raise GroupEnded("error", f"PUT part {part['partNumber']}: {r.status_code} {r.text[:300]}")
                self.soak.stats[f"PUT: {r.status_code} (retried)"] += 1
                last = str(r.status_code)
            if time.monotonic() > give_up:
                raise GroupEnded("stuck", f"PUT part {part['partNumber']}: only {last} for {CALL_BUDGET:g} s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def plan(self) -> list[SoakFile]:
        files = [SoakFile("video.mp4", "video", self.rng.randint(6 * MIB, 11 * MIB))]
        extra = self.rng.random()
        if extra < 0.25:
            files.append(SoakFile("audio.m4a", "audio", self.rng.randint(10_000, 3 * MIB), "en"))
        elif extra < 0.45:
            files.append(SoakFile("subtitles.srt", "subtitle", self.rng.randint(200, 50_000), "en"))
        return files

    async def one_group(self) -> None:
        self.made += 1
        files = self.plan()
        cancel_at = self.rng.choice(CANCEL_STAGES) if self.rng.random() < CANCEL_SHARE else None
        idem = uuid.UUID(int=self.rng.getrandbits(128)).hex
        blobs = await asyncio.to_thread(random_files, files)
        body = {"videoName": f"soak {self.soak.layout} client {self.n} group {self.made}", "layout": "2D",
                "files": [f.spec() for f in files]}  # fmt: skip
        try:
            r = await self.call("POST", URL, json=body, headers={"Idempotency-Key": idem})
        except GroupEnded as exc:
            self.soak.unacknowledged.append(exc.detail)
            return
        if r.status_code != 201:
            self.soak.unacknowledged.append(f"create answered {r.status_code}: {r.text[:300]}")
            return
        if r.headers.get("idempotent-replayed") == "true":
            self.soak.stats["create: replayed for its Idempotency-Key (a retried create)"] += 1
        doc = r.json()
        by_name = {fd["fileName"]: fd for fd in doc["files"]}
        for f in files:
            f.upload_id, f.strategy = by_name[f.name]["uploadId"], by_name[f.name]["uploadStrategy"]
        g = Group(doc["sessionId"], self.n, files, cancel_at)
        self.soak.groups.append(g)
        try:
            await self.drive(g, blobs)
        except GroupEnded as exc:
            g.outcome, g.detail = exc.outcome, exc.detail
        except asyncio.CancelledError:
            g.detail = g.detail or "its client was still at it when the drain period ended"
            raise
        except Exception as exc:  # a harness bug: report it with the group
            g.outcome, g.detail = "error", f"client exception {exc!r}"
            traceback.print_exc()

    def expect(self, r: httpx.Response, status: int, what: str) -> None:
        if r.status_code == status:
            return
        if r.status_code == 404:
            raise GroupEnded("lost", f"{what}: 404 {problem_code(r)}")
        raise GroupEnded("error", f"{what}: {r.status_code} {r.text[:300]}")

    async def drive(self, g: Group, blobs: list[bytes]) -> None:
        if g.cancel_at == "created":
            return await self.cancel(g)
        for i, (f, data) in enumerate(zip(g.files, blobs, strict=True)):
            halfway = g.cancel_at == "parts" and i == 0
            parts = await self.send(g, f, data, half=halfway)
            if halfway or (g.cancel_at == "first_file" and len(g.files) == 1):
                return await self.cancel(g)
            await self.complete(g, f, data, parts)
            if g.cancel_at == "first_file":
                return await self.cancel(g)
        g.outcome = "completed"
        return None

    async def send(self, g: Group, f: SoakFile, data: bytes, *, half: bool = False) -> list[dict[str, Any]]:
        """Ask for the file's part URLs and PUT its bytes (half its parts when `half`)."""
        r = await self.call("POST", f"{URL}/{g.sid}/files/{f.upload_id}/part-urls")
        self.expect(r, 200, "part-urls")
        parts = r.json()["parts"]
        if half:
            parts = parts[: max(1, len(parts) // 2)]
        done = []
        for p in parts:
            done.append({"partNumber": p["partNumber"], "etag": await self.put(p, data)})
        return done

    async def complete(self, g: Group, f: SoakFile, data: bytes, parts: list[dict[str, Any]]) -> None:
        """Complete the file, following 202s; after a refusal complete again, or PUT the bytes again first."""
        give_up = time.monotonic() + COMPLETE_BUDGET
        while True:
            body = {"parts": parts} if f.strategy == "multipart" else None
            r = await self.call("POST", f"{URL}/{g.sid}/files/{f.upload_id}/complete", json=body)
            if r.status_code == 200:
                library_id = r.json().get("libraryId")
                if library_id is not None:
                    g.library_ids.add(int(library_id))
                return
            code = problem_code(r)
            if r.status_code == 202:
                self.soak.stats["complete: 202, polled again"] += 1
                await asyncio.sleep(0.3)
            elif r.status_code == 409 and code in ("missing_parts", "file_not_provisioned"):
                reason = str(r.json().get("reason") or code)
                self.soak.stats[f"complete: 409 {code} ({reason})"] += 1
                if reason in RESEND:
                    parts = await self.send(g, f, data)
                elif reason not in AGAIN:
                    raise GroupEnded("error", f"complete refused: {reason}: {r.json().get('detail')}")
            else:
                self.expect(r, 200, "complete")
            if time.monotonic() > give_up:
                raise GroupEnded("stuck", f"complete of {f.name} not done after {COMPLETE_BUDGET:g} s")

    async def cancel(self, g: Group) -> None:
        r = await self.call("DELETE", f"{URL}/{g.sid}")
        self.expect(r, 200, "cancel")
        if r.json().get("status") != "canceled":
            raise GroupEnded("error", f"cancel answered {r.text[:300]}")
        g.outcome = "canceled"


# --- the downstream consumer -------------------------------------------------------------------


@dataclass
class Delivery:
    session_id: str
    library_id: int
    job_try: int
    enqueued: float


class Consumer:
    """An unmodified arq Worker on the processing queue, configured only through its public settings (README "The
    processing job"), restarted when it stops on a Redis outage, as a supervisor would."""

    def __init__(self, redis_settings: RedisSettings, queue: str) -> None:
        self.redis_settings = redis_settings
        self.queue = queue
        self.deliveries: list[Delivery] = []
        self.restarts = 0

    async def process_asset_set(self, ctx: dict[str, Any], payload: dict[str, Any]) -> None:
        self.deliveries.append(Delivery(str(payload["sessionId"]), int(payload["libraryId"]), int(ctx["job_try"]),
                                        ctx["enqueue_time"].timestamp()))  # fmt: skip

    async def run(self) -> None:
        async def process_asset_set(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
            await self.process_asset_set(ctx, payload)

        while True:
            worker = Worker(
                functions=[func(process_asset_set, name="process_asset_set")], queue_name=self.queue,
                redis_settings=self.redis_settings, job_serializer=msgspec.msgpack.encode,
                job_deserializer=msgspec.msgpack.decode, handle_signals=False, poll_delay=0.1,
                job_timeout=5, max_tries=50,
            )  # fmt: skip
            try:
                await worker.main()
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis went away under it (arq's worker stops on a connection error)
                self.restarts += 1
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(worker.close(), 5)
                with contextlib.suppress(Exception):
                    pool = getattr(worker, "_pool", None)
                    if pool is not None:
                        await pool.aclose()
            await asyncio.sleep(0.5)


# --- Redis memory ------------------------------------------------------------------------------


@dataclass
class Memory:
    used: int
    """INFO used_memory."""
    kept: int
    """used_memory minus what connections hold, the AOF buffer and the replication buffers (backlog included)."""
    keyspace: int
    """Hash-table overhead of the keyspace (main + expires + rehashing)."""
    sizes: dict[str, int]
    """MEMORY USAGE (SAMPLES 0) of every key."""
    stats: dict[str, Any]
    """MEMORY STATS as the server gave them."""


async def measure_memory(redis: Redis) -> Memory:
    for _ in range(100):
        info = await redis.info("memory")
        if int(info.get("lazyfree_pending_objects", 0)) == 0:
            break
        await asyncio.sleep(0.05)
    stats: dict[str, Any] = await redis.memory_stats()
    stats.update({f"info.{k}": v for k, v in info.items()})
    # Connections: what CLIENT LIST says each one holds now (MEMORY STATS' clients figure is refreshed by a cron,
    # a little at a time); replicas' output is the shared replication buffer, counted with the backlog.
    connections = [c for c in await redis.client_list() if "S" not in str(c.get("flags", ""))]
    stats["connections"] = len(connections)
    stats["connections.tot-mem"] = sum(int(c.get("tot-mem", 0)) for c in connections)
    buffers = stats["connections.tot-mem"] + int(info.get("mem_total_replication_buffers", 0))
    buffers += int(stats.get("aof.buffer", 0))
    db0 = stats.get("db.0") or {}
    keyspace = int(db0.get("overhead.hashtable.main", 0)) + int(db0.get("overhead.hashtable.expires", 0))
    keyspace += int(stats.get("overhead.db.hashtable.rehashing", 0))
    names = [k async for k in redis.scan_iter(count=1000)]
    sizes: dict[str, int] = {}
    for start in range(0, len(names), 500):
        batch = names[start : start + 500]
        async with redis.pipeline(transaction=False) as pipe:
            for k in batch:
                pipe.memory_usage(k, samples=0)
            got = await pipe.execute()
        sizes.update({k.decode(): int(n or 0) for k, n in zip(batch, got, strict=True)})
    used = int(info["used_memory"])
    return Memory(used, used - buffers, keyspace, sizes, stats)


IDEMPOTENCY = "idempotency records (24 h)"
TRANSIENT = ("jobs still queued", "in-progress locks and try counts", "other")
"""Kinds of key that must be gone once the service has settled."""
KEY_KINDS = (
    (tuple(f"arq:{kind}:{name}:" for kind in ("result", "in-progress", "retry", "job") for name in CRONS),
     "cron ticks (results 1 h, in-progress markers 60 s, the running and the next tick)"),
    (("sg:idem:",), IDEMPOTENCY),
    (("arq:result:",), "job results (1 h)"),
    (("arq:job:",), "jobs still queued"),
    (("arq:in-progress:", "arq:retry:"), "in-progress locks and try counts"),
    (("sg:", "arq:queue", "spatialgen:processing"), "indexes, queues, counters"),
)  # fmt: skip
PER_GROUP = ("job results (1 h)", "jobs still queued")


def classify(key: str) -> tuple[str, str | None]:
    """(what the key is, the sessionId it belongs to if any)."""
    if m := GROUP_KEY.match(key):
        return ("parts caches (120 s)" if m.group(2).startswith("parts:") else "group records"), m.group(1)
    found = UUID.search(key)
    sid = found.group(0) if found else None
    if key.startswith("arq:job:purge:") and key.endswith(":late"):
        return "late purges (deferred a day)", sid
    kind = next((kind for prefixes, kind in KEY_KINDS if key.startswith(prefixes)), "other")
    return kind, sid if kind in PER_GROUP else None


def nonkey(m: Memory) -> int:
    """The server's memory that is neither a key nor the keyspace's tables (buffers aside): scripts, structures."""
    return m.kept - m.keyspace - sum(m.sizes.values())


def mean(values: list[int]) -> float:
    return sum(values) / len(values) if values else 0.0


def session_of(key: str) -> str | None:
    """The sessionId of an object key ({prefix}/{account}/{sessionId}/{uploadId}{ext})."""
    parts = key.split("/")
    return parts[2] if len(parts) > 3 else None


# --- one layout --------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    figure: str


class Soak:
    def __init__(self, layout: str, minutes: float, clients: int, seed: int, tmp: Path, *,
                 down_after_ms: int = 0) -> None:  # fmt: skip
        self.layout, self.minutes, self.n_clients, self.seed = layout, minutes, clients, seed
        self.down_after_ms = down_after_ms or deployed_down_after_ms()
        self.rng = random.Random(f"{seed}:{layout}:chaos")
        self.stack = Stack(tmp)
        self.ha: HA | None = None
        self.live: list[str] = []
        self.api_procs: dict[str, subprocess.Popen[bytes]] = {}
        self.workers: list[tuple[subprocess.Popen[bytes], str]] = []
        self.next_way = 0
        self.key: dict[str, str] = {}
        self.groups: list[Group] = []
        self.unacknowledged: list[str] = []
        self.stats: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.fault_notes: dict[str, list[float]] = defaultdict(list)
        self.stop_new = asyncio.Event()
        self.t0 = time.monotonic()
        self.redis: Redis | None = None
        self.consumer: Consumer | None = None
        self.checks: list[Check] = []
        self.timings: dict[str, float] = {}
        self.figures: dict[str, Any] = {}
        self.memory_detail: tuple[Counter[str], Counter[str]] | None = None
        self.duplicated: set[str] = set()
        """Groups completed more than once (another or a second libraryId, a second processing job), groups made
        twice by a retried create, groups sharing a libraryId."""

    def say(self, line: str) -> None:
        log(f"[{self.layout} {time.monotonic() - self.t0:6.1f}s] {line}")

    # --- the stack

    async def start(self) -> None:
        self.stack.settings_env = dict(SWEEPS)
        if self.layout == "sentinel":
            self.ha = await start_ha(self.stack, valkey_config=AOF_ALWAYS, down_after_ms=self.down_after_ms)
            self.stack.settings_env.update(self.ha.env(), SPATIALGEN_REDIS_WRITE_REPLICAS="1")
        else:
            self.stack.start_stores(valkey_config=AOF_ALWAYS)
        for _ in range(API_PROCESSES):
            await self.add_api()
        for way in WORKER_START:
            self.add_worker(way)
        self.key = await self.stack.key(ACCOUNT)
        self.redis = redis_client(self.stack.settings().redis, socket_timeout=10, socket_connect_timeout=3)
        async with httpx.AsyncClient(timeout=5) as http:
            for base in self.live:

                async def ready(base: str = base) -> bool:
                    with contextlib.suppress(httpx.HTTPError):
                        return (await http.get(f"{base}/health/ready")).status_code == 200
                    return False

                await until(ready, within=60, what=f"{base} ready")
        settings = self.stack.settings()
        if self.ha is not None:
            redis_settings = RedisSettings(host=[("127.0.0.1", p) for p in self.ha.sentinel_ports], sentinel=True,
                                           sentinel_master=MASTER)  # fmt: skip
        else:
            assert self.stack.valkey is not None
            redis_settings = RedisSettings(host="127.0.0.1", port=self.stack.valkey.port)
        self.consumer = Consumer(redis_settings, settings.worker.processing_queue_name)

    async def add_api(self) -> str:
        base = await asyncio.to_thread(self.stack.start_api)
        self.api_procs[base] = self.stack.apis[-1][0]
        self.live.append(base)
        return base

    def add_worker(self, way: str | None = None) -> str:
        if way is None:
            way = WORKER_WAYS[self.next_way % len(WORKER_WAYS)]
            self.next_way += 1
        self.workers.append((self.stack.start_worker(way=way), way))
        return way

    def stop(self) -> None:
        if self.ha is not None:
            self.ha.stop()
        else:
            self.stack.stop()

    # --- the faults

    async def chaos(self, deadline: float) -> None:
        last_failover = -FAILOVER_GAP
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(self.rng.uniform(*FAULT_EVERY), left))
            if time.monotonic() >= deadline:
                break
            kind = self.rng.choice(["api", "worker", "valkey" if self.ha is None else "failover"])
            if kind == "failover" and time.monotonic() - last_failover < FAILOVER_GAP:
                kind = self.rng.choice(["api", "worker"])
            try:
                if kind == "api":
                    await self.kill_api()
                elif kind == "worker":
                    await self.kill_worker()
                elif kind == "valkey":
                    await self.kill_valkey()
                else:
                    last_failover = time.monotonic()
                    await self.fail_over()
            except Exception as exc:  # a harness failure: say so, and go on with the soak
                self.faults[f"{kind} (harness error)"] += 1
                self.say(f"fault {kind} failed in the harness: {exc!r}")
                traceback.print_exc()

    async def kill_api(self) -> None:
        base = self.rng.choice(self.live)
        proc = self.api_procs.pop(base)
        await asyncio.to_thread(sigkill, proc)
        self.live.remove(base)
        self.faults["API process SIGKILLed"] += 1
        new = await self.add_api()
        self.say(f"SIGKILL API {base} (pid {proc.pid}); replacement {new}")

    async def kill_worker(self) -> None:
        proc, way = self.workers.pop(self.rng.randrange(len(self.workers)))
        await asyncio.to_thread(sigkill, proc)
        self.faults["worker SIGKILLed"] += 1
        self.faults[f"worker SIGKILLed ({way})"] += 1
        new_way = self.add_worker()
        self.say(f"SIGKILL worker pid {proc.pid} ({way}); replacement started by {new_way}")

    async def kill_valkey(self) -> None:
        valkey = self.stack.valkey
        assert valkey is not None
        down = self.rng.uniform(*VALKEY_DOWN)
        await asyncio.to_thread(valkey.kill)
        self.say(f"SIGKILL Valkey (pid {valkey.pid}) for {down:.1f} s")
        await asyncio.sleep(down)
        await asyncio.to_thread(valkey.start)
        self.faults["Valkey SIGKILLed and restarted on its AOF"] += 1
        self.fault_notes["Valkey down (s)"].append(down)
        self.say(f"Valkey restarted on its AOF (pid {valkey.pid})")

    async def sentinel_primary(self) -> int | None:
        """The primary's port as a majority of the Sentinels name it."""
        assert self.ha is not None
        votes: Counter[int] = Counter()
        for port in self.ha.sentinel_ports:
            s = Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)
            try:
                answer = await s.execute_command("SENTINEL", "get-master-addr-by-name", MASTER)  # type: ignore[no-untyped-call]
                votes[int(answer[1])] += 1
            except Exception:
                pass
            finally:
                await s.aclose()
        best = votes.most_common(1)
        return best[0][0] if best and best[0][1] >= 2 else None

    async def role(self, node: DevValkey) -> tuple[str, int | None, str]:
        """(role, primary port, link status) as the node itself says."""
        client = Redis.from_url(node.url, socket_timeout=2, socket_connect_timeout=1)
        try:
            info = await client.info("replication")
            return str(info["role"]), info.get("master_port"), str(info.get("master_link_status", ""))
        except Exception:
            return "down", None, ""
        finally:
            await client.aclose()

    async def fail_over(self) -> None:
        assert self.ha is not None
        nodes = {n.port: n for n in self.ha.nodes}
        port = await self.sentinel_primary()
        if port is None or (await self.role(nodes[port]))[0] != "master":
            self.say("failover skipped: the Sentinels do not agree on a primary yet")
            return
        old = nodes[port]
        killed = time.monotonic()
        await asyncio.to_thread(old.kill)
        self.say(f"SIGKILL Valkey primary :{old.port} (pid {old.pid})")

        async def promoted() -> int | None:
            new = await self.sentinel_primary()
            return new if new not in (None, old.port) and (await self.role(nodes[new]))[0] == "master" else None

        try:
            new_port = await until(promoted, within=60, what="a promoted replica", interval=0.1)
        except AssertionError:
            old.config.pop("replicaof", None)
            await asyncio.to_thread(old.start)
            self.faults["primary SIGKILLed, no promotion within 60 s (restarted as it was)"] += 1
            self.say("no promotion within 60 s: the old primary restarted as it was")
            return
        self.fault_notes["Sentinel promotion (s)"].append(time.monotonic() - killed)
        old.config["replicaof"] = f"127.0.0.1 {new_port}"
        await asyncio.to_thread(old.start)
        self.faults["primary SIGKILLed, a replica promoted by Sentinel"] += 1
        self.say(f"Sentinels promoted :{new_port} after {time.monotonic() - killed:.1f} s; :{old.port} restarted "
                 "as its replica")  # fmt: skip

        async def following() -> bool:  # whichever node the Sentinels name now (they may have moved on again)
            primary = await self.sentinel_primary()
            if primary is None or (await self.role(nodes[primary]))[0] != "master":
                return False
            for node in nodes.values():
                if node.port != primary and await self.role(node) != ("slave", primary, "up"):
                    return False
            return True

        try:
            await until(following, within=60, what="both replicas following the new primary")
        except AssertionError:
            self.say("the replicas did not all follow the new primary within 60 s")

    # --- the run

    async def run(self) -> bool:
        started = time.monotonic()
        await self.start()
        assert self.redis is not None and self.consumer is not None
        consumer = asyncio.create_task(self.consumer.run())
        try:
            return await self.soak(started)
        finally:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
            await self.redis.aclose()

    async def soak(self, started: float) -> bool:
        assert self.redis is not None
        start_mem = await measure_memory(self.redis)
        # Warm-up, before the baseline: a few groups through every step, so the server's one-time allocations (first
        # use of each script, buffer and connection) are made; they are checked with the others.
        warm = Client(self, -1)
        for _ in range(WARM_UP_GROUPS):
            await warm.one_group()
        await warm.http.aclose()
        await asyncio.sleep(7)  # the sweeps ran (the first binds the bucket to this Redis); the warm-up settled
        base_mem = await measure_memory(self.redis)
        self.timings["start"] = time.monotonic() - started
        self.say(f"stack up: {len(self.live)} API processes, {len(self.workers)} workers "
                 f"({', '.join(w for _, w in self.workers)}), Valkey used_memory baseline {base_mem.used} B; "
                 f"{self.n_clients} clients for {self.minutes:g} min of faults")  # fmt: skip
        t = time.monotonic()
        tasks = [asyncio.create_task(Client(self, i).run()) for i in range(self.n_clients)]
        progress = asyncio.create_task(self.progress())
        await self.chaos(t + self.minutes * 60)
        self.stop_new.set()
        self.timings["faults"] = time.monotonic() - t
        self.say(f"faults stopped; clients finish the groups they hold (at most {DRAIN_SECONDS:g} s)")
        t = time.monotonic()
        _, pending = await asyncio.wait(tasks, timeout=DRAIN_SECONDS)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        progress.cancel()
        self.timings["drain"] = time.monotonic() - t
        t = time.monotonic()
        async with ObjectStore.connect(self.stack.settings().storage) as store:
            settled = await self.quiesce(store)
            self.timings["quiesce"] = time.monotonic() - t
            self.say(f"{'settled' if settled else 'NOT settled'} after {self.timings['quiesce']:.0f} s; checking")
            t = time.monotonic()
            end_mem = await measure_memory(self.redis)
            await self.check(store, start_mem, base_mem, end_mem)
        self.timings["checks"] = time.monotonic() - t
        self.timings["total"] = time.monotonic() - started
        return all(c.ok for c in self.checks)

    async def progress(self) -> None:
        while True:
            await asyncio.sleep(30)
            outcomes = Counter(g.outcome for g in self.groups)
            self.say(f"progress: {len(self.groups)} groups acknowledged {dict(outcomes)}; faults {self.fault_total()}")

    def fault_total(self) -> int:
        return sum(v for k, v in self.faults.items() if not k.startswith("worker SIGKILLed ("))

    async def settle_figures(self, store: ObjectStore) -> dict[str, int]:
        """What must reach 0 once the service has settled."""
        assert self.redis is not None
        settings = self.stack.settings()
        now_ms = time.time() * 1000
        # Cron jobs aside: arq keeps a cron tick's in-progress marker 60 s after it ran, and queues the next tick.
        crons = tuple(f"{name}:".encode() for name in CRONS)
        due = [j for j in await self.redis.zrangebyscore(settings.worker.queue_name, "-inf", now_ms)
               if not j.startswith(crons)]  # fmt: skip
        in_progress = [k async for k in self.redis.scan_iter(match="arq:in-progress:*", count=1000)
                       if not k.removeprefix(b"arq:in-progress:").startswith(crons)]  # fmt: skip
        canceled = {g.sid for g in self.groups if g.outcome == "canceled"}
        objects = [o.key async for page in store.object_pages("") for o in page]
        return {
            "upload jobs due or running": len(due),
            "jobs in progress": len(in_progress),
            "processing jobs queued": int(await self.redis.zcard(settings.worker.processing_queue_name)),
            "hand-offs not yet taken": int(await self.redis.zcard(HANDOFF_INDEX)),
            "completions in flight": int(await self.redis.zcard(COMPLETING_INDEX)),
            "open multipart uploads": len(await store.list_open_uploads("")),
            "objects of canceled groups": sum(1 for k in objects if session_of(k) in canceled),
        }

    async def quiesce(self, store: ObjectStore) -> bool:
        give_up = time.monotonic() + QUIESCE_SECONDS
        last: dict[str, int] = {}
        while time.monotonic() < give_up:
            try:
                last = await self.settle_figures(store)
            except Exception as exc:
                self.say(f"settle check failed: {exc!r}")
            else:
                if not any(last.values()):
                    return True
            await asyncio.sleep(2)
        self.say(f"not settled after {QUIESCE_SECONDS:g} s: {last}")
        return False

    # --- the checks

    def record(self, name: str, ok: bool, figure: str) -> None:
        self.checks.append(Check(name, ok, figure))

    async def status_doc(self, sid: str, http: httpx.AsyncClient) -> dict[str, Any] | None:
        for _ in range(60):
            for base in list(self.live):
                with contextlib.suppress(httpx.HTTPError):
                    r = await http.get(f"{base}{URL}/{sid}", headers=self.key)
                    if r.status_code == 404:
                        return None
                    if r.status_code == 200:
                        return dict(r.json())
            await asyncio.sleep(1)
        raise RuntimeError(f"no status document for {sid}")

    async def check(self, store: ObjectStore, start: Memory, base: Memory, end: Memory) -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            docs = {g.sid: await self.status_doc(g.sid, http) for g in self.groups}
        completed = [g for g in self.groups if (docs[g.sid] or {}).get("status") == "completed"]
        self.figures.update(acknowledged=len(self.groups), completed=len(completed),
                            statuses=Counter((d or {}).get("status", "404") for d in docs.values()))  # fmt: skip
        self.check_outcomes(docs)
        await self.check_library_ids(docs, completed)
        await self.check_extra_groups()
        self.check_consumer(docs, completed)
        await self.check_objects(store, docs, completed)
        figures = await self.settle_figures(store)
        self.record("queues drained, nothing in flight", not any(figures.values()),
                    ", ".join(f"{k} {v}" for k, v in figures.items()))  # fmt: skip
        self.check_memory(start, base, end, completed, await self.idempotency_owners(end))

    def check_outcomes(self, docs: dict[str, dict[str, Any] | None]) -> None:
        """Every acknowledged group ended as its client saw it, with a stable reason when it did not complete."""
        lost, mismatched, unfinished, unstable = [], [], [], []
        for g in self.groups:
            doc = docs[g.sid]
            if doc is None:
                lost.append(g)
                continue
            status = doc["status"]
            if g.outcome not in ("completed", "canceled"):
                unfinished.append(g)
            elif g.outcome != status:
                mismatched.append(g)
            reasons = [f.get("failureReason") for f in doc["files"]]
            if (status in ("initialized", "uploading") or (status == "canceled" and not doc.get("canceledAt"))
                    or (status == "failed" and not any(r in REASONS for r in reasons))):  # fmt: skip
                unstable.append(g)
        self.record("every acknowledged group ended as its client saw it: completed, or canceled/failed/expired with "
                    "a stable reason", not (lost or mismatched or unfinished or unstable),
                    f"{len(self.groups)} acknowledged; lost (404) {len(lost)}, client and service disagree "
                    f"{len(mismatched)}, unfinished by their clients {len(unfinished)}, not ended or without a stable "
                    f"reason {len(unstable)}")  # fmt: skip
        for g in list(dict.fromkeys(lost + mismatched + unfinished + unstable))[:20]:
            doc = docs[g.sid] or {}
            files = [(f.get("fileName"), f.get("status"), f.get("failureReason")) for f in doc.get("files", [])]
            self.say(f"  group {g.sid} (client {g.client}, cancel at {g.cancel_at}): client saw {g.outcome} "
                     f"{g.detail!r}; service: {doc.get('status')} {files}")  # fmt: skip
        if self.unacknowledged:
            self.say(f"  creates never acknowledged: {self.unacknowledged[:5]}")
        self.figures.update(lost=len(lost) + sum(1 for g in mismatched if g.outcome == "completed"),
                            unfinished=len(unfinished))  # fmt: skip

    async def check_library_ids(self, docs: dict[str, dict[str, Any] | None], completed: list[Group]) -> None:
        """Completed exactly once, with the libraryId its client was given; libraryIds distinct."""
        assert self.redis is not None
        wrong = [g for g in completed if g.library_ids != {(docs[g.sid] or {}).get("libraryId")}]
        # The Redis of the run started empty: the counter holds every completion of it.
        metric = int(await self.redis.hget(METRICS_KEY, MetricField.GROUPS_COMPLETED) or 0)  # type: ignore[misc]
        self.record("each completed group has one libraryId, the one its client was given; each completion counted "
                    "once", not wrong and metric == len(completed),
                    f"{len(completed)} completed; {len(wrong)} whose client saw no, several or another libraryId; "
                    f"groups_completed metric {metric}")  # fmt: skip
        for g in wrong[:10]:
            doc = docs[g.sid] or {}
            self.say(f"  group {g.sid}: client saw libraryIds {sorted(g.library_ids)}; status document: libraryId "
                     f"{doc.get('libraryId')}, completedAt {doc.get('completedAt')}")  # fmt: skip
        ids = [(docs[g.sid] or {}).get("libraryId") for g in completed]
        repeated = sum(n - 1 for n in Counter(ids).values() if n > 1)
        self.record("libraryIds distinct", repeated == 0, f"{len(set(ids))} distinct of {len(ids)}")
        self.duplicated.update(g.sid for g in wrong if g.library_ids - {(docs[g.sid] or {}).get("libraryId")})
        shared = {lib for lib, n in Counter(ids).items() if n > 1}
        self.duplicated.update(g.sid for g in completed if (docs[g.sid] or {}).get("libraryId") in shared)

    async def check_extra_groups(self) -> None:
        """No group the clients were not given: a retried create never made a second group."""
        assert self.redis is not None
        held = {m.decode() for m in await self.redis.zrange(account_index_key(ACCOUNT), 0, -1)}
        extra = held - {g.sid for g in self.groups}
        replayed = self.stats["create: replayed for its Idempotency-Key (a retried create)"]
        self.record("no group beyond those acknowledged (a retried create never made two)", not extra,
                    f"{len(held)} groups in the account, {len(extra)} never acknowledged to a client; {replayed} "
                    f"creates answered as a replay; {len(self.unacknowledged)} creates never acknowledged")  # fmt: skip
        self.duplicated.update(extra)

    def check_consumer(self, docs: dict[str, dict[str, Any] | None], completed: list[Group]) -> None:
        """The consumer got one processing job per completed group (with its libraryId), and none for others."""
        assert self.consumer is not None
        jobs: dict[str, set[tuple[int, float]]] = defaultdict(set)
        deliveries: Counter[str] = Counter()
        for d in self.consumer.deliveries:
            jobs[d.session_id].add((d.library_id, d.enqueued))
            deliveries[d.session_id] += 1
        done = {g.sid for g in completed}
        not_once = [g for g in completed
                    if [lib for lib, _ in jobs.get(g.sid, ())] != [(docs[g.sid] or {}).get("libraryId")]]  # fmt: skip
        stray = [sid for sid in jobs if sid not in done]
        not_taken = [g for g in completed if (docs[g.sid] or {}).get("processing") != "taken"]
        redelivered = sum(n - 1 for n in deliveries.values())
        self.record("the consumer received exactly one processing job per completed group, none for others",
                    not not_once and not stray and not not_taken,
                    f"{sum(len(v) for v in jobs.values())} jobs received for {len(completed)} completed groups; "
                    f"{len(not_once)} completed groups without exactly one job carrying their libraryId, "
                    f"{len(stray)} jobs for groups that did not complete, {len(not_taken)} hand-offs not 'taken'; "
                    f"{redelivered} re-deliveries of a job by arq (consumer restarted {self.consumer.restarts} times "
                    "after losing Redis)")  # fmt: skip
        for g in not_once[:10]:
            self.say(
                f"  group {g.sid}: consumer jobs {jobs.get(g.sid)}, libraryId {(docs[g.sid] or {}).get('libraryId')}"
            )
        self.duplicated.update(g.sid for g in not_once if len(jobs.get(g.sid, ())) > 1)

    async def check_objects(self, store: ObjectStore, docs: dict[str, dict[str, Any] | None],
                            completed: list[Group]) -> None:  # fmt: skip
        """Every completed file stored byte for byte; nothing left of the other groups; no open upload."""
        assert self.redis is not None
        objects = {o.key: o.size async for page in store.object_pages("") for o in page}
        expected: dict[str, SoakFile] = {}
        for g in completed:
            raw = await self.redis.get(library_key(g.sid))
            keys = {f["uploadId"]: f["storageKey"] for f in (msgspec.json.decode(raw)["files"] if raw else [])}
            for f in g.files:
                expected[keys.get(f.upload_id, f"(not in the library record) {g.sid}/{f.upload_id}")] = f
        missing = [k for k in expected if k not in objects]
        differ = await self.differing(store, expected, [k for k in expected if k in objects])
        self.record("every completed file's object exists and hashes to what its client PUT",
                    not missing and not differ,
                    f"{len(expected)} files of {len(completed)} completed groups: {len(missing)} missing, "
                    f"{len(differ)} with other bytes "
                    f"({sum(objects.get(k, 0) for k in expected) / MIB:.0f} MiB read back and hashed)")  # fmt: skip
        for k in (missing + differ)[:10]:
            self.say(f"  object {k}: {'missing' if k in missing else 'other bytes'}")
        self.figures["deleted"] = len(missing)
        uploads = await store.list_open_uploads("")
        self.record("no open multipart upload left", not uploads, f"{len(uploads)} open")
        ended = {sid for sid, d in docs.items() if (d or {}).get("status") in ("canceled", "failed", "expired")}
        left = [k for k in objects if session_of(k) in ended]
        stray = [k for k in objects if k not in expected and k not in left and MARKER_NAME not in k]
        self.record("objects of canceled/failed/expired groups are gone; no stray object", not left and not stray,
                    f"{len(ended)} groups ended without completing: {len(left)} objects left; "
                    f"{len(stray)} objects belonging to no completed file")  # fmt: skip
        for k in (left + stray)[:10]:
            self.say(f"  object {k} should not be there")

    async def differing(self, store: ObjectStore, expected: dict[str, SoakFile], present: list[str]) -> list[str]:
        """Keys whose stored bytes do not hash to what the client PUT (read back from storage, 4 at a time)."""
        gate = asyncio.Semaphore(4)
        bad: list[str] = []

        async def one(key: str) -> None:
            async with gate:
                digest = hashlib.sha256()
                resp = await store.client.get_object(Bucket=store.bucket, Key=key)
                async with resp["Body"] as body:
                    while chunk := await body.read(1 << 20):
                        digest.update(chunk)
                if digest.hexdigest() != expected[key].sha256:
                    bad.append(key)

        await asyncio.gather(*(one(k) for k in present))
        return bad

    async def idempotency_owners(self, mem: Memory) -> dict[str, str]:
        """The sessionId each idempotency record answers with (its value ends with it)."""
        assert self.redis is not None
        keys = [k for k in mem.sizes if k.startswith("sg:idem:")]
        values = await self.redis.mget(keys) if keys else []
        return {k: v.decode().rsplit("\n", 1)[-1] for k, v in zip(keys, values, strict=True) if v}

    def check_memory(self, start: Memory, base: Memory, end: Memory, completed: list[Group],
                     idem: dict[str, str]) -> None:  # fmt: skip
        """used_memory, connections' and replication buffers aside, may exceed its baseline by what the service keeps
        on purpose for this run's groups (MEMORY USAGE of each key, and the keyspace's hash tables), plus at most the
        server's one-time allocations measured at the warm-up (a restarted or promoted server makes them again);
        nothing else may be left (a key of no acknowledged group, a job or lock still there)."""
        acked = {g.sid for g in self.groups}
        per_group: Counter[str] = Counter()
        by_kind: Counter[str] = Counter()
        unaccounted: Counter[str] = Counter()
        unaccounted_keys: list[str] = []
        for key, size in end.sizes.items():
            kind, sid = classify(key)
            if kind == IDEMPOTENCY:
                sid = idem.get(key, "?")
            if kind in TRANSIENT or (sid is not None and sid not in acked):
                unaccounted[kind] += size
                if len(unaccounted_keys) < 10:
                    unaccounted_keys.append(key)
                continue
            by_kind[kind] += size
            if sid is not None:
                per_group[sid] += size
        records = sum(by_kind.values()) - sum(base.sizes.values()) + (end.keyspace - base.keyspace)
        growth = end.kept - base.kept
        one_time = max(0, nonkey(base) - nonkey(start))
        drift = nonkey(end) - nonkey(base)
        done = {g.sid for g in completed}
        per_done = [per_group[sid] for sid in done]
        per_other = [per_group[g.sid] for g in self.groups if g.sid not in done]
        self.record(
            "Redis memory back near its baseline: growth is what is kept on purpose for this run's groups",
            drift <= one_time and not unaccounted,
            f"used_memory {base.used} B at the baseline, {end.used} B after the soak; without connections' and "
            f"replication buffers {growth:+d} B = kept records {records:+d} B (MEMORY USAGE; per completed group "
            f"{mean(per_done):.0f} B, per group ended otherwise {mean(per_other):.0f} B) + server's own memory "
            f"{drift:+d} B (allowed: its one-time allocations at the warm-up, {one_time} B); unaccounted keys "
            f"{sum(unaccounted.values())} B",
        )  # fmt: skip
        self.memory_detail = (by_kind, unaccounted)
        if unaccounted_keys:
            self.say(f"  unaccounted keys: {unaccounted_keys}")

    # --- the report

    def summary(self) -> list[str]:
        """The figures of this layout's run, measured."""
        f = self.figures
        timing = f", Sentinel down-after {self.down_after_ms} ms" if self.layout == "sentinel" else ""
        lines = [f"== {self.layout} layout: seed {self.seed}, {self.minutes:g} min of faults, {self.n_clients} "
                 f"clients, {API_PROCESSES} API processes, {len(WORKER_START)} workers{timing}"]  # fmt: skip
        lines.append("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in self.timings.items()))
        if f:
            statuses = ", ".join(f"{k} {v}" for k, v in f["statuses"].items())
            lines.append(f"groups: {f['acknowledged']} acknowledged ({statuses}); {f['unfinished']} unfinished by "
                         f"their clients; {len(self.unacknowledged)} creates never acknowledged")  # fmt: skip
        notes = "; ".join(f"{k} {min(v):.1f}–{max(v):.1f}" for k, v in self.fault_notes.items() if v)
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items()))
        lines.append(f"faults injected: {self.fault_total()} ({faults}{f'; {notes}' if notes else ''})")
        if f:
            lines.append(f"lost {f.get('lost', '?')}, duplicated {len(self.duplicated)}, deleted-by-mistake "
                         f"{f.get('deleted', '?')}")  # fmt: skip
        if self.stats:
            lines.append("client side: " + ", ".join(f"{k} {v}" for k, v in sorted(self.stats.items())))
        if self.memory_detail is not None:
            kept, unaccounted = self.memory_detail
            kinds = ", ".join(f"{k} {v} B" for k, v in sorted(kept.items()))
            extra = ", ".join(f"{k} {v} B" for k, v in unaccounted.items())
            lines.append(
                f"Redis keys after the soak (MEMORY USAGE): {kinds}{f'; unaccounted: {extra}' if extra else ''}"
            )
        for c in self.checks:
            lines.append(f"  {'PASS' if c.ok else 'FAIL'}  {c.name}: {c.figure}")
        lines.append(f"{self.layout}: {'PASS' if self.passed() else 'FAIL'}")
        return lines

    def passed(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


async def until(check: Callable[[], Awaitable[Any]], *, within: float, what: str, interval: float = 0.5) -> Any:
    """Poll until check() returns something truthy; AssertionError naming `what` after `within` s."""
    give_up = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > give_up:
            raise AssertionError(f"{what}: not after {within:g} s")
        await asyncio.sleep(interval)


async def soak_layout(layout: str, args: argparse.Namespace, tmp: Path) -> tuple[bool, list[str]]:
    (tmp / layout).mkdir(parents=True, exist_ok=True)
    soak = Soak(layout, args.minutes, args.clients, args.seed, tmp / layout, down_after_ms=args.sentinel_down_after_ms)
    try:
        await soak.run()
    except Exception:
        traceback.print_exc()
        soak.record("the soak ran to its end", False, "it stopped on an exception (above)")
    finally:
        await asyncio.to_thread(soak.stop)
    lines = soak.summary()
    for line in lines:
        log(line)
    return soak.passed(), lines


def main() -> None:
    parser = argparse.ArgumentParser(description="The chaos soak: real processes, random SIGKILLs, every group "
                                     "accounted for (see the module docstring).")  # fmt: skip
    parser.add_argument("--minutes", type=float, default=3.0, help="minutes of faults per layout (default 3)")
    parser.add_argument("--layout", choices=LAYOUTS, help="one layout only (default: direct, then sentinel)")
    parser.add_argument("--clients", type=int, default=6, help="concurrent client loops (default 6)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the faults and the clients (default: random)")
    parser.add_argument(
        "--sentinel-down-after-ms",
        type=int,
        default=0,
        help="the Sentinels' down-after-milliseconds (default: deploy/conf/sentinel.conf's value)",
    )
    args = parser.parse_args()
    logging.getLogger("arq").setLevel(logging.ERROR)  # the consumer's reconnect attempts: counted, not printed
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(10**6)
    tmp = Path(tempfile.mkdtemp(prefix="spatialgen-soak-"))
    log(f"soak: seed {args.seed}; the processes' logs and data are kept in {tmp}")
    started = time.monotonic()
    results = [(layout, *asyncio.run(soak_layout(layout, args, tmp))) for layout in [args.layout] if args.layout]
    if not args.layout:
        results = [(layout, *asyncio.run(soak_layout(layout, args, tmp))) for layout in LAYOUTS]
    passed = bool(results) and all(ok for _, ok, _ in results)
    log("")
    log(f"======== SOAK SUMMARY (seed {args.seed}, {time.monotonic() - started:.0f} s in all; logs in {tmp}) ========")
    for _, _, lines in results:
        for line in lines:
            log(line)
    log(f"======== SOAK {'PASSED' if passed else 'FAILED'} ========")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
