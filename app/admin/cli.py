"""`spatialgen-admin`: the operator CLI: API keys, arq queues and jobs, upload sessions, accounts, storage and
hand-offs (app/admin/operations.py), webhook endpoints (app/admin/webhooks.py).

Every command takes `--redis-url` and `--json` (one JSON document on stdout; a readable table otherwise).
Exit codes: 0 ok, 1 not found, 2 usage or Redis connection error. `keys create` prints the secret last.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.admin import accounts, operations, queues, sessions, webhooks
from app.domain.lifecycle import GroupStatus
from app.domain.limits import Rate, RouteClass, parse_rates
from app.settings import Settings, with_dev_env
from app.state import apikeys
from app.state.connection import redis_client

NAME_CHARS = 40


def _header(column: str) -> str:
    """Column title: `created_at` and `createdAt` both read CREATED_AT."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", column).upper()


def _table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    def cell(row: dict[str, Any], c: str) -> str:
        v = row.get(c)
        return "-" if v is None else str(v)

    widths = {c: max([len(_header(c))] + [len(cell(r, c)) for r in rows]) for c in columns}
    lines = ["  ".join(_header(c).ljust(widths[c]) for c in columns)]
    lines += ["  ".join(cell(r, c).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _print_json(data: Any) -> None:
    print(msgspec.json.encode(data).decode())


def _emit(args: argparse.Namespace, data: Any, columns: Sequence[str] | None = None) -> None:
    if args.json:
        _print_json(data)
    elif columns is not None:
        rows = msgspec.to_builtins(data)
        print(_table(rows, columns) if rows else "(none)")
    else:
        print(data)


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


async def _keys(args: argparse.Namespace, redis: Redis) -> int:
    if args.action == "create":
        try:
            secret, info = await apikeys.create_key(redis, account=args.account, role=args.role, label=args.label)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.json:
            print(msgspec.json.encode({**msgspec.to_builtins(info), "key": secret}).decode())
        else:
            print(f"created key {info.key_id} for account {info.account} (role {info.role}); it is shown only once:")
        print(secret)
        return 0
    if args.action == "list":
        _emit(args, await apikeys.list_keys(redis), ["key_id", "account", "role", "label", "created_at"])
        return 0
    try:
        revoked = await apikeys.revoke_key(redis, args.key_id)
    except apikeys.AmbiguousKeyId as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(msgspec.json.encode({"keyId": revoked or args.key_id, "revoked": revoked is not None}).decode())
    else:
        print(f"revoked {revoked}" if revoked else f"no key with id {args.key_id}")
    return 0 if revoked else 1


async def _queues(args: argparse.Namespace, redis: Redis, settings: Settings) -> int:
    names = [settings.worker.queue_name, settings.worker.processing_queue_name, settings.webhooks.queue_name]
    stats = await queues.queue_stats(redis, names, scan_limit=args.scan_limit)
    if args.json:
        _print_json(stats)
        return 0
    rows = [
        {
            "queue": s.queue,
            "queued": f"{s.queued}" if s.in_progress_exact else f"≤{s.queued}",
            "scheduled": s.scheduled,
            "in_progress": f"{s.in_progress}" if s.in_progress_exact else f"≥{s.in_progress}",
            "results": f"{s.results}" if s.results_exact else f"≥{s.results}",
            "failures": f"{s.failures}" if s.results_exact else f"≥{s.failures}",
            "oldest_queued": _age(s.oldest_queued_age_seconds),
        }
        for s in stats
    ]
    print(_table(rows, ["queue", "queued", "scheduled", "in_progress", "results", "failures", "oldest_queued"]))
    if stats and not stats[0].results_exact:
        _note(f"the result scan stopped after ~{args.scan_limit} keys; results and failures are lower bounds")
    return 0


async def _jobs(args: argparse.Namespace, redis: Redis, settings: Settings) -> int:
    names = [args.queue] if args.queue else settings.worker.queues
    listing = await queues.list_jobs(
        redis, names, failed_only=args.failed, limit=args.limit, scan_limit=args.scan_limit
    )
    if not listing.results_exact:
        _note(f"the result scan stopped after ~{args.scan_limit} keys; older results may be missing")
    if args.json:
        _print_json(listing.jobs)
        return 0
    columns = ["jobId", "queue", "function", "args", "tries", "enqueuedAt", "state"]
    columns += ["finishedAt", "result"] if args.failed else ["runAt"]
    rows = msgspec.to_builtins(listing.jobs)
    print(_table(rows, columns) if rows else "(none)")
    return 0


async def _sessions(args: argparse.Namespace, redis: Redis) -> int:
    if args.action == "list":
        listing = await sessions.list_sessions(
            redis, account=args.account, status=args.status, limit=args.limit, scan_limit=args.scan_limit
        )
        if not listing.complete:
            _note(f"stopped after examining ~{args.scan_limit} index entries/keys; the list may be incomplete")
        if args.json:
            _print_json(listing.sessions)
            return 0
        rows = [
            {"session_id": s.session_id, "account": s.account, "status": s.status, "files": s.files,
             "created": s.created_at, "expires": s.expires_at, "video_name": queues.clip(s.video_name, NAME_CHARS)}
            for s in listing.sessions
        ]  # fmt: skip
        columns = ["session_id", "account", "status", "files", "created", "expires", "video_name"]
        print(_table(rows, columns) if rows else "(none)")
        return 0
    doc = await sessions.session_document(redis, args.session_id)
    if doc is None:
        print(f"error: no upload session {args.session_id!r} (unknown, or its retention has lapsed)", file=sys.stderr)
        return 1
    if args.json:
        _print_json(doc)
        return 0
    fields = ["sessionId", "account", "status", "videoName", "description", "layout", "perspective", "folderName",
              "createdAt", "updatedAt", "expiresAt", "completedAt", "canceledAt", "libraryId", "fileCount"]  # fmt: skip
    print(_table([{"field": _header(f), "value": doc.get(f)} for f in fields], ["field", "value"]))
    print()
    files = [
        f | {"parts": f"{f['uploadedParts']}/{f['totalParts']}", "bytes": f"{f['uploadedBytes']}/{f['totalBytes']}"}
        for f in doc["files"]
    ]
    print(_table(files, ["uploadId", "fileRole", "fileName", "status", "parts", "bytes", "s3UploadId", "storageKey"]))
    return 0


async def _accounts(args: argparse.Namespace, redis: Redis, settings: Settings) -> int:
    if args.action == "set-limits":
        try:
            rates = dict(_rate(x) for x in args.rate)
        except ValueError as exc:
            print(f"error: --rate {exc}", file=sys.stderr)
            return 2
        await accounts.set_account_limits(redis, args.account, live_groups=args.live_groups,
                                       live_bytes=args.live_bytes, rates=rates, reset=args.reset)  # fmt: skip
    limits = await accounts.account_limits(redis, settings, args.account)
    if args.json:
        _print_json(limits)
        return 0
    doc = msgspec.to_builtins(limits)
    rows = [{"field": _header(k), "value": v} for k, v in doc.items() if k != "rates"]
    rows += [{"field": f"RATE {name.upper()}", "value": f"{value} per second/burst"} for name, value in
             limits.rates.items()]  # fmt: skip
    print(_table(rows, ["field", "value"]))
    return 0


def _rate(text: str) -> tuple[RouteClass, Rate]:
    name = text.partition("=")[0].strip()
    parsed = parse_rates(text)
    return RouteClass(name), parsed[RouteClass(name)]


def _common(*, top: bool) -> argparse.ArgumentParser:
    """--redis-url/--json, accepted before or after the command (below the top, unset values don't override)."""
    common = argparse.ArgumentParser(add_help=False)
    default: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    common.add_argument("--redis-url", help="Redis/Valkey URL (default: SPATIALGEN_REDIS_URL)", **default)
    common.add_argument("--json", action="store_true", help="machine-readable JSON output", **default)
    return common


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and --help)."""
    common = _common(top=False)
    parser = argparse.ArgumentParser(
        prog="spatialgen-admin", description=__doc__, parents=[_common(top=True)],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)

    def scan_limit(p: argparse.ArgumentParser) -> None:
        limit = queues.SCAN_LIMIT
        p.add_argument("--scan-limit", type=_positive, default=limit,
                       help=f"keys a SCAN may visit / index entries examined (default {limit})")  # fmt: skip

    keys = sub.add_parser("keys", help="manage API keys", parents=[common])
    ksub = keys.add_subparsers(dest="action", required=True)
    create = ksub.add_parser("create", help="create a key (printed once, as the last line)", parents=[common])
    create.add_argument("--account", required=True)
    create.add_argument("--role", required=True, choices=[r.value for r in apikeys.Role])
    create.add_argument("--label", default="")
    ksub.add_parser("list", help="list keys (never the secrets)", parents=[common])
    revoke = ksub.add_parser("revoke", help="revoke a key by its id (or a start of it shared by no other key)",
                             parents=[common])  # fmt: skip
    revoke.add_argument("key_id")

    queues_cmd = sub.add_parser("queues", help="queued, scheduled, in progress, results and failures per arq queue",
                                parents=[common])  # fmt: skip
    scan_limit(queues_cmd)

    jobs = sub.add_parser("jobs", help="pending jobs and kept results", parents=[common])
    jobs.add_argument("--queue", help="one queue (default: the upload and the processing queue)")
    jobs.add_argument("--failed", action="store_true", help="only failed results")
    jobs.add_argument("--limit", type=_positive, default=50, help="jobs per queue, and results (default 50)")
    scan_limit(jobs)

    accounts = sub.add_parser("accounts", help="an account's limits, quotas and live use", parents=[common])
    asub = accounts.add_subparsers(dest="action", required=True)
    ashow = asub.add_parser("show", help="limits (own or default) and live use", parents=[common])
    ashow.add_argument("account")
    aset = asub.add_parser("set-limits", help="set the account's own limits (applied to its next request)",
                           parents=[common])  # fmt: skip
    aset.add_argument("account")
    aset.add_argument("--live-groups", type=_positive, help="quota: live groups at once")
    aset.add_argument("--live-bytes", type=_positive, help="quota: declared bytes of live groups")
    aset.add_argument("--rate", action="append", default=[], metavar="CLASS=RATE/BURST",
                      help=f"a route class's rate limit per key, e.g. create=20/200 (classes: "
                           f"{', '.join(RouteClass)}); repeatable; 0/N is unlimited")  # fmt: skip
    aset.add_argument("--reset", action="store_true", help="drop the account's own limits first (back to defaults)")

    sessions = sub.add_parser("sessions", help="upload sessions (groups)", parents=[common])
    ssub = sessions.add_subparsers(dest="action", required=True)
    slist = ssub.add_parser("list", help="newest sessions first", parents=[common])
    slist.add_argument("--account", help="one account (its index; otherwise every account's index, by SCAN)")
    slist.add_argument("--status", choices=[s.value for s in GroupStatus])
    slist.add_argument("--limit", type=_positive, default=20, help="sessions shown (default 20)")
    scan_limit(slist)
    show = ssub.add_parser("show", help="a session's status document, storage keys and S3 upload ids",
                           parents=[common])  # fmt: skip
    show.add_argument("session_id")
    operations.add_parsers(sub, common)
    webhooks.add_parsers(sub, common)
    return parser


def _redacted(url: str) -> str:
    """The URL without its password."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "(unparsable URL)"


async def _dispatch(args: argparse.Namespace, redis: Redis, settings: Settings) -> int:
    commands: dict[str, Callable[[], Awaitable[int]]] = {
        "keys": lambda: _keys(args, redis),
        "queues": lambda: _queues(args, redis, settings),
        "jobs": lambda: _jobs(args, redis, settings),
        "sessions": lambda: _sessions(args, redis),
        "accounts": lambda: _accounts(args, redis, settings),
        "storage": lambda: operations.storage_command(args, redis, settings),
        "handoffs": lambda: operations.handoffs_command(args, redis, settings),
        "webhooks": lambda: webhooks.webhooks_command(args, redis, settings),
    }
    return await commands[args.command]()


async def run(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run one command; returns the exit code."""
    args = build_parser().parse_args(argv)
    settings = Settings.from_env(with_dev_env())
    if args.redis_url:  # an explicit URL means that server, not the Sentinels
        settings = settings.override(redis_url=args.redis_url, redis_sentinels="")
    url = settings.redis.url if not settings.redis.sentinels else f"sentinel {settings.redis.sentinel_master}"
    try:
        redis = redis_client(settings.redis, socket_connect_timeout=3, socket_timeout=10)
    except ValueError as exc:
        print(f"error: invalid Redis URL {_redacted(url)!r}: {exc}", file=sys.stderr)
        return 2
    try:
        return await _dispatch(args, redis, settings)
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        print(f"error: cannot reach Redis at {_redacted(url)}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except RedisError as exc:
        print(f"error: Redis at {_redacted(url)} answered: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    finally:
        await redis.aclose()


def main() -> None:
    """Console-script entry point."""
    sys.exit(asyncio.run(run()))
