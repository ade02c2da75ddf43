"""The webhook routes (`/api/webhooks`, admin keys only): each authenticates, reads the body and calls
app/webhooks/endpoints.py for the caller's account; an endpoint of another account is a 404. OpenAPI declarations
are in app/http/webhook_openapi.py.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, delete, get, patch, post
from litestar.params import FromPath
from litestar.types import ASGIApp

from app.domain import errors
from app.domain.clock import now_ms
from app.domain.limits import RouteClass
from app.domain.webhooks import (
    DeliveryLogView,
    EndpointCreatedView,
    EndpointDeletedView,
    EndpointListView,
    EndpointView,
    QueuedView,
    SecretRotatedView,
)
from app.http.openapi import AUTH, BODY_ERRORS, SECURED, ApiOperation, operation, problems
from app.http.plumbing import authenticate, json_response, rate_headers, read_body, services
from app.http.webhook_openapi import (
    CREATE_BODY,
    EX_ENDPOINT,
    REDELIVER_BODY,
    UPDATE_BODY,
    WEBHOOKS_TAG,
    route_success,
)
from app.state.apikeys import ADMIN_ROLES, Principal
from app.webhooks import endpoints

_json = msgspec.json.Encoder()
BASE = "/api/webhooks"
ONE = BASE + "/{endpoint_id:str}"
EX_ONE = f"{BASE}/{EX_ENDPOINT}"
ADMIN_AUTH = (*AUTH, errors.ROLE_NOT_ALLOWED)
_ROLES = " Role: admin."


async def _admin(request: Request[Any, Any, Any]) -> Principal:
    return await authenticate(request, ADMIN_ROLES, RouteClass.WEBHOOKS)


def _answer(request: Request[Any, Any, Any], view: msgspec.Struct, status: int = 200) -> ASGIApp:
    return json_response(_json.encode(view), status, rate_headers(request))


@post(
    BASE, status_code=201, tags=[WEBHOOKS_TAG], security=SECURED, operation_id="createWebhookEndpoint",
    summary="Create Webhook Endpoint",
    description="Register an endpoint for the account's events. The answer holds its signing secret, shown only "
    "this once (and at rotation): keep it to verify deliveries." + _ROLES,
    operation_class=operation(body=CREATE_BODY),
    responses={201: route_success(EndpointCreatedView, "The endpoint, with its secret.", "created"),
               **problems(BASE, *BODY_ERRORS, *ADMIN_AUTH, errors.WEBHOOK_LIMIT_REACHED,
                          errors.DEPENDENCY_UNAVAILABLE)},
)  # fmt: skip
async def create_webhook(request: Request[Any, Any, Any]) -> ASGIApp:
    """Register an endpoint."""
    who = await _admin(request)
    svc = services(request)
    view = await endpoints.create(svc.webhooks, svc.settings, who.account, await read_body(request), now_ms())
    return _answer(request, view, 201)


@get(
    BASE, tags=[WEBHOOKS_TAG], security=SECURED, operation_id="listWebhookEndpoints", summary="List Webhook Endpoints",
    description="The account's endpoints (never their secrets), with why the service disabled any." + _ROLES,
    operation_class=ApiOperation,
    responses={200: route_success(EndpointListView, "The account's endpoints.", "list"),
               **problems(BASE, *ADMIN_AUTH, errors.DEPENDENCY_UNAVAILABLE, method="GET")},
)  # fmt: skip
async def list_webhooks(request: Request[Any, Any, Any]) -> ASGIApp:
    """The account's endpoints."""
    who = await _admin(request)
    return _answer(request, await endpoints.list_endpoints(services(request).webhooks, who.account, now_ms()))


@get(
    ONE, tags=[WEBHOOKS_TAG], security=SECURED, operation_id="getWebhookEndpoint", summary="Get Webhook Endpoint",
    description="One endpoint: its settings and delivery health (failing since, disabled reason)." + _ROLES,
    operation_class=ApiOperation,
    responses={200: route_success(EndpointView, "The endpoint.", "endpoint", "disabled"),
               **problems(EX_ONE, *ADMIN_AUTH, errors.WEBHOOK_NOT_FOUND, errors.DEPENDENCY_UNAVAILABLE, method="GET")},
)  # fmt: skip
async def get_webhook(request: Request[Any, Any, Any], endpoint_id: FromPath[str]) -> ASGIApp:
    """One endpoint."""
    who = await _admin(request)
    found = await endpoints.load(services(request).webhooks, who.account, endpoint_id)
    return _answer(request, endpoints.view(found, now_ms()))


@patch(
    ONE, tags=[WEBHOOKS_TAG], security=SECURED, operation_id="updateWebhookEndpoint",
    summary="Update Webhook Endpoint",
    description="Change the URL, event types, description or enabled flag. Enabling an endpoint the service "
    "disabled clears the reason; events of the time it was disabled can then be redelivered." + _ROLES,
    operation_class=operation(body=UPDATE_BODY),
    responses={200: route_success(EndpointView, "The endpoint as changed.", "endpoint"),
               **problems(EX_ONE, *BODY_ERRORS, *ADMIN_AUTH, errors.WEBHOOK_NOT_FOUND, errors.DEPENDENCY_UNAVAILABLE,
                          method="PATCH")},
)  # fmt: skip
async def update_webhook(request: Request[Any, Any, Any], endpoint_id: FromPath[str]) -> ASGIApp:
    """Change an endpoint."""
    who = await _admin(request)
    svc = services(request)
    body = await read_body(request)
    view = await endpoints.update(svc.webhooks, svc.settings, who.account, endpoint_id, body, now=now_ms())
    return _answer(request, view)


@delete(
    ONE, status_code=200, tags=[WEBHOOKS_TAG], security=SECURED, operation_id="deleteWebhookEndpoint",
    summary="Delete Webhook Endpoint",
    description="Delete the endpoint and its delivery log; deliveries still queued for it are dropped." + _ROLES,
    operation_class=ApiOperation,
    responses={200: route_success(EndpointDeletedView, "Deleted.", "deleted"),
               **problems(EX_ONE, *ADMIN_AUTH, errors.WEBHOOK_NOT_FOUND, errors.DEPENDENCY_UNAVAILABLE,
                          method="DELETE")},
)  # fmt: skip
async def delete_webhook(request: Request[Any, Any, Any], endpoint_id: FromPath[str]) -> ASGIApp:
    """Delete an endpoint."""
    who = await _admin(request)
    await endpoints.delete(services(request).webhooks, who.account, endpoint_id)
    return _answer(request, EndpointDeletedView(endpoint_id=endpoint_id, deleted=True))


@post(
    ONE + "/rotate-secret", status_code=200, tags=[WEBHOOKS_TAG], security=SECURED,
    operation_id="rotateWebhookSecret", summary="Rotate Webhook Secret",
    description="A new signing secret, shown this once. Until `previousSecretValidUntil` every delivery carries both "
    "signatures, so receivers can switch without missing one." + _ROLES,
    operation_class=ApiOperation,
    responses={200: route_success(SecretRotatedView, "The new secret.", "rotated"),
               **problems(f"{EX_ONE}/rotate-secret", *ADMIN_AUTH, errors.WEBHOOK_NOT_FOUND,
                          errors.DEPENDENCY_UNAVAILABLE)},
)  # fmt: skip
async def rotate_webhook_secret(request: Request[Any, Any, Any], endpoint_id: FromPath[str]) -> ASGIApp:
    """Rotate an endpoint's secret."""
    who = await _admin(request)
    svc = services(request)
    return _answer(request, await endpoints.rotate_secret(svc.webhooks, svc.settings, who.account, endpoint_id,
                                                          now_ms()))  # fmt: skip


@post(
    ONE + "/test", status_code=202, tags=[WEBHOOKS_TAG], security=SECURED, operation_id="sendWebhookTest",
    summary="Send Test Event",
    description="Queue a `webhook.test` event to this endpoint (even a disabled one); its attempts appear in the "
    "delivery log." + _ROLES,
    operation_class=ApiOperation,
    responses={202: route_success(QueuedView, "Queued.", "queued"),
               **problems(f"{EX_ONE}/test", *ADMIN_AUTH, errors.WEBHOOK_NOT_FOUND, errors.DEPENDENCY_UNAVAILABLE)},
)  # fmt: skip
async def send_webhook_test(request: Request[Any, Any, Any], endpoint_id: FromPath[str]) -> ASGIApp:
    """Send a test event."""
    who = await _admin(request)
    return _answer(request, await endpoints.send_test(services(request).webhooks, who.account, endpoint_id, now_ms()),
                   202)  # fmt: skip


@get(
    ONE + "/deliveries", tags=[WEBHOOKS_TAG], security=SECURED, operation_id="getWebhookDeliveries",
    summary="Get Webhook Delivery Log",
    description="The endpoint's health and its last 100 delivery attempts, newest first: time, outcome, HTTP "
    "status, latency, error and when the next attempt is due." + _ROLES,
    operation_class=ApiOperation,
    responses={200: route_success(DeliveryLogView, "The delivery log.", "deliveries"),
               **problems(f"{EX_ONE}/deliveries", *ADMIN_AUTH, errors.WEBHOOK_NOT_FOUND,
                          errors.DEPENDENCY_UNAVAILABLE, method="GET")},
)  # fmt: skip
async def webhook_deliveries(request: Request[Any, Any, Any], endpoint_id: FromPath[str]) -> ASGIApp:
    """The delivery log."""
    who = await _admin(request)
    return _answer(request, await endpoints.deliveries(services(request).webhooks, who.account, endpoint_id,
                                                       now_ms()))  # fmt: skip


@post(
    ONE + "/redeliver", status_code=202, tags=[WEBHOOKS_TAG], security=SECURED, operation_id="redeliverWebhookEvents",
    summary="Redeliver Events",
    description="Deliver one event again, or every event of a time range that the endpoint wants (events are kept "
    "30 days): a new series of attempts with the same `webhook-id`." + _ROLES,
    operation_class=operation(body=REDELIVER_BODY),
    responses={202: route_success(QueuedView, "Queued.", "queued"),
               **problems(f"{EX_ONE}/redeliver", *BODY_ERRORS, *ADMIN_AUTH, errors.WEBHOOK_NOT_FOUND,
                          errors.EVENT_NOT_FOUND, errors.DEPENDENCY_UNAVAILABLE)},
)  # fmt: skip
async def redeliver_webhook_events(request: Request[Any, Any, Any], endpoint_id: FromPath[str]) -> ASGIApp:
    """Redeliver events."""
    who = await _admin(request)
    svc = services(request)
    body = await read_body(request)
    view = await endpoints.redeliver(svc.webhooks, svc.settings, who.account, endpoint_id, body, now=now_ms())
    return _answer(request, view, 202)


WEBHOOK_ROUTES = [create_webhook, list_webhooks, get_webhook, update_webhook, delete_webhook, rotate_webhook_secret,
                  send_webhook_test, webhook_deliveries, redeliver_webhook_events]  # fmt: skip
