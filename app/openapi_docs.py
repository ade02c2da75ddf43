"""The OpenAPI description of the API: request bodies, success documents, problem+json errors and examples.

Handlers read raw bodies (app/rules.py validates them, reporting every violation at once), so what Litestar
cannot infer from signatures is declared here; app/api.py attaches it to the routes.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import re
from collections.abc import Iterator, Mapping, Sequence
from http import HTTPStatus
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, cast

import msgspec
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import (
    Example,
    Link,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    Reference,
    RequestBody,
    Schema,
)
from msgspec import Meta

from app import errors
from app.errors import PROBLEM_JSON, ErrorSpec, FieldError
from app.models import (
    CanceledGroupView,
    CompletedFileView,
    FileProgressView,
    FileRole,
    GroupStatusView,
    Layout,
    PartUrl,
    PartUrlsView,
    Perspective,
    ReceivedPart,
    ReceivedPartsView,
    UploadFileView,
    UploadGroupCreated,
)
from app.rules import EXTENSIONS, MAX_DESCRIPTION_CHARS, MAX_ETAG_CHARS, MAX_NAME_CHARS, MAX_PARTS, plan_parts
from app.settings import Settings

JSON = "application/json"

# ---------------------------------------------------------------------------------------------
# OpenAPI description. Handlers read raw bodies (app/rules.py validates them and reports every
# violation at once), so request bodies, success documents and problem+json errors are declared
# here instead of being inferred from handler signatures. Built lazily by Litestar on the first
# /schema request; only these declarations cost anything at import.
# ---------------------------------------------------------------------------------------------
API_TITLE = "SpatialGen Direct Upload API"
API_DESCRIPTION = """\
Upload a video asset set (video or left/right eye videos, audio, subtitles, AIV metadata) straight into object
storage with presigned multipart uploads:

1. `POST /api/videos/uploads` starts an upload group and plans each file's parts.
2. `POST .../files/{uploadId}/part-urls` returns presigned `PUT` URLs; the client sends the bytes to storage.
3. `POST .../files/{uploadId}/complete` finalizes a file with the parts' ETags; when the group's last file
   completes, the group gets its `libraryId` and is handed to processing.
4. `GET` the group or a file's received parts to follow progress or resume; `DELETE` the group to cancel it.

Every `/api` call carries an API key in the `X-SPATIALGEN-APPKEY` header (roles: `admin` and `upload` may call
everything, `readonly` only the `GET`s). Every error is `application/problem+json` (RFC 9457) with a stable
`code`; validation errors list every violation in `errors`.
"""
API_KEY_SCHEME = "apiKey"
SECURED: list[dict[str, list[str]]] = [{API_KEY_SCHEME: []}]
UPLOADS_TAG = "uploads"
OPS_TAG = "operations"


def api_version() -> str:
    try:
        return importlib.metadata.version("spatialgen-upload")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a plain checkout
        return "0.0.0"


_EXTENSIONS_DOC = "; ".join(f"{role.value}: {' '.join(exts)}" for role, exts in EXTENSIONS.items())


class StartUploadFile(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    """One file of the asset set."""

    file_name: Annotated[
        str,
        Meta(min_length=1, max_length=MAX_NAME_CHARS,
             description=f"The client's file name; only its extension is kept, and it must suit the role "
                         f"({_EXTENSIONS_DOC})."),
    ]  # fmt: skip
    file_role: FileRole
    size_bytes: Annotated[
        int, Meta(ge=1, description="Exact size in bytes; at most SPATIALGEN_MAX_FILE_BYTES (5 TiB by default).")
    ]
    language_tag: Annotated[
        str | None,
        Meta(description="Required for audio (a spoken language, or zxx) and subtitle files, omitted for the others.",
             examples=["en"]),
    ] = None  # fmt: skip


class StartUploadBody(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    """Start Upload Group request."""

    video_name: Annotated[str, Meta(min_length=1, max_length=MAX_NAME_CHARS, description="Title (trimmed).")]
    description: Annotated[str | None, Meta(description=f"At most {MAX_DESCRIPTION_CHARS} characters.")] = None
    layout: Layout
    perspective: Perspective | None = None
    folder_name: Annotated[str | None, Meta(description=f"At most {MAX_NAME_CHARS} characters (trimmed).")] = None
    files: Annotated[
        list[StartUploadFile],
        Meta(min_length=1,
             description="1 to SPATIALGEN_MAX_FILES_PER_GROUP (64 by default) files. Layout Separate needs exactly one "
                         "video_left and one video_right, the other layouts exactly one video; at most one aime and "
                         "one fcpxmld; AIV needs perspective 180 and an .aivu video, or an aime plus an fcpxmld."),
    ]  # fmt: skip


class PartUrlsBody(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    """Which parts to sign: partNumbers, or a range startPartNumber/count. No body (or {}) means every part."""

    part_numbers: Annotated[list[Annotated[int, Meta(ge=1)]], Meta(min_length=1, max_length=MAX_PARTS)] | None = None
    start_part_number: Annotated[int, Meta(ge=1)] | None = None
    count: Annotated[int, Meta(ge=1, le=MAX_PARTS)] | None = None


class CompletedPart(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    """A part as the client uploaded it."""

    part_number: Annotated[int, Meta(ge=1, le=MAX_PARTS)]
    etag: Annotated[
        str, Meta(min_length=1, max_length=MAX_ETAG_CHARS, description="The ETag header storage answered the PUT with.")
    ]


class CompleteFileBody(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    """Every part 1..totalParts exactly once (multipart files). A single_put file needs no body."""

    parts: Annotated[list[CompletedPart], Meta(max_length=MAX_PARTS)] | None = None


class ProblemFieldError(msgspec.Struct):
    """One violation, located by a JSON path like `files[2].languageTag`."""

    path: str
    message: str


class Problem(msgspec.Struct, omit_defaults=True):
    """RFC 9457 problem details: the body of every error answer (application/problem+json)."""

    type: str
    title: str
    status: int
    detail: str
    code: Annotated[str, Meta(description="Stable error code: " + ", ".join(s.code for s in errors.CATALOG) + ".")]
    instance: str | None = None
    errors: list[ProblemFieldError] | None = None


class NotReadyProblem(msgspec.Struct, kw_only=True):
    """503 of the readiness probe: a problem document with the result of each check."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str
    checks: dict[str, str]


class Readiness(msgspec.Struct):
    """The process can serve: Redis answered (storage and the eviction policy are reported)."""

    status: str
    checks: dict[str, str]


class Liveness(msgspec.Struct):
    """The process is up."""

    status: str


_CAMEL_HUMP = re.compile(r"(?<!^)(?=[A-Z])")


def _openapi_schema(node: Mapping[str, Any], defs: Mapping[str, Any]) -> Schema:
    """A msgspec JSON Schema node as a Litestar Schema, $refs inlined (the request models are small and acyclic)."""
    if "$ref" in node:
        return _openapi_schema(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    kwargs: dict[str, Any] = {}
    for key, raw in node.items():
        value: Any = raw
        if key == "$defs":
            continue
        if key == "properties":
            value = {k: _openapi_schema(v, defs) for k, v in raw.items()}
        elif key in ("items", "additionalProperties") and isinstance(raw, Mapping):
            value = _openapi_schema(raw, defs)
        elif key in ("anyOf", "oneOf", "allOf"):
            value = [_openapi_schema(v, defs) for v in raw]
        elif key == "type":
            value = OpenAPIType(raw)
        kwargs[_CAMEL_HUMP.sub("_", key).lower()] = value
    return Schema(**kwargs)


def _request_body(
    model: type[msgspec.Struct], description: str, examples: Mapping[str, Any], *, required: bool
) -> RequestBody:
    doc = msgspec.json.schema(model)
    return RequestBody(
        content={JSON: OpenAPIMediaType(
            schema=_openapi_schema(doc, doc.get("$defs", {})),
            examples={name: Example(summary=name.replace("-", " "), value=value) for name, value in examples.items()},
        )},
        description=description,
        required=required,
    )  # fmt: skip


# The example group: the seed request (kept equal to tests/conftest.py SEED_REQUEST by tests/integration/test_ops.py).
START_EXAMPLE: dict[str, Any] = {
    "videoName": "My Spatial Video",
    "description": "Uploaded from our media pipeline",
    "layout": "Separate",
    "perspective": "Regular",
    "folderName": "Launch Assets",
    "files": [
        {"fileName": "left-eye.mov", "fileRole": "video_left", "sizeBytes": 1287340032},
        {"fileName": "right-eye.mov", "fileRole": "video_right", "sizeBytes": 1287341024},
        {"fileName": "english-audio.mp4", "fileRole": "audio", "sizeBytes": 187340032, "languageTag": "en"},
        {"fileName": "english-subtitles.srt", "fileRole": "subtitle", "sizeBytes": 2401, "languageTag": "en"},
    ],
}
_EX_SID = "3f0c9d52-8a41-4c1e-9b7a-5d2e6f1a0c87"
_EX_UIDS = (
    "a1d5e7c2-4b3f-4e9a-8c61-2f7b9d0e3a15",
    "b7e2f4a9-1c6d-4d83-9e50-6a1c3b8f2d47",
    "c3f9a1b6-7d2e-4a5c-8b94-0e6d2f4a7c19",
    "d8b4c2e7-5f1a-4c6b-a3d0-9e7f1b2c5a63",
)
_EX_CREATED = "2026-05-06T18:42:11.000Z"
_EX_EXPIRES = "2026-05-11T18:42:11.000Z"
EX_GROUP_PATH = f"/api/videos/uploads/{_EX_SID}"
EX_FILE_PATH = f"{EX_GROUP_PATH}/files/{_EX_UIDS[0]}"
_EX_ETAG = '"9b2cf535f27731c974343645a3985328"'


def _example_file(i: int, status: str) -> dict[str, Any]:
    """The view fields (attribute names) of the example group's file i."""
    spec = START_EXAMPLE["files"][i]
    plan = plan_parts(spec["sizeBytes"], Settings().part_size_bytes)
    return {
        "upload_id": _EX_UIDS[i], "file_role": spec["fileRole"], "file_name": spec["fileName"],
        "total_bytes": spec["sizeBytes"], "part_size_bytes": plan.part_size, "total_parts": plan.total_parts,
        "upload_strategy": plan.strategy.value, "status": status,
    }  # fmt: skip


def _examples() -> dict[str, Any]:
    """Example documents, built from the answer models so their shape cannot drift."""
    left = _example_file(0, "uploading")
    part = left["part_size_bytes"]
    url = (f"https://storage.example.com/spatialgen-uploads/uploads/acme/{_EX_SID}/{_EX_UIDS[0]}.mov?partNumber={{n}}"
           "&uploadId=2~Kx7vQ&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20260506T184211Z&X-Amz-Expires=86400"
           "&X-Amz-SignedHeaders=content-length%3Bhost&X-Amz-Credential=…&X-Amz-Signature=…")  # fmt: skip
    parts = [
        PartUrl(part_number=n, size_bytes=part, byte_start=(n - 1) * part, byte_end=n * part, url=url.format(n=n),
                expires_at="2026-05-07T18:42:11.000Z", headers={"Content-Length": str(part)})
        for n in (1, 2)
    ]  # fmt: skip
    progress = [
        FileProgressView(
            **_example_file(i, "uploading" if i == 0 else "initialized"), language_tag=f.get("languageTag"),
            uploaded_parts=5 if i == 0 else 0, uploaded_bytes=5 * part if i == 0 else 0,
            parts_refreshed_at="2026-05-06T18:50:02.000Z" if i == 0 else None, failure_reason=None, failure_detail=None,
        )
        for i, f in enumerate(START_EXAMPLE["files"])
    ]  # fmt: skip
    views: dict[str, msgspec.Struct] = {
        "created": UploadGroupCreated(
            session_id=_EX_SID, expires_at=_EX_EXPIRES, video_name=START_EXAMPLE["videoName"], file_count=4,
            files=[UploadFileView(**_example_file(i, "initialized")) for i in range(4)],
        ),
        "part-urls": PartUrlsView(**left, parts=parts),
        "completed": CompletedFileView(**{**left, "status": "completed"}, library_id=None),
        "group-completed": CompletedFileView(**{**left, "status": "completed"}, library_id=1042),
        "completing": CompletedFileView(**{**left, "status": "completing"}, library_id=None),
        "canceled": CanceledGroupView(
            session_id=_EX_SID, status="canceled", canceled_at="2026-05-06T19:03:45.120Z", file_count=4,
            canceled_file_count=4,
        ),
        "group": GroupStatusView(
            session_id=_EX_SID, status="uploading", video_name=START_EXAMPLE["videoName"],
            description=START_EXAMPLE["description"], layout="Separate", perspective="Regular",
            folder_name=START_EXAMPLE["folderName"], created_at=_EX_CREATED, updated_at="2026-05-06T18:44:30.512Z",
            expires_at=_EX_EXPIRES, completed_at=None, canceled_at=None, library_id=None, file_count=4,
            files=progress,
        ),
        "parts": ReceivedPartsView(
            upload_id=_EX_UIDS[0], status="uploading", total_parts=left["total_parts"],
            refreshed_at="2026-05-06T18:50:02.000Z",
            parts=[ReceivedPart(part_number=n, etag=_EX_ETAG, size_bytes=part) for n in (1, 2, 3)],
        ),
    }  # fmt: skip
    return {name: msgspec.to_builtins(view) for name, view in views.items()}


EXAMPLES = _examples()

# An example detail (and extras) for each error code the routes document.
_PROBLEM_EXAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "invalid_request": (
        "2 problems in the request: files[2].languageTag 'klingon' is not a supported language tag (and 1 more)",
        {"errors": [FieldError("files[2].languageTag", "'klingon' is not a supported language tag"),
                    FieldError("files[3].fileName", "a subtitle file must end in .srt (got 'subs.txt')")]},
    ),
    "malformed_json": ("The body is not valid JSON: Input data was truncated.", {}),
    "invalid_header": (
        "Idempotency-Key must be 1-255 printable ASCII characters.",
        {"errors": [FieldError("Idempotency-Key", "must be 1-255 printable ASCII characters")]},
    ),
    "unsupported_media_type": ("Send the body as application/json, not 'text/plain'.", {}),
    "missing_api_key": ("Send your API key in the X-SPATIALGEN-APPKEY header.", {}),
    "invalid_api_key": ("The API key is not valid.", {}),
    "role_not_allowed": ("Keys with role readonly may not call {method} {instance}.", {}),
    "session_not_found": (f"No upload group '{_EX_SID}' for this account.", {}),
    "file_not_found": (f"No file '{_EX_UIDS[0]}' in upload group {_EX_SID}.", {}),
    "idempotency_key_reused": (
        "This Idempotency-Key was already used with a different request body; use a new key.", {}
    ),
    "session_canceled": (f"Upload group {_EX_SID} was canceled; start a new group.", {}),
    "session_expired": (f"Upload group {_EX_SID} expired at {_EX_EXPIRES}; start a new group.", {}),
    "session_completed": (f"Upload group {_EX_SID} is already completed.", {}),
    "session_failed": (f"Upload group {_EX_SID} failed; start a new group.", {}),
    "file_completed": (f"File {_EX_UIDS[0]} is already completed.", {}),
    "file_completing": (f"File {_EX_UIDS[0]} is being completed.", {}),
    "file_failed": (f"File {_EX_UIDS[0]} failed: size mismatch: expected 1287340032 bytes, got 1287339008.", {}),
    "missing_parts": (
        "Storage refused the completion: InvalidPart: part 7 was not uploaded. Upload the missing parts "
        "(GET .../parts lists what storage has) and complete again.", {},
    ),
    "file_not_provisioned": (
        f"File {_EX_UIDS[0]} has no storage upload yet: get its part URLs, upload the parts, then complete.", {}
    ),
    "body_too_large": ("The body is larger than 1048576 bytes.", {}),
    "storage_not_ready": ("Storage for this file is still being prepared; retry shortly.", {}),
    "dependency_unavailable": ("The state store is unavailable; retry shortly.", {}),
}  # fmt: skip


def problems(instance: str, *specs: ErrorSpec, method: str = "POST") -> dict[int, ResponseSpec]:
    """problem+json answers by status, with one example per error code."""
    grouped: dict[int, list[ErrorSpec]] = {}
    for spec in specs:
        grouped.setdefault(spec.status, []).append(spec)
    out = {}
    for status, group in sorted(grouped.items()):
        examples = []
        for spec in group:
            detail, extra = _PROBLEM_EXAMPLES[spec.code]
            detail = detail.replace("{method}", method).replace("{instance}", instance)
            value = spec(detail, **extra).problem(instance)
            examples.append(Example(id=spec.code, summary=f"{spec.code}: {spec.title}", value=value))
        codes = ", ".join(f"`{s.code}`" for s in group)
        out[status] = ResponseSpec(
            Problem, description=f"{HTTPStatus(status).phrase}: {codes}", media_type=PROBLEM_JSON,
            generate_examples=False, examples=examples,
        )  # fmt: skip
    return out


def success(model: Any, description: str, *example_names: str, media_type: str = JSON) -> ResponseSpec:
    return ResponseSpec(
        model, description=description, media_type=media_type, generate_examples=False,
        examples=[Example(id=n, summary=n.replace("-", " "), value=EXAMPLES[n]) for n in example_names] or None,
    )  # fmt: skip


def _header(description: str, schema: Schema | None = None) -> OpenAPIHeader:
    return OpenAPIHeader(schema=schema or Schema(type=OpenAPIType.STRING), description=description)


_RETRY_AFTER = _header("Seconds to wait before retrying.", Schema(type=OpenAPIType.INTEGER))
_PATH_PARAMS = {
    "session_id": ("The group's sessionId (from Start Upload Group).", _EX_SID),
    "upload_id": ("The file's uploadId (from Start Upload Group).", _EX_UIDS[0]),
}


@dataclasses.dataclass
class ApiOperation(Operation):
    """An operation as Litestar builds it, completed with what it cannot infer from handlers reading raw bodies.

    Subclasses (see `operation`) carry a route's request body, success headers and header parameters.
    """

    body: ClassVar[RequestBody | None] = None
    success_headers: ClassVar[Mapping[str, OpenAPIHeader]] = MappingProxyType({})
    success_links: ClassVar[Mapping[str, Link]] = MappingProxyType({})
    header_params: ClassVar[tuple[Parameter, ...]] = ()

    def __post_init__(self) -> None:
        if self.body is not None:
            self.request_body = self.body
        responses = self.responses or {}
        generic = responses.get("400")
        if isinstance(generic, OpenAPIResponse) and PROBLEM_JSON not in (generic.content or {}):
            del responses["400"]  # Litestar's own validation-error shape; this API answers problem+json
        for code, response in responses.items():
            if isinstance(response, OpenAPIResponse):
                self._complete_response(code, response)
        params: list[Any] = []
        for p in self.parameters or []:
            if isinstance(p, Parameter) and p.name in _PATH_PARAMS:
                text, example = _PATH_PARAMS[p.name]
                params.append(dataclasses.replace(p, description=text, example=example))
            else:
                params.append(p)
        params += self.header_params
        self.parameters = params or None

    def _complete_response(self, code: str, response: OpenAPIResponse) -> None:
        """Success headers and links, Retry-After on 503s, examples keyed by their ids."""
        extra: Mapping[str, OpenAPIHeader] = {}
        if code.startswith("2"):
            extra = self.success_headers
            if self.success_links:
                response.links = dict(self.success_links)
        elif code == "503":
            extra = {"Retry-After": _RETRY_AFTER}
        if extra:
            response.headers = {**(response.headers or {}), **extra}
        for media in (response.content or {}).values():
            if media.examples:
                media.examples = dict(_keyed_by_id(media.examples))


def _keyed_by_id(examples: Mapping[str, Example | Reference]) -> Iterator[tuple[str, Example | Reference]]:
    """Examples keyed by their id, with the id removed (Litestar would emit it; OpenAPI has no such field)."""
    for key, ex in examples.items():
        if isinstance(ex, Example) and ex.id:
            yield ex.id, dataclasses.replace(ex, id=None)
        else:
            yield key, ex


def operation(
    *, body: RequestBody | None = None, success_headers: Mapping[str, OpenAPIHeader] | None = None,
    header_params: Sequence[Parameter] = (), success_links: Mapping[str, Link] | None = None,
) -> type[Operation]:  # fmt: skip
    attrs = {"body": body, "success_headers": MappingProxyType(dict(success_headers or {})),
             "header_params": tuple(header_params),
             "success_links": MappingProxyType(dict(success_links or {}))}  # fmt: skip
    return cast("type[Operation]", type("ApiOperation", (ApiOperation,), attrs))


_FROM_CREATED = {"session_id": "$response.body#/sessionId", "upload_id": "$response.body#/files/0/uploadId"}
CREATED_LINKS: Mapping[str, Link] = {
    name: Link(operation_id=op, parameters={k: v for k, v in _FROM_CREATED.items() if k in params},
               description=f"{name} on the group (or its first file) just created.")
    for name, op, params in (
        ("GetPartUrls", "getPartUrls", ("session_id", "upload_id")),
        ("CompleteFileUpload", "completeFileUpload", ("session_id", "upload_id")),
        ("GetReceivedParts", "getReceivedParts", ("session_id", "upload_id")),
        ("GetUploadGroup", "getUploadGroup", ("session_id",)),
        ("CancelUploadGroup", "cancelUploadGroup", ("session_id",)),
    )
}  # fmt: skip
"""OpenAPI links from a created group to the calls on it (clients and schemathesis's stateful tests follow them)."""

AUTH = (errors.MISSING_API_KEY, errors.INVALID_API_KEY)
WRITE_AUTH = (*AUTH, errors.ROLE_NOT_ALLOWED)
BODY_ERRORS = (errors.INVALID_REQUEST, errors.MALFORMED_JSON, errors.BODY_TOO_LARGE, errors.UNSUPPORTED_MEDIA_TYPE)
GROUP_GONE = (errors.SESSION_CANCELED, errors.SESSION_EXPIRED, errors.SESSION_COMPLETED, errors.SESSION_FAILED)

START_BODY = _request_body(
    StartUploadBody, "The group and its files; every violation is reported at once.", {"seed-request": START_EXAMPLE},
    required=True,
)  # fmt: skip
PART_URLS_BODY = _request_body(
    PartUrlsBody, "Optional part selection (no body: every part).",
    {"every-part": {}, "a-range": {"startPartNumber": 1, "count": 2}, "listed-parts": {"partNumbers": [3, 7]}},
    required=False,
)  # fmt: skip
COMPLETE_BODY = _request_body(
    CompleteFileBody, "The uploaded parts with their ETags (no body for a single_put file).",
    {"multipart": {"parts": [{"partNumber": n, "etag": _EX_ETAG} for n in (1, 2)]}, "single-put": {}},
    required=False,
)  # fmt: skip
IDEMPOTENCY_KEY = Parameter(
    name="Idempotency-Key", param_in="header", required=False,
    schema=Schema(type=OpenAPIType.STRING, min_length=1, max_length=255),
    description="Retry-safe creation: the same key with the same body within 24 h returns the first answer "
    "(with `Idempotent-Replayed: true`); with a different body it is a 409.",
    example="order-7731-upload",
)  # fmt: skip
CREATED_HEADERS = {
    "Location": _header("Path of the new group."),
    "Idempotent-Replayed": _header("`true` when this answer replays an earlier one with the same Idempotency-Key."),
}
