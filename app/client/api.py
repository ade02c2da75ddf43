"""ServiceClient: every call of the public HTTP contract (SPEC 3.1–3.5), retried when that is safe.

API calls retry on connection errors, 429 rate_limited and 502/503/504, honouring Retry-After; all of them are
safe to repeat (a start carries an Idempotency-Key). Part PUTs go to storage on a client without the API key.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import msgspec

from app.client import transfer
from app.client.errors import Problem, ServiceError, ServiceUnreachable
from app.client.events import Reporter, Retry, ignore
from app.client.models import (
    CanceledGroup,
    CompactPartUrls,
    CompletedFile,
    GroupCreated,
    GroupStatus,
    PartUrls,
    ProblemDoc,
    ReceivedParts,
)
from app.client.retry import (
    API_MAX_ATTEMPTS,
    COMPLETE_FOLLOW_SECONDS,
    FIRST_CONTACT_DELAYS,
    PART_MAX_FAILURES,
    Backoff,
    parse_retry_after,
)
from app.domain.answers import COMPACT_PART_URLS

APPKEY_HEADER = "X-SPATIALGEN-APPKEY"
UPLOADS_PATH = "/api/videos/uploads"
DEFAULT_PARALLEL = 8
RETRY_STATUSES = frozenset({429, 502, 503, 504})
FINAL_CODES = frozenset({"quota_exceeded"})
"""429 codes that waiting does not fix: the account is over a quota until something is freed."""
COMPLETE_POLL_SECONDS = 0.5
PART_URLS_HEADERS = {"Accept": f"{COMPACT_PART_URLS}, application/json;q=0.5", "Accept-Encoding": "gzip"}
"""The compact form, gzip-coded: what a part-urls call asks for (httpx decodes the gzip)."""
API_TIMEOUT = httpx.Timeout(60.0, connect=15.0)
# Storage may take a while to answer after the last byte of a large part (it checksums the part); the
# write timeout applies per chunk.
PUT_TIMEOUT = httpx.Timeout(connect=30.0, read=300.0, write=120.0, pool=None)

T = TypeVar("T")


class ServiceClient:
    """The calls of the public API, each retried when that is safe; `UploadClient` (app/client/upload.py) adds
    whole-group uploads on top."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        parallel: int = DEFAULT_PARALLEL,
        backoff: Backoff | None = None,
        api_attempts: int = API_MAX_ATTEMPTS,
        part_failures: int = PART_MAX_FAILURES,
    ) -> None:
        if parallel < 1:
            raise ValueError("parallel must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.parallel = parallel
        self.backoff = backoff or Backoff()
        self.api_attempts = api_attempts
        self.part_failures = part_failures
        self.answered = False
        """True once the API has answered anything: before that, a refused connection means a wrong URL or a
        service that is not running (reported at once), after it a network hiccup mid-upload (retried)."""
        self._api = httpx.AsyncClient(base_url=self.base_url, headers={APPKEY_HEADER: api_key}, timeout=API_TIMEOUT)
        # Storage gets no API key. One kept-alive connection per part in flight.
        self._storage = httpx.AsyncClient(
            timeout=PUT_TIMEOUT,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=max(parallel, 20)),
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close both connection pools."""
        await self._api.aclose()
        await self._storage.aclose()

    # --- the calls of the contract ---------------------------------------------------------------

    async def start_group(
        self, body: dict[str, Any], *, idempotency_key: str | None = None, on_progress: Reporter = ignore
    ) -> GroupCreated:
        """Start Upload Group (SPEC 3.1); with an Idempotency-Key a retried start returns the same group."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = await self._call(
            "start", "POST", UPLOADS_PATH, body, ok=(201,), on_progress=on_progress, headers=headers
        )
        created = _decode(response, GroupCreated, "start")
        created.replayed = response.headers.get("idempotent-replayed", "").lower() == "true"
        return created

    async def part_urls(
        self,
        session_id: str,
        upload_id: str,
        part_numbers: Sequence[int] | None = None,
        *,
        checksums: Mapping[int, str] | None = None,
        on_progress: Reporter = ignore,
    ) -> PartUrls:
        """Get Part URLs (SPEC 3.2) for some parts of a file, or all of them; with `checksums` (part number → base64,
        a file with a checksum algorithm) for exactly those parts, each URL signing its part's checksum header.

        Asked for in the compact form, gzip-coded (a sixteenth of the full form's bytes, and less for the service to
        build); a service that answers the full form is read as well."""
        body: dict[str, Any] | None = {"partNumbers": list(part_numbers)} if part_numbers else None
        if checksums:
            body = {"checksums": {str(n): v for n, v in sorted(checksums.items())}}
        path = f"{UPLOADS_PATH}/{session_id}/files/{upload_id}/part-urls"
        response = await self._call("part-urls", "POST", path, body, ok=(200,), on_progress=on_progress,
                                    headers=PART_URLS_HEADERS)  # fmt: skip
        if response.headers.get("content-type", "").startswith(COMPACT_PART_URLS):
            return _decode(response, CompactPartUrls, "part-urls").expand()
        return _decode(response, PartUrls, "part-urls")

    async def complete_file(
        self,
        session_id: str,
        upload_id: str,
        parts: Sequence[tuple[int, str]] | None = None,
        *,
        follow: bool = True,
        part_checksums: Mapping[int, str] | None = None,
        checksum: str | None = None,
        on_progress: Reporter = ignore,
    ) -> CompletedFile:
        """Complete File Upload (SPEC 3.3); with `follow`, repeats the call while the answer is 202 `completing`.

        `part_checksums` and `checksum` (the whole file's) go with a file that has a checksum algorithm: storage
        checks them, a mismatch is a 409 checksum_mismatch.
        """
        sums = part_checksums or {}
        body: dict[str, Any] | None = None
        if parts:
            body = {"parts": [{"partNumber": n, "etag": etag} | ({"checksum": sums[n]} if n in sums else {})
                              for n, etag in parts]}  # fmt: skip
        if checksum:
            body = (body or {}) | {"checksum": checksum}
        path = f"{UPLOADS_PATH}/{session_id}/files/{upload_id}/complete"
        deadline = time.monotonic() + COMPLETE_FOLLOW_SECONDS
        while True:
            response = await self._call("complete", "POST", path, body, ok=(200, 202), on_progress=on_progress)
            done = _decode(response, CompletedFile, "complete")
            if response.status_code == 200 or not follow:
                return done
            if time.monotonic() > deadline:
                raise ServiceError(
                    202, "still_completing", f"file {upload_id} is still being completed", call="complete"
                )
            # The service itself waited SPATIALGEN_COMPLETE_WAIT_SECONDS before answering 202.
            await asyncio.sleep(COMPLETE_POLL_SECONDS)

    async def cancel_group(self, session_id: str, *, on_progress: Reporter = ignore) -> CanceledGroup:
        """Cancel Upload Group (SPEC 3.4); repeating it returns the same answer."""
        path = f"{UPLOADS_PATH}/{session_id}"
        return await self._json(CanceledGroup, "cancel", "DELETE", path, None, on_progress=on_progress)

    async def group_status(self, session_id: str, *, on_progress: Reporter = ignore) -> GroupStatus:
        """The group with every file's status and progress (SPEC 3.5)."""
        path = f"{UPLOADS_PATH}/{session_id}"
        return await self._json(GroupStatus, "status", "GET", path, None, on_progress=on_progress)

    async def received_parts(self, session_id: str, upload_id: str, *, on_progress: Reporter = ignore) -> ReceivedParts:
        """The parts storage holds for a file, with their ETags (SPEC 3.5)."""
        path = f"{UPLOADS_PATH}/{session_id}/files/{upload_id}/parts"
        return await self._json(ReceivedParts, "parts", "GET", path, None, on_progress=on_progress)

    async def put_part(
        self,
        url: str,
        path: Path,
        start: int,
        size: int,
        *,
        on_bytes: Callable[[int], None] | None = None,
        headers: Mapping[str, str] | None = None,
        expect: tuple[str, str] | None = None,
    ) -> str:
        """PUT one part (bytes [start, start + size) of a local file) to its presigned URL, once; returns the ETag.

        Pass the part's `headers` from the part-urls answer: the URL's signature covers them. `expect` (algorithm,
        value): the checksum the URL signs, checked on the bytes as they are sent.
        """
        return await transfer.put_part(
            self._storage, url, path, start, size, on_bytes=on_bytes or _no_bytes, headers=headers, expect=expect
        )

    # --- plumbing ----------------------------------------------------------------------------

    async def _json(
        self, kind: type[T], call: str, method: str, path: str, body: dict[str, Any] | None, *, on_progress: Reporter
    ) -> T:
        """A call answered 200, decoded into a Struct."""
        response = await self._call(call, method, path, body, ok=(200,), on_progress=on_progress)
        return _decode(response, kind, call)

    async def _call(
        self,
        call: str,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        ok: tuple[int, ...],
        on_progress: Reporter,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One API call, tried again on connection errors, 429 rate_limited and 502/503/504."""
        content = msgspec.json.encode(body) if body is not None else None
        all_headers = dict(headers or {})
        if content is not None:
            all_headers["Content-Type"] = "application/json"
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                response = await self._api.request(method, path, content=content, headers=all_headers)
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if not self.answered and self._first_contact_failed(exc, attempt):
                    raise ServiceUnreachable(self.base_url, reason, call=call) from None
                if not self.answered and isinstance(exc, httpx.ConnectError):
                    delay = FIRST_CONTACT_DELAYS[attempt - 1]
                    on_progress(Retry(what="api", call=call, reason=reason, attempt=attempt, delay_seconds=delay))
                    await asyncio.sleep(delay)
                    continue
            else:
                self.answered = True
                if response.status_code in ok:
                    return response
                problem = _problem(response)
                if response.status_code not in RETRY_STATUSES or problem.code in FINAL_CODES:
                    raise _service_error(response, problem, call)
                reason = f"{response.status_code} {problem.code or response.reason_phrase}"
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                if attempt >= self.api_attempts:
                    raise _service_error(response, problem, call)
            if attempt >= self.api_attempts:
                raise ServiceError(0, "unreachable", f"no answer from {self.base_url} after {attempt} tries ({reason})",
                                   call=call)  # fmt: skip
            delay = self.backoff.delay(attempt, retry_after)
            on_progress(Retry(what="api", call=call, reason=reason, attempt=attempt, delay_seconds=round(delay, 3)))
            await asyncio.sleep(delay)

    @staticmethod
    def _first_contact_failed(exc: httpx.TransportError, attempt: int) -> bool:
        """Before the API ever answered: give up on a refused connection (or an unknown host) after a few quick
        tries (a service just starting gets them), and on a connect timeout at once (it already waited)."""
        if isinstance(exc, httpx.ConnectTimeout):
            return True
        return isinstance(exc, httpx.ConnectError) and attempt > len(FIRST_CONTACT_DELAYS)


def _no_bytes(n: int) -> None:
    return None


def _problem(response: httpx.Response) -> ProblemDoc:
    try:
        return msgspec.json.decode(response.content, type=ProblemDoc)
    except msgspec.DecodeError:
        return ProblemDoc(status=response.status_code, detail=response.text[:200])


class _Extra(msgspec.Struct, rename="camel"):
    supported: list[str] | None = None
    part_number: int | None = None


def _service_error(response: httpx.Response, problem: ProblemDoc, call: str) -> ServiceError:
    problems = [Problem(p.path, p.message) for p in problem.errors or ()]
    detail = problem.detail or problem.title or response.reason_phrase
    extra = _Extra()
    if problem.code in ("checksum_unsupported", "checksum_mismatch"):  # what the store verifies; the part refused
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            extra = msgspec.json.decode(response.content, type=_Extra)
    return ServiceError(response.status_code, problem.code or "http_error", detail, call=call, problems=problems,
                        supported=extra.supported, part_number=extra.part_number)  # fmt: skip


def _decode(response: httpx.Response, kind: type[T], call: str) -> T:
    try:
        return msgspec.json.decode(response.content, type=kind)
    except msgspec.DecodeError as exc:
        raise ServiceError(response.status_code, "unexpected_answer", f"unreadable answer: {exc}", call=call) from None
