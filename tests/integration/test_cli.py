"""`spatialgen-admin queues|jobs|sessions` over a real Valkey with groups, real workers and real arq results."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from arq.constants import result_key_prefix
from arq.jobs import serialize_result
from arq.worker import Worker, func
from redis.asyncio import Redis

from app.admin import sessions
from app.admin.cli import run
from app.domain.clock import now_ms
from app.settings import Settings
from app.state import UploadState
from app.state.apikeys import Principal, Role, create_key, list_keys
from app.state.jobs import PROCESS_JOB, PROVISION_JOB, JobSpec, deserialize, job_document, provision_job_id, serialize
from app.state.keys import API_KEYS_INDEX, account_index_key, api_key_key, group_key, state_key
from app.uploads import cancel, start
from app.uploads.service import UploadService
from app.uploads.views import group_status_view
from deploy.local.devstack import free_port
from tests.conftest import SEED_REQUEST, arq_pool

ACME = Principal("acme", Role.UPLOAD, "test")
GLOBEX = Principal("globex", Role.UPLOAD, "test")
PROCESSING = "spatialgen:processing"
SCRIPT = Path(sys.executable).parent / "spatialgen-admin"


class Busy(msgspec.Struct):
    """Ids of the busy scenario, oldest group first."""

    acme: list[str]
    globex: list[str]


async def cli(capsys: pytest.CaptureFixture[str], settings: Settings, *argv: str) -> tuple[int, str, str]:
    code = await run(["--redis-url", settings.redis.url, *argv])
    out, err = capsys.readouterr()
    return code, out, err


async def cli_json(capsys: pytest.CaptureFixture[str], settings: Settings, *argv: str) -> Any:
    code, out, err = await cli(capsys, settings, *argv, "--json")
    assert code == 0, err
    assert out.count("\n") == 1  # one JSON document
    return json.loads(out)


async def new_group(svc: UploadService, who: Principal, name: str) -> str:
    """A group, and its provisioning job queued (as part-urls does when storage is slow: jobs for the queues below)."""
    await asyncio.sleep(0.003)  # distinct creation ms, so newest-first order is exact
    body = msgspec.json.encode({**SEED_REQUEST, "videoName": name})
    sid = (await start.start_upload_group(svc, who, body, None)).session_id
    queue = svc.settings.worker.queue_name
    await svc.state.enqueue(JobSpec.build(PROVISION_JOB, (sid,), job_id=provision_job_id(sid), queue=queue))
    return sid


@pytest.fixture
async def busy(settings: Settings, state: UploadState, redis: Redis, burst: Any) -> AsyncIterator[Busy]:
    """Upload queue: 3 due, 2 deferred, 3 results (2 failed). Processing queue: 3 due, 1 deferred. 5 groups."""
    svc = UploadService(settings, state)
    pool = arq_pool(settings.redis.url)
    a1 = await new_group(svc, ACME, "first")
    a2 = await new_group(svc, ACME, "second")
    g1 = await new_group(svc, GLOBEX, "globex one")
    await pool.enqueue_job("no_such_function", 7, _job_id="doomed", _queue_name=settings.worker.queue_name)
    worker = await burst()  # provisions a1, a2, g1 (keeping no result); "doomed" fails (arq keeps its result)
    assert (worker.jobs_complete, worker.jobs_failed) == (3, 1)
    # Results another producer's worker kept: a success and one more failure.
    for job_id, ok, result in (("kept-ok", True, 42), ("kept-failed", False, ValueError("bad input"))):
        blob = serialize_result("process_asset_set", (), {}, 1, now_ms() - 50, ok, result, now_ms() - 40, now_ms(),
                                "ref", settings.worker.queue_name, job_id, serializer=serialize)  # fmt: skip
        assert blob is not None
        await redis.set(result_key_prefix + job_id, blob, px=60_000)

    a3 = await new_group(svc, ACME, "third " + "x" * 80)  # provision job stays queued
    g2 = await new_group(svc, GLOBEX, "globex two")  # provision job stays queued
    await cancel.cancel_group(svc, ACME, a2)  # purge now (due) + purge later (deferred)
    await pool.enqueue_job(
        "purge_group", "nobody", _job_id="later-1", _defer_by=3600, _queue_name=settings.worker.queue_name
    )
    for i in range(3):
        await pool.enqueue_job(PROCESS_JOB, {"libraryId": i}, _job_id=f"proc-{i}", _queue_name=PROCESSING)
    await pool.enqueue_job(PROCESS_JOB, {"libraryId": 9}, _job_id="proc-later", _defer_by=600, _queue_name=PROCESSING)
    await redis.zadd(account_index_key("acme"), {"00000000-0000-4000-8000-000000000000": now_ms()})  # keys gone
    await pool.aclose()
    yield Busy(acme=[a1, a2, a3], globex=[g1, g2])


async def test_queues_counts_every_queue(capsys: Any, settings: Settings, busy: Busy) -> None:
    stats = {q["queue"]: q for q in await cli_json(capsys, settings, "queues")}
    assert list(stats) == [settings.worker.queue_name, PROCESSING, settings.webhooks.queue_name]
    up = stats[settings.worker.queue_name]
    assert {k: up[k] for k in ("queued", "scheduled", "inProgress", "results", "failures")} == {
        "queued": 3, "scheduled": 2, "inProgress": 0, "results": 3, "failures": 2,
    }  # fmt: skip
    assert up["inProgressExact"] and up["resultsExact"]
    assert 0 <= up["oldestQueuedAgeSeconds"] < 30
    proc = stats[PROCESSING]
    assert (proc["queued"], proc["scheduled"], proc["inProgress"], proc["results"]) == (3, 1, 0, 0)

    code, out, _ = await cli(capsys, settings, "queues")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["QUEUE", "QUEUED", "SCHEDULED", "IN_PROGRESS", "RESULTS", "FAILURES", "OLDEST_QUEUED"]
    assert lines[1].split()[:6] == [settings.worker.queue_name, "3", "2", "0", "3", "2"]
    assert lines[2].split()[:6] == [PROCESSING, "3", "1", "0", "0", "0"]


async def test_jobs_lists_pending_jobs_and_results(capsys: Any, settings: Settings, busy: Busy) -> None:
    rows = await cli_json(capsys, settings, "jobs")
    by_id = {r["jobId"]: r for r in rows}
    _, a2, a3 = busy.acme
    _, g2 = busy.globex
    pending = [r["jobId"] for r in rows if r["state"] in ("queued", "deferred", "in_progress")]
    # Run order: due jobs oldest first, then the deferred ones; the upload queue, then the processing queue.
    assert pending == [f"provision:{a3}", f"provision:{g2}", f"purge:{a2}", "later-1", f"purge:{a2}:late",
                       "proc-0", "proc-1", "proc-2", "proc-later"]  # fmt: skip
    p = by_id[f"provision:{a3}"]
    assert (p["queue"], p["function"], p["args"], p["tries"], p["state"]) == (
        settings.worker.queue_name, "provision_group", repr(a3), 0, "queued",
    )  # fmt: skip
    assert by_id["later-1"]["state"] == "deferred" and by_id["later-1"]["runAt"] > by_id["later-1"]["enqueuedAt"]
    assert by_id["proc-1"]["args"] == "{'libraryId': 1}"
    done = {r["jobId"]: r["state"] for r in rows if r["state"] in ("complete", "failed")}
    assert done == {"kept-ok": "complete", "kept-failed": "failed", "doomed": "failed"}
    assert by_id["doomed"]["tries"] == 1 and by_id["doomed"]["finishedAt"]

    failed = await cli_json(capsys, settings, "jobs", "--failed")
    assert sorted((r["jobId"], r["function"], r["args"], r["state"]) for r in failed) == [
        ("doomed", "no_such_function", "7", "failed"), ("kept-failed", "process_asset_set", "", "failed")
    ]  # fmt: skip
    results = {r["jobId"]: r["result"] for r in failed}
    assert "function 'no_such_function' not found" in results["doomed"] and "bad input" in results["kept-failed"]

    only = await cli_json(capsys, settings, "jobs", "--queue", PROCESSING, "--limit", "2")
    assert [r["jobId"] for r in only] == ["proc-0", "proc-1"]

    code, out, _ = await cli(capsys, settings, "jobs", "--failed")
    assert code == 0
    assert out.splitlines()[0].split() == ["JOB_ID", "QUEUE", "FUNCTION", "ARGS", "TRIES", "ENQUEUED_AT", "STATE",
                                           "FINISHED_AT", "RESULT"]  # fmt: skip
    assert sorted(line.split()[0] for line in out.splitlines()[1:]) == ["doomed", "kept-failed"]


async def test_sessions_list_filters_and_orders(capsys: Any, settings: Settings, redis: Redis, busy: Busy) -> None:
    a1, a2, a3 = busy.acme
    g1, g2 = busy.globex
    everything = await cli_json(capsys, settings, "sessions", "list")
    assert [s["sessionId"] for s in everything] == [g2, a3, g1, a2, a1]  # newest first, stale index entry skipped
    first = everything[-1]
    assert (first["account"], first["status"], first["files"], first["videoName"]) == (
        "acme",
        "initialized",
        4,
        "first",
    )
    assert first["createdAt"] < first["expiresAt"]

    acme = await cli_json(capsys, settings, "sessions", "list", "--account", "acme")
    assert [s["sessionId"] for s in acme] == [a3, a2, a1]
    canceled = await cli_json(capsys, settings, "sessions", "list", "--status", "canceled")
    assert [(s["sessionId"], s["status"]) for s in canceled] == [(a2, "canceled")]
    live = await cli_json(capsys, settings, "sessions", "list", "--status", "initialized", "--limit", "3")
    assert [s["sessionId"] for s in live] == [g2, a3, g1]
    newest_globex = await sessions.list_sessions(redis, account="globex", limit=1)
    assert await cli_json(capsys, settings, "sessions", "list", "--account", "globex", "--limit", "1") == [
        msgspec.to_builtins(r) for r in newest_globex.sessions
    ]
    assert [r.session_id for r in newest_globex.sessions] == [g2] and newest_globex.complete
    assert await cli_json(capsys, settings, "sessions", "list", "--account", "nobody") == []

    code, out, _ = await cli(capsys, settings, "sessions", "list", "--account", "acme")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 4
    assert lines[0].split() == ["SESSION_ID", "ACCOUNT", "STATUS", "FILES", "CREATED", "EXPIRES", "VIDEO_NAME"]
    assert lines[1].startswith(a3) and lines[1].endswith("…")  # long names are clipped in the table


async def test_sessions_show_is_the_status_document_plus_storage(
    capsys: Any, settings: Settings, state: UploadState, busy: Busy
) -> None:
    sid = busy.acme[0]
    doc = await cli_json(capsys, settings, "sessions", "show", sid)
    snap = await state.snapshot(sid)
    assert snap is not None
    files = doc.pop("files")
    expected = msgspec.to_builtins(group_status_view(snap, now_ms()))
    expected_files = expected.pop("files")
    assert doc == {**expected, "account": "acme"}
    assert list(doc)[:3] == ["sessionId", "account", "status"]
    for f, want, rec in zip(files, expected_files, snap.record.files, strict=True):
        assert f.pop("storageKey") == snap.record.storage_key(rec)
        assert f.pop("s3UploadId") == snap.s3_upload_id(rec.upload_id)
        assert f == want
    assert sum(1 for f in snap.record.files if snap.s3_upload_id(f.upload_id)) == 3  # provisioned multipart files

    code, out, _ = await cli(capsys, settings, "sessions", "show", sid)
    assert code == 0
    assert out.splitlines()[0].split() == ["FIELD", "VALUE"]
    assert "UPLOAD_ID" in out and "S3_UPLOAD_ID" in out and snap.record.storage_key(snap.record.files[0]) in out


async def test_unknown_session_exits_1(capsys: Any, settings: Settings, redis: Redis) -> None:
    code, out, err = await cli(capsys, settings, "sessions", "show", "00000000-0000-4000-8000-00000000beef")
    assert (code, out) == (1, "")
    assert err.startswith("error: no upload session '00000000-0000-4000-8000-00000000beef'")
    code, _, _ = await cli(capsys, settings, "sessions", "show", "not-even-a-uuid", "--json")
    assert code == 1


async def test_in_progress_jobs_of_a_running_worker(capsys: Any, settings: Settings, redis: Redis) -> None:
    release = asyncio.Event()

    async def hold(ctx: dict[str, Any], payload: dict[str, Any]) -> int:
        await release.wait()
        return int(payload["libraryId"])

    pool = arq_pool(settings.redis.url)
    for i in range(3):
        await pool.enqueue_job(PROCESS_JOB, {"libraryId": i}, _job_id=f"proc-{i}", _queue_name=PROCESSING)
    await pool.enqueue_job(PROCESS_JOB, {"libraryId": 9}, _job_id="proc-later", _defer_by=600, _queue_name=PROCESSING)
    worker = Worker(functions=[func(hold, name=PROCESS_JOB)], queue_name=PROCESSING, redis_pool=pool, max_jobs=1,
                    poll_delay=0.02, handle_signals=False, job_serializer=serialize,
                    job_deserializer=deserialize)  # fmt: skip
    task = asyncio.create_task(worker.main())
    try:
        for _ in range(250):
            if await redis.exists("arq:in-progress:proc-0"):
                break
            await asyncio.sleep(0.02)
        stats = {q["queue"]: q for q in await cli_json(capsys, settings, "queues")}
        proc = stats[PROCESSING]
        assert (proc["queued"], proc["scheduled"], proc["inProgress"], proc["results"]) == (2, 1, 1, 0)
        rows = await cli_json(capsys, settings, "jobs", "--queue", PROCESSING)
        assert [(r["jobId"], r["state"], r["tries"]) for r in rows] == [
            ("proc-0", "in_progress", 1), ("proc-1", "queued", 0), ("proc-2", "queued", 0),
            ("proc-later", "deferred", 0),
        ]  # fmt: skip

        release.set()
        for _ in range(250):
            if await redis.zcard(PROCESSING) == 1:
                break
            await asyncio.sleep(0.02)
        stats = {q["queue"]: q for q in await cli_json(capsys, settings, "queues")}
        proc = stats[PROCESSING]
        assert (proc["queued"], proc["scheduled"], proc["inProgress"], proc["results"], proc["failures"]) == (
            0, 1, 0, 3, 0,
        )  # fmt: skip
        assert proc["oldestQueuedAgeSeconds"] is None
        done = [r for r in await cli_json(capsys, settings, "jobs", "--queue", PROCESSING) if r["state"] == "complete"]
        assert sorted((r["jobId"], r["result"]) for r in done) == [("proc-0", "0"), ("proc-1", "1"), ("proc-2", "2")]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await worker.close()
        await pool.aclose()


async def test_undecodable_and_missing_jobs_and_capped_scans(capsys: Any, settings: Settings, redis: Redis) -> None:
    q = settings.worker.queue_name
    now = now_ms()
    await redis.set("arq:job:junk", b"\x80not a pickle")
    await redis.zadd(q, {"junk": now - 1000, "ghost": now - 500})  # ghost: its job key is gone
    await redis.set("arq:result:bad", b"garbage")
    rows = {r["jobId"]: r for r in await cli_json(capsys, settings, "jobs")}
    assert (rows["junk"]["function"], rows["junk"]["args"], rows["junk"]["state"]) == ("<undecodable>",) * 2 + (
        "queued",
    )
    assert rows["ghost"]["function"] == "<missing>"
    assert (rows["bad"]["function"], rows["bad"]["state"], rows["bad"]["queue"]) == ("<undecodable>", "unknown",
                                                                                     "<unknown>")  # fmt: skip
    stats = {s["queue"]: s for s in await cli_json(capsys, settings, "queues")}
    assert list(stats) == [q, PROCESSING, settings.webhooks.queue_name, "<unknown>"]
    assert (stats[q]["queued"], stats["<unknown>"]["results"]) == (2, 1)
    assert 0.9 <= stats[q]["oldestQueuedAgeSeconds"] < 30

    # A job another producer scored a day ahead of its time: its age still counts from when it was queued.
    await redis.delete(q)
    state = UploadState(redis)
    queued = now_ms() - 2000
    try:
        await state.enqueue(JobSpec("complete:s:u:1", q, job_document("complete_file", ("s", "u", 1, []), queued),
                                    queued - 86_400_000, 60_000))  # fmt: skip
    finally:
        state.close()
    stats = {s["queue"]: s for s in await cli_json(capsys, settings, "queues")}
    age = stats[q]["oldestQueuedAgeSeconds"]
    assert age >= 1.9 and age < 30, age  # queued 2 s ago, not a day (its score)

    # A big keyspace: a scan limited to 10 keys can't see everything and says so.
    await redis.mset({f"filler:{i}": b"x" for i in range(500)})
    await redis.mset({f"arq:result:r{i}": b"x" for i in range(50)})
    stats = await cli_json(capsys, settings, "queues", "--scan-limit", "10")
    assert all(not s["resultsExact"] for s in stats)
    code, out, err = await cli(capsys, settings, "queues", "--scan-limit", "10")
    assert code == 0 and "≥" in out and "lower bounds" in err


async def test_newest_first_merges_account_indexes_page_by_page(redis: Redis) -> None:
    for account, scores in {"a": [1, 4, 5, 9], "b": [2, 3, 8], "c": [7], "d": []}.items():
        if scores:
            await redis.zadd(account_index_key(account), {f"{account}{s}": s for s in scores})
    gen = sessions._newest_first(redis, ["a", "b", "c", "d"], page=2)
    got = [(sid, created) async for sid, _, created in gen]
    assert got == [("a9", 9), ("b8", 8), ("c7", 7), ("a5", 5), ("a4", 4), ("b3", 3), ("b2", 2), ("a1", 1)]


async def test_sessions_list_skips_groups_whose_keys_are_gone(
    capsys: Any, settings: Settings, state: UploadState, redis: Redis
) -> None:
    svc = UploadService(settings, state)
    sids = [await new_group(svc, ACME, f"g{i}") for i in range(5)]
    await redis.delete(group_key(sids[4]), state_key(sids[3]))
    listed = await cli_json(capsys, settings, "sessions", "list", "--limit", "2")
    assert [s["sessionId"] for s in listed] == [sids[2], sids[1]]


async def test_console_script_and_connection_errors(settings: Settings, busy: Busy) -> None:
    async def script(*argv: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            str(SCRIPT), *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    # Global options before the command are honoured too.
    code, out, err = await script("--redis-url", settings.redis.url, "--json", "queues")
    assert code == 0, err
    stats = {s["queue"]: s for s in json.loads(out)}
    assert (stats[settings.worker.queue_name]["queued"], stats[settings.worker.queue_name]["failures"]) == (3, 2)
    code, out, _ = await script("sessions", "list", "--redis-url", settings.redis.url)
    assert code == 0 and out.splitlines()[0].startswith("SESSION_ID") and len(out.splitlines()) == 6

    dead = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    code, out, err = await script("--redis-url", dead, "queues")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("error: cannot reach Redis at redis://:***@127.0.0.1:")
    assert "Traceback" not in err and "s3cret" not in err
    code, _, err = await script("sessions", "show", "x", "--redis-url", "nope://host")
    assert code == 2 and err.startswith("error: invalid Redis URL")


async def test_keys_revoke_takes_one_key_and_refuses_a_prefix_several_share(
    capsys: Any, settings: Settings, redis: Redis
) -> None:
    _, info = await create_key(redis, account="acme", role="upload")
    # Two keys whose digests share their first 12 characters (written directly: real digests never collide).
    twins = [("deadbeef0123" + f"{i:x}" * 52) for i in (1, 2)]
    for d in twins:
        await redis.hset(api_key_key(d), mapping={"account": "acme", "role": "upload", "label": "", "created": 1})
        await redis.zadd(API_KEYS_INDEX, {d: 1})
    code, _, err = await cli(capsys, settings, "keys", "revoke", "deadbeef0123")
    assert code == 2 and "deadbeef01231111" in err and "deadbeef01232222" in err, err
    assert await redis.zcard(API_KEYS_INDEX) == 3  # nothing revoked
    assert (await cli(capsys, settings, "keys", "revoke", "dead"))[0] == 1  # too short to name a key: none
    assert (await cli(capsys, settings, "keys", "revoke", "not-hex-at-all"))[0] == 1
    assert await cli_json(capsys, settings, "keys", "revoke", "DEADBEEF01231111") == {
        "keyId": "deadbeef01231111", "revoked": True,
    }  # fmt: skip
    code, out, _ = await cli(capsys, settings, "keys", "revoke", info.key_id[:10])  # a start no other key shares
    assert code == 0 and out.strip() == f"revoked {info.key_id}"
    assert [k.key_id for k in await list_keys(redis)] == ["deadbeef01232222"]
