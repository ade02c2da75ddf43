"""`spatialgen-admin storage` and `spatialgen-admin handoffs`: what an operator does about storage and hand-offs.

- `storage check` / `storage apply`: is the bucket ready for the service; set its CORS and lifecycle rules
  (app/admin/storage_check.py);
- `storage identity`: whether this Redis is the one the bucket's objects were written with (app/upkeep/identity.py);
- `storage sweep`: what the storage sweeps would remove now and why (a dry run); `--confirm` removes it;
- `storage bind-redis --confirm`: bind the bucket to this Redis, once it is checked to be the right one;
- `handoffs list`: completed groups waiting for the processing pipeline, and those whose consumer failed;
- `handoffs retry SESSION_ID`: queue a failed processing job again (never done by a loop).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.admin import storage_check
from app.domain.clock import iso_ms, now_ms
from app.domain.lifecycle import Reply
from app.settings import Settings
from app.state import UploadState
from app.state.jobs import processing_job
from app.state.keys import HANDOFF_FAILED_INDEX, HANDOFF_INDEX
from app.upkeep import cleanup, identity


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """The `storage` and `handoffs` commands."""
    storage = sub.add_parser("storage", help="the bucket's readiness and identity, and the storage sweeps",
                             parents=[common])  # fmt: skip
    ssub = storage.add_subparsers(dest="action", required=True)
    storage_check.add_parsers(ssub, common)
    ssub.add_parser("identity", help="is this Redis the one the stored objects were written with?", parents=[common])
    sweep = ssub.add_parser("sweep", help="what the storage sweeps would remove now (dry run; --confirm removes)",
                            parents=[common])  # fmt: skip
    sweep.add_argument("--confirm", action="store_true", help="remove it (at most SPATIALGEN_SWEEP_MAX_DELETIONS)")
    bind = ssub.add_parser("bind-redis", help="bind the bucket to this Redis (after checking it is the right one)",
                           parents=[common])  # fmt: skip
    bind.add_argument("--confirm", action="store_true", help="do it (without: show what would change)")
    handoffs = sub.add_parser("handoffs", help="completed groups and their processing jobs", parents=[common])
    hsub = handoffs.add_subparsers(dest="action", required=True)
    hsub.add_parser("list", help="groups waiting for the pipeline, and those whose consumer failed", parents=[common])
    retry = hsub.add_parser("retry", help="queue a failed processing job again", parents=[common])
    retry.add_argument("session_id")


async def storage_command(args: argparse.Namespace, redis: Redis, settings: Settings) -> int:
    """storage check | apply | identity | sweep | bind-redis; a storage that cannot be used is one sentence, exit 2."""
    from app.storage.probes import describe
    from app.storage.s3 import ObjectStore  # aiobotocore: only the storage commands load it

    if args.action == "check":
        return await storage_check.check_command(args, settings)
    if args.action == "apply":
        return await storage_check.apply_command(args, settings)
    state = UploadState(redis)
    prefix = settings.storage.key_prefix
    try:
        async with ObjectStore.connect(settings.storage, attempts=2) as store:
            if args.action == "identity":
                return await _identity(args, state, store, prefix)
            if args.action == "bind-redis":
                return await _bind(args, state, store, prefix)
            return await _sweep(args, state, store, settings)
    except storage_check.STORAGE_ERRORS as exc:
        if isinstance(exc, RedisError):  # cli.run says what Redis did
            raise
        print(f"error: {describe(exc, settings.storage)}", file=sys.stderr)
        return 2
    finally:
        state.close()


async def _identity(args: argparse.Namespace, state: UploadState, store: Any, prefix: str) -> int:
    verdict = await identity.verify(state.redis, store, prefix, bind=False)
    raw = await store.get_small(identity.marker_key(prefix))
    doc = {
        "verdict": verdict.value,
        "deletionAllowed": verdict.allows_deletion,
        "redisInstance": (await redis_instance(state)),
        "bucketMarker": msgspec.json.decode(raw) if raw else None,
    }
    _out(args, doc)
    return 0 if verdict.allows_deletion else 1


async def _bind(args: argparse.Namespace, state: UploadState, store: Any, prefix: str) -> int:
    before = await store.get_small(identity.marker_key(prefix))
    if not args.confirm:
        _out(args, {"wouldBindTo": await redis_instance(state), "bucketMarker": msgspec.json.decode(before) if before
                    else None, "confirm": "run again with --confirm"})  # fmt: skip
        return 2
    marker = await identity.rebind(state.redis, store, prefix)
    _out(args, {"bound": msgspec.to_builtins(marker)})
    return 0


async def _sweep(args: argparse.Namespace, state: UploadState, store: Any, settings: Settings) -> int:
    verdict = await identity.verify(state.redis, store, settings.storage.key_prefix, bind=False)
    if not verdict.allows_deletion:
        print(f"error: the storage sweeps refuse to run: {verdict.value} (see `spatialgen-admin storage identity`)",
              file=sys.stderr)  # fmt: skip
        return 1
    if args.confirm:
        aborted = await cleanup.abort_orphan_uploads(state, store, settings)
        deleted = await cleanup.reconcile_objects(state, store, settings)
        _out(args, {"abortedUploads": aborted, "deletedObjects": deleted})
        return 0
    now = now_ms()
    rows: list[dict[str, str]] = []
    unknown = 0
    for plan in (cleanup.plan_upload_aborts(state, store, settings, now=now),
                 cleanup.plan_object_deletions(state, store, settings, now=now)):  # fmt: skip
        async for removals, kept in plan:
            unknown += kept
            rows += [{"kind": r.kind, "key": r.key, "uploadId": r.upload_id, "why": r.why} for r in removals]
    if args.json:
        print(msgspec.json.encode({"wouldRemove": rows, "keptUnknown": unknown, "dryRun": True}).decode())
    else:
        for r in rows:
            print(f"{r['kind']:6}  {r['key']}  ({r['why']})")
        print(f"dry run: {len(rows)} to remove, {unknown} kept (their group is unknown to this Redis); "
              "--confirm removes them")  # fmt: skip
    return 0


async def redis_instance(state: UploadState) -> str | None:
    """This Redis's identity, if it has one."""
    raw = await state.redis.get(state.instance_key)
    return raw.decode() if raw else None


async def handoffs_command(args: argparse.Namespace, redis: Redis, settings: Settings) -> int:
    """handoffs list | retry."""
    state = UploadState(redis)
    try:
        if args.action == "list":
            now = now_ms()
            pending = await redis.zrange(HANDOFF_INDEX, 0, 999, withscores=True)
            failed = await redis.zrange(HANDOFF_FAILED_INDEX, 0, 999, withscores=True)
            doc = {
                "pending": [{"sessionId": m.decode(), "completedAt": iso_ms(int(s)), "waitingSeconds":
                             round((now - s) / 1000, 1)} for m, s in pending],
                "failed": [{"sessionId": m.decode(), "seenAt": iso_ms(int(s))} for m, s in failed],
            }  # fmt: skip
            _out(args, doc)
            return 0
        record = await state.library_record(args.session_id)
        if record is None:
            print(f"error: no completed group {args.session_id} (or its retention lapsed)", file=sys.stderr)
            return 1
        job = processing_job(args.session_id, record, settings.worker.processing_queue_name, now_ms())
        reply = await state.retry_handoff(args.session_id, job, now_ms=now_ms())
        if reply.code is not Reply.OK:
            print(f"error: the hand-off of {args.session_id} did not fail ({reply.text() if reply.values else '-'}): "
                  "nothing to retry", file=sys.stderr)  # fmt: skip
            return 1
        _out(args, {"sessionId": args.session_id, "requeued": True})
        return 0
    finally:
        state.close()


def _out(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    if args.json:
        print(msgspec.json.encode(doc).decode())
        return
    for key, value in doc.items():
        if isinstance(value, list):
            print(f"{key}: {len(value)}")
            for item in value:
                print("  " + "  ".join(f"{k}={v}" for k, v in item.items()))
        else:
            print(f"{key}: {value}")
