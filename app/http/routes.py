"""The upload routes: each authenticates, reads the body and calls its upload step (app/uploads); nothing here
builds Redis keys or talks to S3. The OpenAPI declarations they carry are in app/http/openapi.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import msgspec
from litestar import Request, delete, get, post
from litestar.params import FromPath
from litestar.types import ASGIApp

from app.domain import errors
from app.domain.answers import (
    COMPACT_PART_URLS,
    CanceledGroupView,
    CompletedFileView,
    GroupStatusView,
    PartUrlsView,
    ReceivedPartsView,
    UploadGroupCreated,
)
from app.domain.errors import ApiError
from app.domain.examples import EX_FILE_PATH, EX_GROUP_PATH
from app.domain.limits import RouteClass
from app.http.encoding import accepts_gzip, gzip_whole, wants_compact
from app.http.openapi import (
    AUTH,
    BODY_ERRORS,
    COMPLETE_BODY,
    CREATED_HEADERS,
    CREATED_LINKS,
    GROUP_GONE,
    IDEMPOTENCY_KEY,
    PART_URLS_BODY,
    PART_URLS_COMPACT,
    PART_URLS_HEADERS,
    SECURED,
    START_BODY,
    UPLOADS_TAG,
    WRITE_AUTH,
    ApiOperation,
    operation,
    problems,
    success,
)
from app.http.plumbing import (
    JSON,
    authenticate,
    header,
    json_response,
    rate_headers,
    read_body,
    registry,
    request_charge,
    services,
    streamed_json,
)
from app.state.apikeys import READ_ROLES, WRITE_ROLES
from app.uploads import cancel, complete, part_urls, start, status

_json = msgspec.json.Encoder()


@post(
    "/api/videos/uploads", status_code=201, tags=[UPLOADS_TAG], security=SECURED, operation_id="startUploadGroup",
    summary="Start Upload Group",
    description="Validate the asset set, plan every file's parts and register the group; a file's storage upload is "
    "opened when its part URLs are first asked for. Roles: admin, upload.",
    operation_class=operation(body=START_BODY, success_headers=CREATED_HEADERS, header_params=[IDEMPOTENCY_KEY],
                              success_links=CREATED_LINKS),
    responses={
        201: success(UploadGroupCreated, "The group was created (or replayed for its Idempotency-Key).", "created"),
        **problems("/api/videos/uploads", *BODY_ERRORS, errors.INVALID_HEADER, errors.CHECKSUM_UNSUPPORTED, *WRITE_AUTH,
                   errors.IDEMPOTENCY_KEY_REUSED, errors.QUOTA_EXCEEDED, errors.DEPENDENCY_UNAVAILABLE),
    },
)  # fmt: skip
async def start_upload_group(request: Request[Any, Any, Any]) -> ASGIApp:
    """Start Upload Group (SPEC 3.1)."""
    principal = await authenticate(request, WRITE_ROLES)
    body = await read_body(request)
    created = await start.start_upload_group(
        services(request).uploads, principal, body, header(request, b"idempotency-key")
    )
    headers = {"Location": f"/api/videos/uploads/{created.session_id}"}
    if created.rate is not None:
        headers |= created.rate.headers(RouteClass.CREATE)
    if created.replayed:
        headers["Idempotent-Replayed"] = "true"
    else:
        registry(request).groups_created.inc()
    return json_response(created.body, 201, headers)


FILE_PATH = "/api/videos/uploads/{session_id:str}/files/{upload_id:str}"


@post(
    f"{FILE_PATH}/part-urls", status_code=200, tags=[UPLOADS_TAG], security=SECURED, operation_id="getPartUrls",
    summary="Get Part URLs",
    description="Presigned `PUT` URLs for the selected parts of a file (a single_put file gets one URL for the whole "
    "file). Send each part's bytes [byteStart, byteEnd) to its URL before expiresAt, with the headers listed for it, "
    "and keep the ETag header storage answers. May be called again at any time for fresh URLs. Costs one part_urls "
    "token per URL; an answer over 500 URLs is streamed. The answer is gzip-coded when Accept-Encoding allows it, and "
    f"in the compact form (one URL template, a signature per part) when Accept names `{COMPACT_PART_URLS}`. "
    "Roles: admin, upload.",
    operation_class=operation(body=PART_URLS_BODY, success_headers=PART_URLS_HEADERS, success_media=PART_URLS_COMPACT),
    responses={
        200: success(PartUrlsView, "The file and its presigned part URLs.", "part-urls", "part-urls-with-checksums"),
        **problems(f"{EX_FILE_PATH}/part-urls", *BODY_ERRORS, *WRITE_AUTH, errors.SESSION_NOT_FOUND,
                    errors.FILE_NOT_FOUND, *GROUP_GONE, errors.FILE_COMPLETED, errors.FILE_COMPLETING,
                    errors.FILE_FAILED, errors.CHECKSUM_UNSUPPORTED, errors.CHECKSUM_REQUIRED,
                    errors.CHECKSUM_ALGORITHM_REQUIRED, errors.CHECKSUM_ALGORITHM_CONFLICT, errors.STORAGE_NOT_READY,
                    errors.DEPENDENCY_UNAVAILABLE),
    },
)  # fmt: skip
async def get_part_urls(
    request: Request[Any, Any, Any], session_id: FromPath[str], upload_id: FromPath[str]
) -> ASGIApp:
    """Get Part URLs (SPEC 3.2)."""
    principal = await authenticate(request, WRITE_ROLES, RouteClass.PART_URLS)
    body = await read_body(request)
    compact = wants_compact(header(request, b"accept"))
    answer = await part_urls.sign_part_urls(
        services(request).uploads, principal, session_id, upload_id, body, charge=request_charge(request),
        compact=compact,
    )  # fmt: skip
    # The representation depends on both headers; gzip is negotiated, never imposed (identity without the header).
    headers = {**rate_headers(request), "Vary": "Accept, Accept-Encoding"}
    gzip = accepts_gzip(header(request, b"accept-encoding"))
    if gzip:
        headers["Content-Encoding"] = "gzip"
    media = COMPACT_PART_URLS if compact else JSON
    if answer.pieces is None:
        whole = _json.encode(answer.view)
        return json_response(await gzip_whole(whole) if gzip else whole, headers=headers, content_type=media)
    # A large selection: signed piece by piece while it is sent (the view's empty `parts` closes the object).
    whole = _json.encode(answer.view)
    head, tail = whole.removesuffix(b"[]}") + b"[", b"]}"
    assert answer.stream is not None
    return streamed_json(head, answer.pieces, tail, headers, answer.stream.close, content_type=media, gzip=gzip)


@post(
    f"{FILE_PATH}/complete", status_code=200, tags=[UPLOADS_TAG], security=SECURED, operation_id="completeFileUpload",
    summary="Complete File Upload",
    description="Assemble the file from its parts and verify it. 200 when it is completed (with the group's libraryId "
    "once every file is); 202 while a worker is still completing it: call again to follow up. Roles: admin, upload.",
    operation_class=operation(body=COMPLETE_BODY),
    responses={
        200: success(CompletedFileView, "The file is completed.", "completed", "group-completed",
                     "completed-with-checksum"),
        202: success(CompletedFileView, "Still being completed; repeat the call.", "completing"),
        **problems(f"{EX_FILE_PATH}/complete", *BODY_ERRORS, *WRITE_AUTH, errors.SESSION_NOT_FOUND,
                   errors.FILE_NOT_FOUND, *GROUP_GONE, errors.FILE_FAILED, errors.MISSING_PARTS,
                   errors.FILE_NOT_PROVISIONED, errors.COMPLETION_ATTEMPTS_EXHAUSTED,
                   errors.CHECKSUM_ALGORITHM_REQUIRED, errors.CHECKSUM_MISMATCH, errors.DEPENDENCY_UNAVAILABLE),
    },
)  # fmt: skip
async def complete_file_upload(
    request: Request[Any, Any, Any], session_id: FromPath[str], upload_id: FromPath[str]
) -> ASGIApp:
    """Complete File Upload (SPEC 3.3): 200 when done, 202 while a worker is still completing it."""
    principal = await authenticate(request, WRITE_ROLES, RouteClass.COMPLETE)
    body = await read_body(request)
    try:
        status, view = await complete.complete_file_upload(
            services(request).uploads, principal, session_id, upload_id, body, charge=request_charge(request)
        )
    except ApiError as exc:
        registry(request).count_completion(exc.spec.code)
        raise
    registry(request).count_completion("completed" if status == 200 else "accepted")
    return json_response(_json.encode(view), status, rate_headers(request))


@delete(
    "/api/videos/uploads/{session_id:str}", status_code=200, tags=[UPLOADS_TAG], security=SECURED,
    operation_id="cancelUploadGroup", summary="Cancel Upload Group",
    description="Cancel the group: its unfinished files become canceled and their storage is purged. Repeating the "
    "call returns the same answer. Roles: admin, upload.",
    operation_class=ApiOperation,
    responses={
        200: success(CanceledGroupView, "The group is canceled.", "canceled"),
        **problems(EX_GROUP_PATH, *WRITE_AUTH, errors.SESSION_NOT_FOUND, errors.SESSION_COMPLETED,
                    errors.SESSION_EXPIRED, errors.SESSION_FAILED, errors.DEPENDENCY_UNAVAILABLE, method="DELETE"),
    },
)  # fmt: skip
async def cancel_upload_group(request: Request[Any, Any, Any], session_id: FromPath[str]) -> ASGIApp:
    """Cancel Upload Group (SPEC 3.4)."""
    principal = await authenticate(request, WRITE_ROLES, RouteClass.COMPLETE)
    asked_at = services(request).uploads.clock.now_ms()
    view = await cancel.cancel_group(services(request).uploads, principal, session_id)
    if _epoch_ms(view.canceled_at) >= asked_at:  # canceled by this call, not a repeat answering the first cancel
        registry(request).groups_canceled.inc()
    return json_response(_json.encode(view), headers=rate_headers(request))


_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00Z")


def _epoch_ms(iso: str) -> int:
    return (datetime.fromisoformat(iso) - _EPOCH) // timedelta(milliseconds=1)


@get(
    "/api/videos/uploads/{session_id:str}", tags=[UPLOADS_TAG], security=SECURED, operation_id="getUploadGroup",
    summary="Get Upload Group",
    description="The group with every file's status and upload progress (parts and bytes storage has received). "
    "All roles.",
    operation_class=ApiOperation,
    responses={
        200: success(GroupStatusView, "The group.", "group"),
        **problems(EX_GROUP_PATH, *AUTH, errors.SESSION_NOT_FOUND, errors.DEPENDENCY_UNAVAILABLE),
    },
)  # fmt: skip
async def get_upload_group(request: Request[Any, Any, Any], session_id: FromPath[str]) -> ASGIApp:
    """The group with every file's status and upload progress (SPEC 3.5); readonly keys too."""
    principal = await authenticate(request, READ_ROLES, RouteClass.READS)
    view = await status.group_status(services(request).uploads, principal, session_id, charge=request_charge(request))
    return json_response(_json.encode(view), headers=rate_headers(request))


@get(
    f"{FILE_PATH}/parts", tags=[UPLOADS_TAG], security=SECURED, operation_id="getReceivedParts",
    summary="Get Received Parts",
    description="The parts storage holds for a file, with their ETags, to resume an upload without kept ETags. "
    "All roles.",
    operation_class=ApiOperation,
    responses={
        200: success(ReceivedPartsView, "The parts storage has received.", "parts"),
        **problems(f"{EX_FILE_PATH}/parts", *AUTH, errors.SESSION_NOT_FOUND, errors.FILE_NOT_FOUND,
                    errors.DEPENDENCY_UNAVAILABLE),
    },
)  # fmt: skip
async def get_received_parts(
    request: Request[Any, Any, Any], session_id: FromPath[str], upload_id: FromPath[str]
) -> ASGIApp:
    """Parts storage has received for a file, to resume without kept ETags (SPEC 3.5)."""
    principal = await authenticate(request, READ_ROLES, RouteClass.READS)
    view = await status.received_parts(
        services(request).uploads, principal, session_id, upload_id, charge=request_charge(request)
    )
    return json_response(_json.encode(view), headers=rate_headers(request))


UPLOAD_ROUTES = [start_upload_group, get_part_urls, complete_file_upload, cancel_upload_group, get_upload_group,
                 get_received_parts]  # fmt: skip
