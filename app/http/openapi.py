"""The OpenAPI description of the API: request bodies, success documents, problem+json errors and examples.

Handlers read raw bodies (app/domain/rules.py validates them, reporting every violation at once), so what Litestar
cannot infer from signatures is declared here, from the request contract's own Structs (app/domain/contract.py)
and the shared examples (app/domain/examples.py); app/http/routes.py attaches it to the routes.
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
import openapi_ui_bundles
from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import RedocRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import (
    Components,
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
    SecurityScheme,
    Tag,
)
from litestar.static_files import create_static_files_router
from msgspec import Meta

from app.domain import errors
from app.domain.answers import COMPACT_PART_URLS, CompactPartUrlsView
from app.domain.contract import CompleteRequest, PartUrlsRequest, StartUploadRequest
from app.domain.errors import PROBLEM_JSON, ErrorSpec
from app.domain.examples import EX_CHECKSUMS, EX_ETAG, EX_SID, EX_UIDS, EXAMPLES, PROBLEM_EXAMPLES, START_EXAMPLE

JSON = "application/json"

# Built lazily by Litestar on the first /schema request; only these declarations cost anything at import.
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


def problems(instance: str, *specs: ErrorSpec, method: str = "POST") -> dict[int, ResponseSpec]:
    """problem+json answers by status, with one example per error code."""
    grouped: dict[int, list[ErrorSpec]] = {}
    for spec in specs:
        grouped.setdefault(spec.status, []).append(spec)
    out = {}
    for status, group in sorted(grouped.items()):
        examples = []
        for spec in group:
            detail, extra = PROBLEM_EXAMPLES[spec.code]
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
    "session_id": ("The group's sessionId (from Start Upload Group).", EX_SID),
    "upload_id": ("The file's uploadId (from Start Upload Group).", EX_UIDS[0]),
}


@dataclasses.dataclass
class ApiOperation(Operation):
    """An operation as Litestar builds it, completed with what it cannot infer from handlers reading raw bodies.

    Subclasses (see `operation`) carry a route's request body, success headers and header parameters.
    """

    body: ClassVar[RequestBody | None] = None
    success_headers: ClassVar[Mapping[str, OpenAPIHeader]] = MappingProxyType({})
    success_links: ClassVar[Mapping[str, Link]] = MappingProxyType({})
    success_media: ClassVar[Mapping[str, OpenAPIMediaType]] = MappingProxyType({})
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
            if self.success_media:  # another representation, chosen by the request's Accept
                response.content = {**(response.content or {}), **self.success_media}
        elif code in {"429", "503"}:
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
    success_media: Mapping[str, OpenAPIMediaType] | None = None,
) -> type[Operation]:  # fmt: skip
    attrs = {"body": body, "success_headers": MappingProxyType(dict(success_headers or {})),
             "header_params": tuple(header_params),
             "success_links": MappingProxyType(dict(success_links or {})),
             "success_media": MappingProxyType(dict(success_media or {}))}  # fmt: skip
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

AUTH = (errors.MISSING_API_KEY, errors.INVALID_API_KEY, errors.RATE_LIMITED)
"""Every authenticated route: its key may be missing or unknown, or over its rate limit (429, with Retry-After)."""
WRITE_AUTH = (*AUTH, errors.ROLE_NOT_ALLOWED)
BODY_ERRORS = (errors.INVALID_REQUEST, errors.MALFORMED_JSON, errors.BODY_TOO_LARGE, errors.UNSUPPORTED_MEDIA_TYPE)
GROUP_GONE = (errors.SESSION_CANCELED, errors.SESSION_EXPIRED, errors.SESSION_COMPLETED, errors.SESSION_FAILED)

START_BODY = _request_body(
    StartUploadRequest, "The group and its files; every violation is reported at once.",
    {"seed-request": START_EXAMPLE}, required=True,
)  # fmt: skip
PART_URLS_BODY = _request_body(
    PartUrlsRequest, "Optional part selection (no body: every part).",
    {"every-part": {}, "a-range": {"startPartNumber": 1, "count": 2}, "listed-parts": {"partNumbers": [3, 7]},
     "with-checksums": {"checksumAlgorithm": "CRC64NVME", "checksums": {"1": EX_CHECKSUMS[0], "2": EX_CHECKSUMS[1]}}},
    required=False,
)  # fmt: skip
COMPLETE_BODY = _request_body(
    CompleteRequest, "The uploaded parts with their ETags (no body for a single_put file).",
    {"multipart": {"parts": [{"partNumber": n, "etag": EX_ETAG} for n in (1, 2)]}, "single-put": {},
     "with-checksums": {"parts": [{"partNumber": n, "etag": EX_ETAG, "checksum": EX_CHECKSUMS[n - 1]} for n in (1, 2)],
                        "checksum": "QgEZVOqYEF0="}},
    required=False,
)  # fmt: skip
IDEMPOTENCY_KEY = Parameter(
    name="Idempotency-Key", param_in="header", required=False,
    schema=Schema(type=OpenAPIType.STRING, min_length=1, max_length=255),
    description="Retry-safe creation: the same key with the same body within 24 h returns the first answer "
    "(with `Idempotent-Replayed: true`); with a different body it is a 409.",
    example="order-7731-upload",
)  # fmt: skip
_COMPACT_SCHEMA = msgspec.json.schema(CompactPartUrlsView)
PART_URLS_COMPACT = {
    COMPACT_PART_URLS: OpenAPIMediaType(
        schema=_openapi_schema(_COMPACT_SCHEMA, _COMPACT_SCHEMA.get("$defs", {})),
        examples={"part-urls-compact": Example(summary="part urls compact", value=EXAMPLES["part-urls-compact"])},
    )
}  # fmt: skip
"""The compact part-urls answer, sent when the request's Accept names its media type."""
PART_URLS_HEADERS = {
    "Content-Encoding": _header("`gzip` when the request's Accept-Encoding allows it; absent otherwise."),
    "Vary": _header("`Accept, Accept-Encoding`: both choose the answer's representation."),
}
CREATED_HEADERS = {
    "Location": _header("Path of the new group."),
    "Idempotent-Replayed": _header("`true` when this answer replays an earlier one with the same Idempotency-Key."),
}


DOCS_PATH = "/schema"
SWAGGER_ASSETS = f"{DOCS_PATH}/static/swagger-ui"
REDOC_ASSETS = f"{DOCS_PATH}/static/redoc"
_FAVICON = f"<link rel='icon' type='image/png' href='{SWAGGER_ASSETS}/favicon-32x32.png'>"


def docs_asset_routers() -> list[Router]:
    """The docs UIs' files (Swagger UI, ReDoc: the openapi-ui-bundles package), served by the API itself, so /schema
    works offline and behind an egress policy: the pages load nothing from another host."""
    cache = CacheControlHeader(max_age=86400, public=True)
    return [
        create_static_files_router(SWAGGER_ASSETS, [openapi_ui_bundles.swagger_ui.static_path], name="docs-swagger-ui",
                                   cache_control=cache),
        create_static_files_router(REDOC_ASSETS, [openapi_ui_bundles.redoc.static_path], name="docs-redoc",
                                   cache_control=cache),
    ]  # fmt: skip


def openapi_config() -> OpenAPIConfig:
    """The OpenAPI document's metadata and the docs UIs: Swagger UI at /schema, ReDoc at /schema/redoc (their files
    from `docs_asset_routers`)."""
    swagger = SwaggerRenderPlugin(
        js_url=f"{SWAGGER_ASSETS}/swagger-ui-bundle.js", css_url=f"{SWAGGER_ASSETS}/swagger-ui.css",
        standalone_preset_js_url=f"{SWAGGER_ASSETS}/swagger-ui-standalone-preset.js", favicon=_FAVICON,
    )  # fmt: skip
    redoc = RedocRenderPlugin(js_url=f"{REDOC_ASSETS}/redoc.standalone.js", google_fonts=False, favicon=_FAVICON)
    return OpenAPIConfig(
        title=API_TITLE,
        version=api_version(),
        description=API_DESCRIPTION,
        path=DOCS_PATH,
        render_plugins=[swagger, redoc],
        components=Components(
            security_schemes={
                API_KEY_SCHEME: SecurityScheme(
                    type="apiKey",
                    name="X-SPATIALGEN-APPKEY",
                    security_scheme_in="header",
                    description="API key (`sgk_…`) created with `spatialgen-admin keys create`.",
                )
            }
        ),
        tags=[
            Tag(name=UPLOADS_TAG, description="Upload groups and their files."),
            Tag(name=OPS_TAG, description="Health probes and metrics (no API key)."),
        ],
    )
