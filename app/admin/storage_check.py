"""`spatialgen-admin storage check` and `storage apply`: is the configured bucket ready for the service, and make it so.

`check` reports each item as ok / warn / fail with a reason and what to do (app/storage/bucket.py judges the
bucket's configuration, app/storage/probes.py asks the store); exit 0 when nothing fails, 1 otherwise.
`apply` computes the CORS and lifecycle rules the service needs, shows the change, asks (or takes --yes), applies
it, and checks again. Neither needs Redis.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
from botocore.exceptions import BotoCoreError, ClientError

from app.domain.objectkeys import root_prefix
from app.settings import CHECKSUM_ALGORITHMS, Settings
from app.storage import bucket, probes
from app.storage.bucket import CheckItem
from app.storage.credentials import StorageCredentialsError

CLOCK_WARN_SECONDS = 5.0
"""Above it, URLs signed here start or end that much off their stated lifetime; tolerable, worth fixing."""
CLOCK_FAIL_SECONDS = 900.0
"""SigV4's window: storage refuses requests whose signing time is 15 minutes off its own clock."""
STORAGE_ERRORS = (
    ClientError,
    BotoCoreError,
    StorageCredentialsError,
    probes.StorageProblem,
    httpx.HTTPError,
    ValueError,
)
"""What a storage that is unreachable, refuses the credentials or is misconfigured raises (probes.describe says it)."""


class ChecksumSummary(msgspec.Struct, frozen=True):
    """Which checksum algorithms the store verifies, against what SPATIALGEN_S3_CHECKSUM_ALGORITHMS enables."""

    enabled: list[str]
    verified: list[str]
    recommended: str
    probes: list[probes.ChecksumProbe]


class Report(msgspec.Struct, frozen=True):
    """The whole check (`--json` prints it)."""

    endpoint: str
    bucket: str
    prefix: str
    ok: bool
    items: list[CheckItem]
    checksums: ChecksumSummary | None = None


def add_parsers(ssub: Any, common: argparse.ArgumentParser) -> None:
    """`storage check` and `storage apply`."""
    origins_help = "browser origins that upload (e.g. https://app.example.com; `*` for any)"
    check = ssub.add_parser("check", help="is the bucket ready: reachable, CORS, lifecycle, checksums, conditional "
                            "writes, clock, credentials (exit 1 on any fail)", parents=[common])  # fmt: skip
    check.add_argument("--origins", nargs="+", default=[], metavar="ORIGIN", help=origins_help + " to check for")
    apply = ssub.add_parser("apply", help="set the CORS and lifecycle rules the service needs (shows the change "
                            "first), then check", parents=[common])  # fmt: skip
    apply.add_argument("--origins", nargs="+", default=[], metavar="ORIGIN",
                       help=origins_help + " (default: those the bucket's rules already allow)")  # fmt: skip
    apply.add_argument("--yes", action="store_true", help="apply without asking (without it and without a terminal: "
                       "a dry run)")  # fmt: skip


async def check(settings: Settings, origins: list[str]) -> Report:
    """Run every check against the configured storage."""
    config = settings.storage
    items: list[CheckItem] = []
    summary = None
    session = probes.session()
    try:
        creds = await probes.credentials(config, session)
    except StorageCredentialsError as exc:
        return Report(config.endpoint_url or "AWS", config.bucket, root_prefix(config.key_prefix), False,
                      [CheckItem("credentials", "fail", str(exc), "fix the storage settings; the other checks need "
                                 "credentials")])  # fmt: skip
    stage, action = "bucket", "fix the storage settings; the other checks need the bucket"
    try:
        async with probes.check_client(config, creds, session) as client:
            reached = await probes.reach(client, config)
            items.append(CheckItem("bucket", "ok", f"reachable with {creds.source} (HeadBucket)"))
            stage, action = (
                "probes",
                f"the probes write, list and delete under {root_prefix(config.key_prefix)}"
                f"{probes.PROBE_DIR}, as the service does under its prefix",
            )
            items.append(_clock(probes.clock_skew(reached)))
            items.append(_credentials(creds, settings))
            items.append(await _judged(client, settings, "cors", lambda r: bucket.judge_cors(r, settings, origins)))
            items.append(await _judged(client, settings, "lifecycle", lambda r: bucket.judge_lifecycle(r, settings)))
            found, more = await _probe(client, config, creds, settings)
            items += more
            summary = found
    except STORAGE_ERRORS as exc:
        items.append(CheckItem(stage, "fail", probes.describe(exc, config), action))
    ok = all(i.status != "fail" for i in items)
    return Report(config.endpoint_url or "AWS", config.bucket, root_prefix(config.key_prefix), ok, items, summary)


async def _judged(
    client: Any, settings: Settings, what: str, judge: Callable[[list[dict[str, Any]] | None], CheckItem]
) -> CheckItem:
    """The bucket's rules judged; when these credentials may not read them, a warning saying so."""
    try:
        return judge(await _read(client, settings.storage, what))
    except probes.StorageProblem as exc:
        return CheckItem(what, "warn", str(exc), "run the check with credentials that may read it")


async def _read(client: Any, config: Any, what: str) -> list[dict[str, Any]] | None:
    """The bucket's CORS rules or lifecycle rules; None when it has none. Access refused: StorageProblem."""
    call, key, absent, action = {
        "cors": (client.get_bucket_cors, "CORSRules", "NoSuchCORSConfiguration", "s3:GetBucketCORS"),
        "lifecycle": (client.get_bucket_lifecycle_configuration, "Rules", "NoSuchLifecycleConfiguration",
                      "s3:GetLifecycleConfiguration"),
    }[what]  # fmt: skip
    try:
        resp = await call(Bucket=config.bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code == absent:
            return None
        if code in ("AccessDenied", "403"):
            raise probes.StorageProblem(f"cannot read the bucket's {what} configuration: these credentials lack "
                                        f"{action} (the service does not need it; run the check with an operator's "
                                        "credentials to see it)") from exc  # fmt: skip
        raise
    rules: list[dict[str, Any]] = resp.get(key, [])
    return rules


def _clock(skew: float | None) -> CheckItem:
    if skew is None:
        return CheckItem("clock", "warn", "unknown: storage sent no Date header to compare with")
    text = f"storage's clock is {skew:+.1f} s from this machine's"
    if abs(skew) > CLOCK_FAIL_SECONDS:
        return CheckItem("clock", "fail", text + ": beyond SigV4's 15 minutes, storage refuses what is signed here",
                         "fix this machine's time (NTP)")  # fmt: skip
    if abs(skew) > CLOCK_WARN_SECONDS:
        return CheckItem("clock", "warn", text + f" (more than {CLOCK_WARN_SECONDS:g} s): URLs live that much more "
                         "or less than they say", "fix this machine's time (NTP)")  # fmt: skip
    return CheckItem("clock", "ok", text)


def _credentials(creds: probes.CredentialInfo, settings: Settings) -> CheckItem:
    ttl = settings.uploads.part_url_ttl_seconds
    if creds.expires_at is None:
        if creds.session_token:
            return CheckItem("credentials", "warn", f"{creds.source}: when they expire every URL and storage call "
                             "fails", "leave the keys unset and let the provider chain refresh them")  # fmt: skip
        return CheckItem("credentials", "ok", f"{creds.source}: they do not expire")
    left = creds.expires_at - time.time()
    text = f"{creds.source}: they expire in {left / 60:.0f} min and are refreshed before"
    if left < ttl:
        return CheckItem("credentials", "warn", text + f", but that is shorter than the URLs' lifetime "
                         f"(SPATIALGEN_PART_URL_TTL_SECONDS={ttl}): a URL stops working when the credentials that "
                         "signed it expire", "give the role a longer session, or lower "
                         "SPATIALGEN_PART_URL_TTL_SECONDS")  # fmt: skip
    return CheckItem("credentials", "ok", text + f", after the URLs' lifetime ({ttl} s)")


async def _probe(client: Any, config: Any, creds: probes.CredentialInfo, settings: Settings) -> tuple[
        ChecksumSummary, list[CheckItem]]:  # fmt: skip
    prefix = probes.probe_prefix(config)
    items: list[CheckItem] = []
    try:
        found = await probes.probe_checksums(client, config, creds, prefix)
        put = await probes.probe_conditional_put(client, config, prefix)
        complete = await probes.probe_conditional_complete(client, config, prefix)
    finally:
        left = await probes.remove_probes(client, config, prefix)
    summary, item = _checksums(found, settings)
    items += [item, _conditional_put(put), _conditional_complete(complete, settings.storage.conditional_complete)]
    if left:
        items.append(CheckItem("probes", "warn", f"could not remove probe objects: {', '.join(left)}",
                               "delete them (the sweeps leave them alone)"))  # fmt: skip
    return summary, items


def _checksums(found: list[probes.ChecksumProbe], settings: Settings) -> tuple[ChecksumSummary, CheckItem]:
    enabled = list(settings.storage.checksums())
    verified = [p.algorithm for p in found if p.verdict == "verified"]
    recommended = ",".join(a for a in CHECKSUM_ALGORITHMS if a in verified)
    summary = ChecksumSummary(enabled, verified, recommended, found)
    by_name = {p.algorithm: p for p in found}
    bad = [a for a in enabled if a not in verified]
    fix = f"set SPATIALGEN_S3_CHECKSUM_ALGORITHMS={recommended}" + ("" if recommended else " (empty: none)")
    works = f"the store verifies {', '.join(verified) or 'none of the algorithms'}"
    if bad:
        details: dict[str, list[str]] = {}
        for a in bad:
            details.setdefault(f"{by_name[a].verdict}: {by_name[a].detail}", []).append(a)
        why = "; ".join(f"{', '.join(names)} {what}" for what, names in details.items())
        return summary, CheckItem("checksums", "fail", f"SPATIALGEN_S3_CHECKSUM_ALGORITHMS enables what the store "
                                  f"does not verify: {why}", fix)  # fmt: skip
    extra = [a for a in verified if a not in enabled]
    text = f"{works}; enabled: {', '.join(enabled) or 'none'}"
    return summary, CheckItem("checksums", "ok", text + (f" (could add {', '.join(extra)})" if extra else ""))


def _conditional_put(found: probes.Conditional) -> CheckItem:
    name = "conditional-put"
    if found.verdict == "honoured":
        return CheckItem(name, "ok", f"PutObject with If-None-Match: * over an object was {found.detail}")
    if found.verdict == "ignored":
        return CheckItem(name, "warn", "the store ignores If-None-Match: * on PutObject: a single-file URL used "
                         "twice replaces the object", "prefer a store with conditional writes")  # fmt: skip
    return CheckItem(name, "fail", f"If-None-Match: * on PutObject: {found.detail}; single-file URLs sign it, so "
                     "single-file uploads fail", "use a store that accepts conditional writes")  # fmt: skip


def _conditional_complete(found: probes.Conditional, enabled: bool) -> CheckItem:
    name, setting = "conditional-complete", "SPATIALGEN_S3_CONDITIONAL_COMPLETE"
    text = f"CompleteMultipartUpload with If-None-Match: * over an object: {found.verdict} ({found.detail})"
    if found.verdict == "honoured":
        if enabled:
            return CheckItem(name, "ok", text)
        return CheckItem(name, "warn", text + f"; {setting} is off", f"set {setting}=true")
    if found.verdict == "ignored":
        return CheckItem(name, "warn", text + ": a second completion could replace a completed object")
    if not enabled:
        return CheckItem(name, "ok", text + f"; {setting} is off, as this store needs")
    return CheckItem(name, "fail", text + ": every multipart completion would fail", f"set {setting}=false")


def render(report: Report) -> str:
    """The report as text: one line per item, its action below it."""
    lines = [f"storage check: bucket {report.bucket!r} at {report.endpoint}, prefix {report.prefix!r}"]
    width = max(len(i.name) for i in report.items)
    for item in report.items:
        lines.append(f"{item.status:<4}  {item.name:<{width}}  {item.reason}")
        if item.action:
            lines.append(f"{'':<4}  {'':<{width}}  -> {item.action}")
    if report.checksums is not None:
        c = report.checksums
        lines.append(f"checksums: the store verifies [{', '.join(c.verified)}], SPATIALGEN_S3_CHECKSUM_ALGORITHMS "
                     f"enables [{', '.join(c.enabled)}]; recommended: "
                     f"SPATIALGEN_S3_CHECKSUM_ALGORITHMS={c.recommended or '(empty: none)'}")  # fmt: skip
    counts = {s: sum(i.status == s for i in report.items) for s in ("ok", "warn", "fail")}
    lines.append(f"result: {counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail")
    return "\n".join(lines)


async def check_command(args: argparse.Namespace, settings: Settings) -> int:
    """storage check."""
    report = await check(settings, args.origins)
    print(msgspec.json.encode(report).decode() if args.json else render(report))
    return 0 if report.ok else 1


async def apply_command(args: argparse.Namespace, settings: Settings) -> int:
    """storage apply."""
    config = settings.storage
    session = probes.session()
    try:
        creds = await probes.credentials(config, session)
        async with probes.check_client(config, creds, session) as client:
            await probes.reach(client, config)
            cors = await _read(client, config, "cors")
            lifecycle = await _read(client, config, "lifecycle")
            origins = args.origins or bucket.cors_origins(cors)
            notes = [] if origins else ["CORS unchanged: no --origins given and no rule allows PUT yet (browser "
                                        "uploads need one: --origins https://app.example.com)"]  # fmt: skip
            new_cors = bucket.merged_cors(cors, bucket.wanted_cors_rule(settings, origins)) if origins else None
            new_cors = None if new_cors == cors else new_cors
            new_lifecycle = bucket.merged_lifecycle(lifecycle, settings)
            if new_lifecycle is not None and bucket.judge_lifecycle(new_lifecycle, settings).status == "fail":
                notes.append(bucket.judge_lifecycle(new_lifecycle, settings).reason + ": apply does not edit "
                             "other rules; change that one yourself")  # fmt: skip
            changes = {"cors": _change(cors, new_cors), "lifecycle": _change(lifecycle, new_lifecycle)}
            applied = _confirmed(args, changes, notes)
            if applied:
                if new_cors is not None:
                    await client.put_bucket_cors(Bucket=config.bucket, CORSConfiguration={"CORSRules": new_cors})
                if new_lifecycle is not None:
                    await client.put_bucket_lifecycle_configuration(
                        Bucket=config.bucket, LifecycleConfiguration={"Rules": new_lifecycle}
                    )
    except STORAGE_ERRORS as exc:
        print(f"error: {probes.describe(exc, config)}", file=sys.stderr)
        return 1
    if not applied:
        if args.json:
            print(msgspec.json.encode({"changes": changes, "applied": False, "notes": notes}).decode())
        return 0
    report = await check(settings, origins)
    if args.json:
        print(msgspec.json.encode({"changes": changes, "applied": True, "notes": notes, "check": report}).decode())
    else:
        print(render(report))
    return 0 if report.ok else 1


def _change(before: list[dict[str, Any]] | None, after: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    return None if after is None else {"before": before or [], "after": after}


def _confirmed(args: argparse.Namespace, changes: dict[str, Any], notes: list[str]) -> bool:
    """Show what would change; True when it is to be applied (--yes, or a yes at the terminal)."""
    out = sys.stderr if args.json else sys.stdout
    for note in notes:
        print(f"note: {note}", file=out)
    pending = {k: v for k, v in changes.items() if v is not None}
    if not pending:
        print("nothing to change: the bucket has the CORS and lifecycle rules the service needs", file=out)
        return True  # nothing to write; go on to the check
    for what, change in pending.items():
        before, after = (json.dumps(change[k], indent=2, sort_keys=True).splitlines() for k in ("before", "after"))
        print(f"{what}: the bucket's rules (-) and after apply (+)", file=out)
        print("\n".join(difflib.unified_diff(before, after, "now", "after apply", lineterm="", n=20)), file=out)
    if args.yes:
        return True
    if not sys.stdin.isatty():
        print("dry run: nothing changed (stdin is not a terminal; --yes applies)", file=out)
        return False
    answer = ""
    with contextlib.suppress(EOFError):
        answer = input("apply these changes? [y/N] ").strip().lower()
    if answer in ("y", "yes"):
        return True
    print("nothing changed", file=out)
    return False
