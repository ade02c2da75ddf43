"""`spatialgen-admin`: the operator CLI over Redis (API keys; queues, jobs and sessions come later).

Every command takes `--redis-url` and `--json`; `keys create` prints the new secret as the last stdout line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis

from app import apikeys
from app.settings import Settings


def _table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _emit(args: argparse.Namespace, data: Any, columns: Sequence[str] | None = None) -> None:
    if args.json:
        print(msgspec.json.encode(data).decode())
    elif columns is not None:
        rows = msgspec.to_builtins(data)
        print(_table(rows, columns) if rows else "(none)")
    else:
        print(data)


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
    ok = await apikeys.revoke_key(redis, args.key_id)
    if args.json:
        print(msgspec.json.encode({"keyId": args.key_id, "revoked": ok}).decode())
    else:
        print(f"revoked {args.key_id}" if ok else f"no key with id {args.key_id}")
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and --help)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--redis-url", help="Redis/Valkey URL (default: SPATIALGEN_REDIS_URL)")
    common.add_argument("--json", action="store_true", help="machine-readable JSON output")
    parser = argparse.ArgumentParser(prog="spatialgen-admin", description=__doc__, parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)

    keys = sub.add_parser("keys", help="manage API keys", parents=[common])
    ksub = keys.add_subparsers(dest="action", required=True)
    create = ksub.add_parser("create", help="create a key (printed once, as the last line)", parents=[common])
    create.add_argument("--account", required=True)
    create.add_argument("--role", required=True, choices=[r.value for r in apikeys.Role])
    create.add_argument("--label", default="")
    ksub.add_parser("list", help="list keys (never the secrets)", parents=[common])
    revoke = ksub.add_parser("revoke", help="revoke a key by its id", parents=[common])
    revoke.add_argument("key_id")
    return parser


async def run(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run one command; returns the exit code."""
    args = build_parser().parse_args(argv)
    url = args.redis_url or Settings.from_env().redis_url
    redis = Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10)
    try:
        if args.command == "keys":
            return await _keys(args, redis)
    finally:
        await redis.aclose()
    return 2


def main() -> None:
    """Console-script entry point."""
    sys.exit(asyncio.run(run()))
