"""The error catalog: every client-visible error with its stable code and HTTP status.

Domain code raises `ApiError`s built from these specs; app/http/problems.py turns them into problem+json.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

PROBLEM_JSON = "application/problem+json"


class FieldError(msgspec.Struct, frozen=True):
    """One violation inside a request, located by a JSON path like `files[2].languageTag`."""

    path: str
    message: str


class ApiError(Exception):
    """A client-visible failure; rendered as RFC 9457 problem+json."""

    def __init__(
        self,
        spec: ErrorSpec,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{spec.code}: {detail}")
        self.spec = spec
        self.detail = detail
        self.errors = errors
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    @property
    def status(self) -> int:
        """HTTP status of this error."""
        return self.spec.status

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        """The problem+json document."""
        doc: dict[str, Any] = {
            "type": f"https://docs.spatialgen.com/errors/{self.spec.code}",
            "title": self.spec.title,
            "status": self.spec.status,
            "detail": self.detail,
            "code": self.spec.code,
        }
        if instance:
            doc["instance"] = instance
        if self.errors is not None:
            doc["errors"] = [{"path": e.path, "message": e.message} for e in self.errors]
        doc.update(self.extra)
        return doc


class ErrorSpec(msgspec.Struct, frozen=True):
    """A catalog entry: stable code, HTTP status and a short title."""

    code: str
    status: int
    title: str

    def __call__(self, detail: str, **kwargs: Any) -> ApiError:
        """Build the exception carrying this entry."""
        return ApiError(self, detail, **kwargs)


# 400
INVALID_REQUEST = ErrorSpec("invalid_request", 400, "The request is invalid")
MALFORMED_JSON = ErrorSpec("malformed_json", 400, "The request body is not valid JSON")
UNSUPPORTED_MEDIA_TYPE = ErrorSpec("unsupported_media_type", 415, "The request body must be JSON")
INVALID_HEADER = ErrorSpec("invalid_header", 400, "A request header is invalid")
BODY_INCOMPLETE = ErrorSpec("body_incomplete", 400, "The request body is incomplete")
BODY_TIMEOUT = ErrorSpec("body_timeout", 408, "The request body took too long to arrive")
CHECKSUM_UNSUPPORTED = ErrorSpec("checksum_unsupported", 400, "The store does not verify this checksum algorithm")
CHECKSUM_REQUIRED = ErrorSpec("checksum_required", 400, "Every requested part needs its checksum")
CHECKSUM_ALGORITHM_REQUIRED = ErrorSpec(
    "checksum_algorithm_required", 400, "Checksums need a checksum algorithm for the file"
)
# 401 / 403
MISSING_API_KEY = ErrorSpec("missing_api_key", 401, "The X-SPATIALGEN-APPKEY header is missing")
INVALID_API_KEY = ErrorSpec("invalid_api_key", 401, "The API key is not valid")
ROLE_NOT_ALLOWED = ErrorSpec("role_not_allowed", 403, "The API key's role may not do this")
# 404 / 405
NOT_FOUND = ErrorSpec("not_found", 404, "No such resource")
SESSION_NOT_FOUND = ErrorSpec("session_not_found", 404, "Upload group not found")
FILE_NOT_FOUND = ErrorSpec("file_not_found", 404, "Upload file not found")
WEBHOOK_NOT_FOUND = ErrorSpec("webhook_not_found", 404, "Webhook endpoint not found")
EVENT_NOT_FOUND = ErrorSpec("event_not_found", 404, "Event not found")
METHOD_NOT_ALLOWED = ErrorSpec("method_not_allowed", 405, "Method not allowed")
# 409
IDEMPOTENCY_KEY_REUSED = ErrorSpec(
    "idempotency_key_reused", 409, "The Idempotency-Key was used with a different request"
)
SESSION_CANCELED = ErrorSpec("session_canceled", 409, "The upload group was canceled")
SESSION_EXPIRED = ErrorSpec("session_expired", 409, "The upload group has expired")
SESSION_COMPLETED = ErrorSpec("session_completed", 409, "The upload group is already completed")
SESSION_FAILED = ErrorSpec("session_failed", 409, "The upload group has failed")
FILE_COMPLETED = ErrorSpec("file_completed", 409, "The file is already completed")
FILE_COMPLETING = ErrorSpec("file_completing", 409, "The file is being completed")
FILE_FAILED = ErrorSpec("file_failed", 409, "The file failed verification")
MISSING_PARTS = ErrorSpec("missing_parts", 409, "Parts are missing or do not match storage")
COMPLETION_ATTEMPTS_EXHAUSTED = ErrorSpec(
    "completion_attempts_exhausted", 409, "The file has used all its completion attempts"
)
CHECKSUM_ALGORITHM_CONFLICT = ErrorSpec(
    "checksum_algorithm_conflict", 409, "The file's checksum algorithm is already fixed"
)
CHECKSUM_MISMATCH = ErrorSpec("checksum_mismatch", 409, "Storage found a checksum that does not match")
FILE_NOT_PROVISIONED = ErrorSpec("file_not_provisioned", 409, "The file has no storage upload yet")
WEBHOOK_LIMIT_REACHED = ErrorSpec("webhook_limit_reached", 409, "The account has as many webhook endpoints as allowed")
# 413 / 429 / 503
BODY_TOO_LARGE = ErrorSpec("body_too_large", 413, "The request body is too large")
RATE_LIMITED = ErrorSpec("rate_limited", 429, "Too many requests")
QUOTA_EXCEEDED = ErrorSpec("quota_exceeded", 429, "The account is at a quota")
STORAGE_NOT_READY = ErrorSpec("storage_not_ready", 503, "Storage for this file is not ready yet")
DEPENDENCY_UNAVAILABLE = ErrorSpec("dependency_unavailable", 503, "A dependency is unavailable")
INTERNAL_ERROR = ErrorSpec("internal_error", 500, "Internal error")

CATALOG: tuple[ErrorSpec, ...] = tuple(v for v in dict(globals()).values() if isinstance(v, ErrorSpec))

assert all(spec.code == name.lower() for name, spec in dict(globals()).items() if isinstance(spec, ErrorSpec)), (
    "an error's name is its code in capitals"
)
