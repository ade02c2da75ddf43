"""What the bucket's own configuration must hold for the service: the CORS rule browser uploads need and the
lifecycle rule that aborts forgotten multipart uploads. Pure rules over S3's documents (no I/O): judged by
`spatialgen-admin storage check`, computed and merged by `storage apply` (app/storage/probes.py does the calls).
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

import msgspec

from app.domain.objectkeys import root_prefix
from app.settings import Settings

Status = Literal["ok", "warn", "fail"]

CORS_RULE_ID = "spatialgen-browser-uploads"
LIFECYCLE_RULE_ID = "abort-stale-multipart-uploads"
"""The id deploy/aws/s3-lifecycle.json gives the same rule, so applying after the README's aws command adds none."""
CORS_MAX_AGE_SECONDS = 3600
"""How long browsers cache a preflight answer: one OPTIONS per origin and header set an hour, not one per part."""
SDK_CHECKSUM_HEADER = "x-amz-sdk-checksum-algorithm"
DAY = 86_400


class CheckItem(msgspec.Struct, frozen=True):
    """One line of `storage check`: what was checked, how it stands, why, and what to do (empty when ok)."""

    name: str
    status: Status
    reason: str
    action: str = ""


def signed_headers(settings: Settings) -> list[str]:
    """The request headers a browser sends that CORS must allow: every header the URLs may sign but the CORS-
    safelisted ones (Content-Length is never asked about; Content-Type is, for a type like video/mp4)."""
    checksums = [f"x-amz-checksum-{a.lower()}" for a in settings.storage.checksums()]
    return ["content-type", "if-none-match", *checksums]


def wanted_cors_rule(settings: Settings, origins: list[str]) -> dict[str, Any]:
    """The CORS rule `storage apply` installs for these origins."""
    headers = signed_headers(settings)
    if settings.storage.checksums():
        headers = [h for h in headers if not h.startswith("x-amz-checksum-")] + ["x-amz-checksum-*",
                                                                                  SDK_CHECKSUM_HEADER]  # fmt: skip
    exposed = ["ETag", *(f"x-amz-checksum-{a.lower()}" for a in settings.storage.checksums())]
    return {"ID": CORS_RULE_ID, "AllowedOrigins": sorted(origins), "AllowedMethods": ["PUT"],
            "AllowedHeaders": headers, "ExposeHeaders": exposed, "MaxAgeSeconds": CORS_MAX_AGE_SECONDS}  # fmt: skip


def _matches(pattern: str, value: str) -> bool:
    """S3's CORS matching: case-insensitive, one `*` standing for any characters."""
    regex = ".*".join(re.escape(p) for p in pattern.lower().split("*"))
    return re.fullmatch(regex, value.lower()) is not None


def _allows(rule: dict[str, Any], origin: str | None) -> bool:
    origins = rule.get("AllowedOrigins", [])
    allowed = any(_matches(o, origin) for o in origins) if origin else bool(origins)
    return allowed and "PUT" in [m.upper() for m in rule.get("AllowedMethods", [])]


def judge_cors(rules: list[dict[str, Any]] | None, settings: Settings, origins: list[str]) -> CheckItem:
    """Does the bucket's CORS let browsers (of `origins`, or of any origin when none is given) PUT parts?"""
    fix = "spatialgen-admin storage apply --origins " + (" ".join(origins) if origins else "https://YOUR-APP-ORIGIN")
    if not rules:
        return CheckItem("cors", "warn", "the bucket has no CORS configuration: browsers cannot PUT to the URLs "
                         "(command-line and server clients are not affected)", fix)  # fmt: skip
    problems: list[str] = []
    asked: list[str | None] = [*origins] if origins else [None]
    for origin in asked:
        # S3 answers a preflight with the first rule matching origin and method; judge that one.
        rule = next((r for r in rules if _allows(r, origin)), None)
        who = origin or "any origin"
        if rule is None:
            problems.append(f"no rule allows PUT from {who}")
            continue
        missing = [h for h in signed_headers(settings) if not any(_matches(a, h) for a in
                   rule.get("AllowedHeaders", []))]  # fmt: skip
        if missing:
            problems.append(f"the rule for {who} does not allow the signed headers {', '.join(missing)}")
        if not any(e.lower() == "etag" for e in rule.get("ExposeHeaders", [])):
            problems.append(f"the rule for {who} does not expose ETag (browsers cannot read a part's ETag)")
    if problems:
        return CheckItem("cors", "fail", "; ".join(problems), fix)
    rule_ages = [r.get("MaxAgeSeconds") for r in rules if any(_allows(r, o) for o in asked)]
    seen = sorted({o for r in rules if _allows(r, None) for o in r.get("AllowedOrigins", [])})
    if not all(rule_ages):
        return CheckItem("cors", "warn", f"PUT allowed for {', '.join(seen)}, but no MaxAgeSeconds: browsers send a "
                         "preflight before every part", fix)  # fmt: skip
    return CheckItem("cors", "ok", f"PUT allowed for {', '.join(seen)} with the signed headers; ETag exposed; "
                     f"preflights cached {min(int(a) for a in rule_ages if a)} s")  # fmt: skip


def lifecycle_days(settings: Settings) -> int:
    """Days after which the rule aborts an open multipart upload: beyond a group's whole lifetime, with a day's
    margin (5-day groups: 7 days), so it never aborts an upload a client may still be sending."""
    return math.ceil(settings.uploads.session_ttl_seconds / DAY) + 2


def wanted_lifecycle_rule(settings: Settings) -> dict[str, Any]:
    """The lifecycle rule `storage apply` installs (the same as deploy/aws/s3-lifecycle.json)."""
    prefix = root_prefix(settings.storage.key_prefix)
    return {"ID": LIFECYCLE_RULE_ID, "Status": "Enabled", "Filter": {"Prefix": prefix},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": lifecycle_days(settings)}}  # fmt: skip


def _rule_prefix(rule: dict[str, Any]) -> str | None:
    """The key prefix a rule applies to, or None when it also filters on tags or sizes (not every upload)."""
    flt = rule.get("Filter")
    if flt is None:
        return str(rule.get("Prefix", ""))
    if set(flt) - {"Prefix"}:
        and_ = flt.get("And")
        if set(flt) == {"And"} and and_ is not None and set(and_) <= {"Prefix"}:
            return str(and_.get("Prefix", ""))
        return None
    return str(flt.get("Prefix", ""))


def _abort_rules(rules: list[dict[str, Any]], prefix: str) -> list[tuple[dict[str, Any], int]]:
    """Enabled rules aborting incomplete uploads under the whole prefix, with their days."""
    found = []
    for rule in rules:
        days = rule.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation")
        covers = _rule_prefix(rule)
        if rule.get("Status") == "Enabled" and days is not None and covers is not None and prefix.startswith(covers):
            found.append((rule, int(days)))
    return found


def judge_lifecycle(rules: list[dict[str, Any]] | None, settings: Settings) -> CheckItem:
    """Is there a backstop rule aborting forgotten multipart uploads, and does it outlive every group?"""
    prefix = root_prefix(settings.storage.key_prefix)
    ttl = settings.uploads.session_ttl_seconds
    found = _abort_rules(rules or [], prefix)
    if not found:
        return CheckItem("lifecycle", "warn", f"no enabled lifecycle rule aborts incomplete multipart uploads under "
                         f"{prefix or 'the bucket'!r}: uploads the service never hears of again are kept (and billed) "
                         "until its sweeps find them", "spatialgen-admin storage apply")  # fmt: skip
    short = [(r, d) for r, d in found if d * DAY <= ttl]
    if short:
        names = ", ".join(f"{r.get('ID', '(no id)')!r} ({d} days)" for r, d in short)
        return CheckItem("lifecycle", "fail", f"lifecycle rule {names} aborts uploads before a group's lifetime "
                         f"(SPATIALGEN_SESSION_TTL_SECONDS={ttl}, {ttl / DAY:g} days) ends: clients still sending "
                         "lose their upload", f"make it longer than {ttl / DAY:g} days (storage apply installs "
                         f"{lifecycle_days(settings)}) or remove it")  # fmt: skip
    rule, days = min(found, key=lambda x: x[1])
    return CheckItem("lifecycle", "ok", f"rule {rule.get('ID', '(no id)')!r} aborts incomplete uploads under "
                     f"{prefix!r} after {days} days (groups live {ttl / DAY:g})")  # fmt: skip


def merged_cors(rules: list[dict[str, Any]] | None, wanted: dict[str, Any]) -> list[dict[str, Any]]:
    """The bucket's CORS rules with the service's first (S3 uses the first rule that matches) and no other changed."""
    return [wanted, *(r for r in rules or [] if r.get("ID") != wanted["ID"])]


def merged_lifecycle(rules: list[dict[str, Any]] | None, settings: Settings) -> list[dict[str, Any]] | None:
    """The bucket's lifecycle rules plus the service's, or None when a sufficient rule is there already.

    Other rules are kept as they are (never deleted or edited); the service's own rule (by id) is replaced.
    """
    rules = list(rules or [])
    if judge_lifecycle(rules, settings).status == "ok":
        return None
    wanted = wanted_lifecycle_rule(settings)
    return [*(r for r in rules if r.get("ID") != wanted["ID"]), wanted]


def cors_origins(rules: list[dict[str, Any]] | None) -> list[str]:
    """The origins `apply` keeps when no --origins is given: its own rule's, else those other rules allow PUT from."""
    own = [r for r in rules or [] if r.get("ID") == CORS_RULE_ID]
    return sorted({o for r in own or rules or [] if _allows(r, None) for o in r.get("AllowedOrigins", [])})
