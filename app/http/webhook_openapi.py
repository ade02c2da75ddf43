"""The OpenAPI description of webhooks: the `/api/webhooks` routes' bodies and examples, and the document's `webhooks`
section: one entry per event type, with the body a receiver gets, its headers and what its answers mean.

Examples are built from the answer and event Structs themselves (app/domain/webhooks.py, app/domain/events.py).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import (
    Example,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    PathItem,
    RequestBody,
    Schema,
    Tag,
)

from app.domain.events import (
    EVENT_DOCUMENTS,
    EventFile,
    EventType,
    FileCompletedData,
    GroupCompletedData,
    GroupEndedData,
    TestData,
    event_id,
)
from app.domain.examples import EX_SID, EX_UIDS, START_EXAMPLE
from app.domain.webhooks import (
    CreateEndpointRequest,
    DeliveryView,
    EndpointView,
    RedeliverRequest,
    UpdateEndpointRequest,
)
from app.http.openapi import JSON, _openapi_schema, _request_body

WEBHOOKS_TAG = "webhooks"
EX_ENDPOINT = "6f1d2c3b-9a8e-4f7d-b6c5-4e3a2b1c0d9f"
EX_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw8OqhVqB2n0A="
EX_AT = "2026-05-06T19:10:02.417Z"
EX_URL = "https://media.example.com/hooks/spatialgen"


def _endpoint(**changes: Any) -> dict[str, Any]:
    view = EndpointView(
        endpoint_id=EX_ENDPOINT, url=EX_URL, event_types=["upload_group.completed", "upload_group.failed"],
        description="render farm intake", enabled=True, created_at="2026-05-01T09:00:00.000Z", disabled_reason=None,
        disabled_at=None, failing_since=None, last_success_at=EX_AT, secret_rotating_until=None,
    )  # fmt: skip
    return {**msgspec.to_builtins(view), **changes}


_EVT = event_id(EventType.GROUP_COMPLETED, EX_SID)
_DELIVERIES = [
    DeliveryView(event_id=_EVT, event_type="upload_group.completed", attempt=2, attempted_at=EX_AT,
                 outcome="delivered", status=200, latency_ms=84, error=None, next_attempt_at=None),
    DeliveryView(event_id=_EVT, event_type="upload_group.completed", attempt=1, attempted_at="2026-05-06T19:09:57.301Z",
                 outcome="retrying", status=503, latency_ms=31, error="HTTP 503",
                 next_attempt_at="2026-05-06T19:10:02.301Z"),
]  # fmt: skip
ROUTE_EXAMPLES: dict[str, Any] = {
    "endpoint": _endpoint(),
    "created": {**_endpoint(last_success_at=None), "secret": EX_SECRET},
    "list": {"endpoints": [_endpoint()]},
    "disabled": _endpoint(enabled=False, disabled_reason="the endpoint answered 410 Gone at 2026-05-07T08:00:00.000Z",
                          disabled_at="2026-05-07T08:00:00.000Z"),
    "rotated": {"endpointId": EX_ENDPOINT, "secret": EX_SECRET.replace("MfK", "Qz2"),
                "previousSecretValidUntil": "2026-05-07T19:10:02.417Z"},
    "deleted": {"endpointId": EX_ENDPOINT, "deleted": True},
    "deliveries": {"endpoint": _endpoint(), "deliveries": msgspec.to_builtins(_DELIVERIES)},
    "queued": {"endpointId": EX_ENDPOINT, "eventIds": [_EVT]},
}  # fmt: skip


def route_success(model: Any, description: str, *names: str) -> ResponseSpec:
    """A webhook route's success answer with its examples."""
    return ResponseSpec(model, description=description, media_type=JSON, generate_examples=False,
                        examples=[Example(id=n, summary=n, value=ROUTE_EXAMPLES[n]) for n in names])  # fmt: skip


CREATE_BODY = _request_body(
    CreateEndpointRequest, "The endpoint (https; event types to deliver, all if absent).",
    {"endpoint": {"url": EX_URL, "eventTypes": ["upload_group.completed", "upload_group.failed"],
                  "description": "render farm intake"}}, required=True,
)  # fmt: skip
UPDATE_BODY = _request_body(
    UpdateEndpointRequest, "The fields to change; `enabled: true` enables an endpoint the service disabled.",
    {"enable": {"enabled": True}, "new-url": {"url": EX_URL + "/v2"}}, required=True,
)  # fmt: skip
REDELIVER_BODY = _request_body(
    RedeliverRequest, "One event, or every event of the account the endpoint wants in a time range.",
    {"one-event": {"eventId": _EVT}, "time-range": {"since": "2026-05-06T00:00:00.000Z",
                                                     "until": "2026-05-06T23:59:59.999Z"}}, required=True,
)  # fmt: skip


def _event_examples() -> dict[EventType, dict[str, Any]]:
    files = [EventFile(upload_id=EX_UIDS[i], file_role=f["fileRole"], file_name=f["fileName"],
                       size_bytes=f["sizeBytes"], language_tag=f.get("languageTag"),
                       storage_key=f"uploads/acme/{EX_SID}/{EX_UIDS[i]}.{f['fileName'].rsplit('.', 1)[1]}")
             for i, f in enumerate(START_EXAMPLE["files"])]  # fmt: skip
    data: dict[EventType, msgspec.Struct] = {
        EventType.GROUP_COMPLETED: GroupCompletedData(
            session_id=EX_SID, status="completed", library_id=1042, video_name=START_EXAMPLE["videoName"],
            folder_name=START_EXAMPLE["folderName"], completed_at=EX_AT, files=files),
        EventType.GROUP_FAILED: GroupEndedData(session_id=EX_SID, status="failed", video_name="My Spatial Video",
                                               reason="size_mismatch", upload_id=EX_UIDS[0]),
        EventType.GROUP_EXPIRED: GroupEndedData(session_id=EX_SID, status="expired", video_name="My Spatial Video",
                                                reason=None, upload_id=None),
        EventType.GROUP_CANCELED: GroupEndedData(session_id=EX_SID, status="canceled", video_name="My Spatial Video",
                                                 reason=None, upload_id=None),
        EventType.FILE_COMPLETED: FileCompletedData(session_id=EX_SID, status="uploading", file=files[0]),
        EventType.TEST: TestData(endpoint_id=EX_ENDPOINT, message="A test event sent on request; nothing happened "
                                 "to any upload."),
    }  # fmt: skip
    out = {}
    for etype, d in data.items():
        uid = EX_UIDS[0] if etype is EventType.FILE_COMPLETED else ""
        doc = EVENT_DOCUMENTS[etype](id=event_id(etype, EX_SID, uid), type=etype.value, timestamp=EX_AT, data=d)  # type: ignore[call-arg]
        out[etype] = msgspec.to_builtins(doc)
    return out


EVENT_EXAMPLES = _event_examples()
_HEADERS = {
    "webhook-id": "The event's id: the same on every retry and redelivery (deduplicate on it).",
    "webhook-timestamp": "When this attempt was sent, in Unix seconds (reject ones far from now: replays).",
    "webhook-signature": "`v1,<base64 HMAC-SHA256 of {webhook-id}.{webhook-timestamp}.{body}>` keyed with the "
    "secret's base64-decoded part; during a secret rotation two, space-separated: accept either.",
}


def _event_operation(etype: EventType) -> Operation:
    model = EVENT_DOCUMENTS[etype]
    doc = msgspec.json.schema(model)
    data_doc = {f.name: f.type for f in msgspec.structs.fields(model)}["data"].__doc__ or ""
    text = Schema(type=OpenAPIType.STRING)
    headers = [Parameter(name=n, param_in="header", required=True, description=d, schema=text)
               for n, d in _HEADERS.items()]  # fmt: skip
    return Operation(
        summary=etype.value, operation_id=etype.value.replace(".", "_"), tags=[WEBHOOKS_TAG],
        description=data_doc.partition(": ")[2] + " POSTed to every enabled endpoint of the account that wants this "
        "type, signed per Standard Webhooks, at least once (retried on the schedule until a 2xx).",
        parameters=list(headers),
        request_body=RequestBody(required=True, content={JSON: OpenAPIMediaType(
            schema=_openapi_schema(doc, doc.get("$defs", {})),
            examples={etype.value: Example(summary=etype.value, value=EVENT_EXAMPLES[etype])})}),
        responses={
            "200": OpenAPIResponse(description="Any 2xx: delivered (the body is read up to 64 KiB and ignored)."),
            "410": OpenAPIResponse(description="Gone: the endpoint is disabled; no more deliveries until re-enabled."),
            "429": OpenAPIResponse(description="Retried on the schedule, not before Retry-After (also on 503).",
                                   headers={"Retry-After": OpenAPIHeader(schema=Schema(type=OpenAPIType.STRING))}),
            "default": OpenAPIResponse(description="Anything else, a redirect or no answer within 15 s: retried."),
        },
    )  # fmt: skip


def with_webhooks(config: OpenAPIConfig) -> OpenAPIConfig:
    """The OpenAPI config with the `webhooks` section and the webhooks tag."""
    hooks: dict[str, Any] = {t.value: PathItem(post=_event_operation(t)) for t in EventType}
    tag = Tag(name=WEBHOOKS_TAG, description="Webhook endpoints per account (admin role), their delivery logs, "
              "redelivery; and the events they receive (the `webhooks` section).")  # fmt: skip
    config.webhooks = hooks
    config.tags = [*(config.tags or []), tag]
    return config
