"""The refusals the steps share: a 429 for an empty bucket or a full quota, a 409 for a group or file whose state
forbids the call, a 503 while storage is not ready. Each names what was wrong and what to do about it.
"""

from __future__ import annotations

from typing import assert_never

from app.domain import errors
from app.domain.clock import iso_ms
from app.domain.lifecycle import FileStatus, GroupStatus, Reply
from app.domain.limits import COST_UNITS, RateState, RouteClass
from app.domain.reasons import SENTENCES, Reason
from app.domain.records import FileRecord
from app.state import GroupSnapshot, ScriptReply


def rate_limited(route_class: RouteClass, rate: RateState, cost: int = 1) -> errors.ApiError:
    """The 429 of an empty bucket (Retry-After and the RateLimit headers say when to come back)."""
    costs = f"; this request costs {cost}" if cost > 1 else ""
    return errors.RATE_LIMITED(
        f"Over this API key's {route_class.value} limit: {rate.burst} {COST_UNITS[route_class]} at once and "
        f"{rate.per_second:g} a second{costs}; retry after the Retry-After delay.",
        headers=rate.headers(route_class), extra={"cost": cost},
    )  # fmt: skip


def too_costly(route_class: RouteClass, rate: RateState, cost: int) -> errors.ApiError:
    """The 400 of a request that costs more than this key's bucket can ever hold."""
    what = COST_UNITS[route_class]
    advice = " Ask for fewer parts per call (partNumbers, or startPartNumber and count)." if (
        route_class is RouteClass.PART_URLS) else ""  # fmt: skip
    return errors.INVALID_REQUEST(
        f"This request costs {cost} {what}, more than this API key's {route_class.value} limit holds at once "
        f"({rate.burst}).{advice}", headers=rate.headers(route_class), extra={"cost": cost, "limit": rate.burst},
    )  # fmt: skip


def quota_exceeded(account: str, reply: ScriptReply, rate: RateState) -> errors.ApiError:
    """The 429 of an account at a quota, naming the limit and the current use."""
    limit, maximum, current = reply.text(0), int(reply.text(1)), int(reply.text(2))
    what = "live upload groups" if limit == "liveGroups" else "declared bytes of live upload groups"
    return errors.QUOTA_EXCEEDED(
        f"Account {account} is at its quota of {maximum} {what} ({current} in use); complete or cancel groups "
        "first, or ask for a higher quota.",
        headers={**rate.headers(RouteClass.CREATE), "Retry-After": "60"},
        extra={"limit": limit, "max": maximum, "current": current},
    )


def group_refusal(snap: GroupSnapshot, status: GroupStatus) -> errors.ApiError:
    """The 409 of a group that no longer accepts uploads."""
    sid = snap.record.session_id
    match status:
        case GroupStatus.CANCELED:
            return errors.SESSION_CANCELED(f"Upload group {sid} was canceled; start a new group.")
        case GroupStatus.EXPIRED:
            expired_at = iso_ms(snap.record.expires_ms)
            return errors.SESSION_EXPIRED(f"Upload group {sid} expired at {expired_at}; start a new group.")
        case GroupStatus.COMPLETED:
            return errors.SESSION_COMPLETED(f"Upload group {sid} is already completed.")
        case GroupStatus.FAILED:
            return errors.SESSION_FAILED(f"Upload group {sid} failed; start a new group.")
        case GroupStatus.INITIALIZED | GroupStatus.UPLOADING:
            raise AssertionError(f"group {sid} is live; nothing to refuse")
        case _:  # pragma: no cover - mypy proves every status is handled
            assert_never(status)


def file_refusal(snap: GroupSnapshot, f: FileRecord, status: FileStatus) -> errors.ApiError:
    """The 409 of a file whose status forbids the call (canceled/expired files share their group's fate)."""
    match status:
        case FileStatus.COMPLETING:
            return errors.FILE_COMPLETING(f"File {f.upload_id} is being completed; repeat complete to poll.")
        case FileStatus.COMPLETED:
            return errors.FILE_COMPLETED(f"File {f.upload_id} is already completed.")
        case FileStatus.FAILED:
            failure = snap.failure(f.upload_id)
            code, sentence = failure or (Reason.UNSPECIFIED, SENTENCES[Reason.UNSPECIFIED])
            return errors.FILE_FAILED(f"File {f.upload_id} failed ({code}): {sentence}.", extra={"reason": code.value})
        case FileStatus.CANCELED:
            return group_refusal(snap, GroupStatus.CANCELED)
        case FileStatus.EXPIRED:
            return group_refusal(snap, GroupStatus.EXPIRED)
        case FileStatus.INITIALIZED | FileStatus.UPLOADING:
            raise AssertionError(f"file {f.upload_id} is open; nothing to refuse")
        case _:  # pragma: no cover - mypy proves every status is handled
            assert_never(status)


def script_refusal(snap: GroupSnapshot, reply: ScriptReply, f: FileRecord | None = None) -> errors.ApiError:
    """The 409 for a state script that said no (its GONE / EXPIRED / GROUP_STATE / FILE_STATE reply)."""
    if reply.code is Reply.FILE_STATE and f is not None:
        return file_refusal(snap, f, FileStatus(reply.text()))
    if reply.code is Reply.GROUP_STATE:
        return group_refusal(snap, GroupStatus(reply.text()))
    return group_refusal(snap, GroupStatus.EXPIRED)  # GONE or EXPIRED: its lifetime is over


def storage_not_ready() -> errors.ApiError:
    """The 503 of a file whose multipart upload storage has not opened in time."""
    return errors.STORAGE_NOT_READY(
        "Storage for this file is still being prepared; retry shortly.", headers={"Retry-After": "2"}
    )
