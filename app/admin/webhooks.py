"""`spatialgen-admin webhooks`: what an operator does about an account's webhook endpoints, with the same rules as
the API (app/webhooks/endpoints.py): list, create (the secret is printed once, last), show, update, delete,
rotate-secret, test, deliveries (the delivery log) and redeliver (one event, or a time range).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec
from redis.asyncio import Redis

from app.domain.clock import now_ms
from app.domain.errors import ApiError
from app.domain.events import SUBSCRIBABLE
from app.settings import Settings
from app.state.webhooks import WebhookStore
from app.webhooks import endpoints

ENDPOINT_COLUMNS = ["endpointId", "account", "enabled", "url", "eventTypes", "failingSince", "disabledReason"]
DELIVERY_COLUMNS = ["attemptedAt", "eventId", "eventType", "attempt", "outcome", "status", "latencyMs", "error",
                    "nextAttemptAt"]  # fmt: skip


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """The `webhooks` command and its actions."""
    hooks = sub.add_parser("webhooks", help="accounts' webhook endpoints, delivery logs, redelivery", parents=[common])
    wsub = hooks.add_subparsers(dest="action", required=True)
    lst = wsub.add_parser("list", help="endpoints (never their secrets)", parents=[common])
    lst.add_argument("--account", help="one account's (default: every account's)")
    create = wsub.add_parser("create", help="register an endpoint (its secret is printed once, last)", parents=[common])
    create.add_argument("--account", required=True)
    create.add_argument("--url", required=True)
    _fields(create)
    for name, text in (("show", "one endpoint"), ("delete", "delete an endpoint and its log"),
                       ("rotate-secret", "a new secret (printed once, last); the old one signs too for a while"),
                       ("test", "send a webhook.test event to the endpoint")):  # fmt: skip
        wsub.add_parser(name, help=text, parents=[common]).add_argument("endpoint_id")
    update = wsub.add_parser("update", help="change an endpoint; --enable clears why it was disabled", parents=[common])
    update.add_argument("endpoint_id")
    update.add_argument("--url")
    _fields(update)
    update.add_argument("--enable", dest="enabled", action="store_const", const=True)
    log = wsub.add_parser("deliveries", help="the endpoint's last delivery attempts, newest first", parents=[common])
    log.add_argument("endpoint_id")
    log.add_argument("--limit", type=int, default=20)
    again = wsub.add_parser("redeliver", help="deliver one event again (--event), or a time range (--since)",
                            parents=[common])  # fmt: skip
    again.add_argument("endpoint_id")
    again.add_argument("--event", help="an event id (evt_…)")
    again.add_argument("--since", help="ISO 8601 UTC, e.g. 2026-05-06T00:00:00Z")
    again.add_argument("--until", help="ISO 8601 UTC (default: now)")


def _fields(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", help=f"comma-separated event types (default all: {', '.join(SUBSCRIBABLE)})")
    p.add_argument("--description")
    p.add_argument("--disable", dest="enabled", action="store_const", const=False)


def _body(args: argparse.Namespace) -> bytes:
    doc: dict[str, Any] = {}
    for name, key in (("url", "url"), ("description", "description"), ("enabled", "enabled"), ("event", "eventId"),
                      ("since", "since"), ("until", "until")):  # fmt: skip
        if getattr(args, name, None) is not None:
            doc[key] = getattr(args, name)
    if getattr(args, "events", None):
        doc["eventTypes"] = [t.strip() for t in args.events.split(",") if t.strip()]
    return msgspec.json.encode(doc)


async def webhooks_command(args: argparse.Namespace, redis: Redis, settings: Settings) -> int:
    """Run one `webhooks` action; 1 when the endpoint or event is unknown, 2 for a refused request."""
    store = WebhookStore(redis)
    try:
        return await _run(args, store, settings)
    except ApiError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1 if exc.status == 404 else 2
    finally:
        store.close()


async def _run(args: argparse.Namespace, store: WebhookStore, settings: Settings) -> int:  # noqa: PLR0911 - per action
    now, action = now_ms(), args.action
    if action == "list":
        accounts = [args.account] if args.account else None
        found = (await store.account_endpoints(args.account) if accounts else
                 await store.endpoints(await store.all_endpoint_ids(10_000)))  # fmt: skip
        rows = [{**msgspec.to_builtins(endpoints.view(e, now)), "account": e.account} for e in found]
        return _emit(args, rows, ENDPOINT_COLUMNS)
    if action == "create":
        created = await endpoints.create(store, settings, args.account, _body(args), now)
        return _secret(args, msgspec.to_builtins(created), "created endpoint")
    if action == "rotate-secret":
        rotated = await endpoints.rotate_secret(store, settings, None, args.endpoint_id, now)
        return _secret(args, msgspec.to_builtins(rotated), "rotated the secret of")
    if action == "show":
        return _emit(
            args, msgspec.to_builtins(endpoints.view(await endpoints.load(store, None, args.endpoint_id), now))
        )
    if action == "update":
        updated = await endpoints.update(store, settings, None, args.endpoint_id, _body(args), now=now)
        return _emit(args, msgspec.to_builtins(updated))
    if action == "delete":
        await endpoints.delete(store, None, args.endpoint_id)
        return _emit(args, {"endpointId": args.endpoint_id, "deleted": True})
    if action == "test":
        return _emit(args, msgspec.to_builtins(await endpoints.send_test(store, None, args.endpoint_id, now)))
    if action == "deliveries":
        log = await endpoints.deliveries(store, None, args.endpoint_id, now, limit=args.limit)
        if args.json:
            return _emit(args, msgspec.to_builtins(log))
        _emit(args, msgspec.to_builtins(log.endpoint))
        print()
        return _emit(args, msgspec.to_builtins(log.deliveries), DELIVERY_COLUMNS)
    queued = await endpoints.redeliver(store, settings, None, args.endpoint_id, _body(args), now=now)
    return _emit(args, msgspec.to_builtins(queued))


def _secret(args: argparse.Namespace, doc: dict[str, Any], what: str) -> int:
    if args.json:
        print(msgspec.json.encode(doc).decode())
    else:
        print(f"{what} {doc['endpointId']}; its secret is shown only once:")
    print(doc["secret"])
    return 0


def _emit(args: argparse.Namespace, data: Any, columns: list[str] | None = None) -> int:
    """One JSON document (--json), a table of rows, or one `field: value` line per field."""
    if args.json:
        print(msgspec.json.encode(data).decode())
    elif columns is None:
        for k, v in data.items():
            print(f"{k}: {'-' if v is None else v}")
    elif not data:
        print("(none)")
    else:
        cells = [[_cell(row.get(c)) for c in columns] for row in data]
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
        for line in [columns, *cells]:
            print("  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())
    return 0


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)
