"""Health probes, Prometheus metrics and the OpenAPI document, against the real Valkey and moto."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from app.domain.clock import now_ms
from app.http.metrics import F_GROUPS_COMPLETED, F_GROUPS_EXPIRED
from app.settings import Settings
from app.state.keys import EXPIRY_INDEX, METRICS_KEY, job_field
from app.storage.s3 import ObjectStore
from deploy.local.devstack import free_port
from tests.conftest import SEED_REQUEST
from tests.integration.conftest import api_client
from tests.processes import eventually

URL = "/api/videos/uploads"
FILE = "/api/videos/uploads/{session_id}/files/{upload_id}"
PROBLEM = "application/problem+json"
Client = httpx.AsyncClient


def h(key: str, **extra: str) -> dict[str, str]:
    return {"X-SPATIALGEN-APPKEY": key, "Content-Type": "application/json", **extra}


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never answers: a hung Redis or S3."""
    writers: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for w in writers:
            w.close()
        await server.wait_closed()


LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def samples(text: str) -> dict[str, float]:
    """Prometheus text format as {'name{labels}': value}, labels in name order (as `series` writes them)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            name, _, labels = series.partition("{")
            canonical = ",".join(f'{k}="{v}"' for k, v in sorted(LABEL.findall(labels)))
            out[f"{name}{{{canonical}}}" if canonical else name] = float(value)
    return out


def series(name: str, **labels: str) -> str:
    """A sample's key in `samples`."""
    return f"{name}{{{','.join(f'{k}={chr(34)}{v}{chr(34)}' for k, v in sorted(labels.items()))}}}"


def requests_series(route: str, method: str, status: int) -> str:
    return series("spatialgen_http_requests_total", route=route, method=method, status=str(status))


# ---------------------------------------------------------------------------------------------
# Health
# ---------------------------------------------------------------------------------------------
async def test_live_and_ready(client: Client, store: ObjectStore) -> None:
    r = await client.get("/health/live")
    assert r.status_code == 200 and r.json() == {"status": "ok"}

    async def storage_up() -> dict[str, Any] | None:
        r = await client.get("/health/ready")
        assert r.status_code == 200, r.text
        doc: dict[str, Any] = r.json()
        return doc if doc["checks"]["storage"] == "ok" else None

    # The first probes may find the storage client still being created ("starting"); readiness is 200 anyway.
    doc = await eventually(storage_up, within=30)
    assert doc == {
        "status": "ready",
        "checks": {"redis": "ok", "storage": "ok", "evictionPolicy": "ok", "redisIdentity": "ok"},
    }


@pytest.mark.parametrize(("redis_mode", "storage_mode"), [("dead", "dead"), ("hang", "hang"), ("hang", "ok")])
async def test_ready_is_a_fast_503_when_redis_is_down_or_hangs(
    settings: Settings, store: ObjectStore, redis: Redis, redis_mode: str, storage_mode: str
) -> None:
    async with silent_server() as hung_port:
        port = {"dead": free_port(), "hang": hung_port}
        changes: dict[str, Any] = {"redis_url": f"redis://127.0.0.1:{port[redis_mode]}/0"}
        if storage_mode != "ok":
            changes["s3_endpoint_url"] = f"http://127.0.0.1:{port[storage_mode]}"
        async with api_client(settings.override(**changes)) as c:
            for _ in range(2):
                # The probe's bound shows in the answer ("timeout" for a hung Redis); wait_for only catches a
                # real hang, it is no timing threshold.
                r = await asyncio.wait_for(c.get("/health/ready"), 10)
                assert r.status_code == 503, r.text
                assert r.headers["content-type"].startswith(PROBLEM) and r.headers["retry-after"] == "5"
                doc = r.json()
                assert doc["code"] == "dependency_unavailable" and doc["instance"] == "/health/ready"
                got = doc["checks"]["redis"]
                assert got == "timeout" if redis_mode == "hang" else got.startswith("error: ")
                assert f"redis {got}" in doc["detail"]
                assert doc["checks"]["storage"] != "ok" or storage_mode == "ok"


@pytest.mark.parametrize("storage_mode", ["dead", "hang"])
async def test_storage_trouble_is_reported_but_keeps_the_process_ready(
    settings: Settings, store: ObjectStore, redis: Redis, storage_mode: str
) -> None:
    async with silent_server() as hung_port:
        port = {"dead": free_port(), "hang": hung_port}[storage_mode]
        async with api_client(settings.override(s3_endpoint_url=f"http://127.0.0.1:{port}")) as c:

            async def judged() -> dict[str, Any] | None:
                r = await asyncio.wait_for(c.get("/health/ready"), 10)
                assert r.status_code == 200, r.text  # an S3 outage never takes the API out of rotation
                doc: dict[str, Any] = r.json()
                return doc if doc["checks"]["storage"] != "starting" else None

            doc = await eventually(judged, within=30)
    got = doc["checks"]["storage"]
    assert got == "timeout" if storage_mode == "hang" else got.startswith("error: ")
    assert doc["checks"]["redis"] == "ok"


async def test_one_result_answers_every_probe_for_a_second(client: Client, redis: Redis) -> None:
    await client.get("/health/ready")
    before = int((await redis.info("stats"))["total_commands_processed"])
    answers = await asyncio.gather(*(client.get("/health/ready") for _ in range(50)))
    after = int((await redis.info("stats"))["total_commands_processed"])
    assert {a.status_code for a in answers} == {200}
    assert after - before <= 4  # at most one fresh check (PING + INFO) behind 50 probes, plus this test's INFO


async def test_readiness_reports_an_evicting_redis(client: Client, redis: Redis) -> None:
    await redis.config_set("maxmemory-policy", "allkeys-lru")
    try:
        await asyncio.sleep(1.1)  # past the shared result's second
        doc = (await client.get("/health/ready")).json()
    finally:
        await redis.config_set("maxmemory-policy", "noeviction")
    assert doc["checks"]["evictionPolicy"] == "allkeys-lru (must be noeviction)"


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------
async def test_metrics_count_by_route_template_and_read_shared_counts(
    client: Client, upload_key: str, redis: Redis, settings: Settings
) -> None:
    r = await client.post(URL, json=SEED_REQUEST, headers=h(upload_key))
    assert r.status_code == 201
    sid = r.json()["sessionId"]
    assert (await client.get(f"{URL}/{sid}", headers=h(upload_key))).status_code == 200
    unknown = str(uuid.uuid4())
    assert (await client.get(f"{URL}/{unknown}", headers=h(upload_key))).status_code == 404
    assert (await client.post(f"{URL}/{unknown}/files/{unknown}/complete", headers=h(upload_key))).status_code == 404
    assert (await client.get(f"/api/nope/{unknown}")).status_code == 404
    # Two due upload jobs, a deferred one, a due processing job, and what the workers count.
    now = now_ms()
    await redis.zadd(settings.worker.queue_name, {"due-1": now - 5, "due-2": now - 1, "later": now + 600_000})
    await redis.zadd(settings.worker.processing_queue_name, {"process:x": now - 1})
    await redis.hset(
        METRICS_KEY,
        mapping={F_GROUPS_EXPIRED: 3, F_GROUPS_COMPLETED: 41, job_field("complete_file", "ok"): 5,
                 job_field("provision_group", "retried"): 2},
    )  # fmt: skip

    r = await client.get("/metrics")  # no API key needed
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert sid not in r.text and unknown not in r.text  # route templates only, never raw paths
    m = samples(r.text)
    assert m[requests_series(URL, "POST", 201)] == 1
    assert m[requests_series(f"{URL}/{{session_id}}", "GET", 200)] == 1
    assert m[requests_series(f"{URL}/{{session_id}}", "GET", 404)] == 1
    assert m[requests_series(f"{FILE}/complete", "POST", 404)] == 1
    assert m[requests_series("unmatched", "GET", 404)] == 1
    start = {"route": "/api/videos/uploads", "method": "POST"}
    buckets = [
        m[series("spatialgen_http_request_duration_seconds_bucket", le=le, **start)]
        for le in ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "+Inf")
    ]
    assert len([k for k in m if k.startswith("spatialgen_http_request_duration_seconds_bucket")
                and k.endswith(',method="POST",route="/api/videos/uploads"}')]) == 12  # fmt: skip
    assert len(buckets) == 12 and buckets == sorted(buckets) and buckets[-1] == 1
    assert m[series("spatialgen_http_request_duration_seconds_count", **start)] == 1
    assert 0 < m[series("spatialgen_http_request_duration_seconds_sum", **start)] < 5

    # Queue depths are what Redis holds (a create and a read of a group with no URLs issued queue nothing).
    due = m[f'spatialgen_queue_depth{{queue="{settings.worker.queue_name}",state="due"}}']
    assert due == 2 == await redis.zcount(settings.worker.queue_name, "-inf", now_ms())
    assert m[f'spatialgen_queue_depth{{queue="{settings.worker.queue_name}",state="scheduled"}}'] == 1
    assert m[f'spatialgen_queue_depth{{queue="{settings.worker.processing_queue_name}",state="due"}}'] == 1
    assert m[f'spatialgen_queue_depth{{queue="{settings.worker.processing_queue_name}",state="scheduled"}}'] == 0
    assert m["spatialgen_groups_live"] == 1 == await redis.zcard(EXPIRY_INDEX)
    assert m["spatialgen_groups_created_total"] == 1
    assert m["spatialgen_groups_completed_total"] == 41
    assert m["spatialgen_groups_expired_total"] == 3
    assert m['spatialgen_jobs_total{function="complete_file",outcome="ok"}'] == 5
    assert m['spatialgen_jobs_total{function="provision_group",outcome="retried"}'] == 2
    assert m['spatialgen_file_completions_total{outcome="session_not_found"}'] == 1
    assert m["spatialgen_state_store_up"] == 1

    # A scrape is counted once it has been answered.
    m = samples((await client.get("/metrics")).text)
    assert m[requests_series("/metrics", "GET", 200)] == 1


async def test_created_and_canceled_counters_skip_replays_and_repeats(client: Client, upload_key: str) -> None:
    first = await client.post(URL, json=SEED_REQUEST, headers=h(upload_key, **{"Idempotency-Key": "k"}))
    replay = await client.post(URL, json=SEED_REQUEST, headers=h(upload_key, **{"Idempotency-Key": "k"}))
    assert first.status_code == replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
    sid = first.json()["sessionId"]
    for _ in range(2):
        assert (await client.delete(f"{URL}/{sid}", headers=h(upload_key))).status_code == 200
    m = samples((await client.get("/metrics")).text)
    assert m[requests_series(URL, "POST", 201)] == 2
    assert m["spatialgen_groups_created_total"] == 1
    assert m[requests_series(f"{URL}/{{session_id}}", "DELETE", 200)] == 2
    assert m["spatialgen_groups_canceled_total"] == 1
    assert m["spatialgen_groups_live"] == 0


@pytest.mark.parametrize("mode", ["dead", "hang"])
async def test_metrics_answer_fast_without_redis(settings: Settings, mode: str) -> None:
    async with silent_server() as hung_port:
        port = free_port() if mode == "dead" else hung_port
        async with api_client(settings.override(redis_url=f"redis://127.0.0.1:{port}/0")) as c:
            await c.get("/health/live")
            r = await asyncio.wait_for(c.get("/metrics"), 10)  # catches a hang; no timing threshold
    assert r.status_code == 200
    m = samples(r.text)
    assert m["spatialgen_state_store_up"] == 0
    assert m[requests_series("/health/live", "GET", 200)] == 1
    assert not any(k.startswith(("spatialgen_queue_depth", "spatialgen_groups_live")) for k in m)


# ---------------------------------------------------------------------------------------------
# OpenAPI
# ---------------------------------------------------------------------------------------------
OPERATIONS = {
    ("post", URL),
    ("post", "/api/videos/uploads/{session_id}/files/{upload_id}/part-urls"),
    ("post", "/api/videos/uploads/{session_id}/files/{upload_id}/complete"),
    ("delete", "/api/videos/uploads/{session_id}"),
    ("get", "/api/videos/uploads/{session_id}"),
    ("get", "/api/videos/uploads/{session_id}/files/{upload_id}/parts"),
    ("get", "/health/live"),
    ("get", "/health/ready"),
    ("get", "/metrics"),
    ("post", "/api/webhooks"),
    ("get", "/api/webhooks"),
    ("get", "/api/webhooks/{endpoint_id}"),
    ("patch", "/api/webhooks/{endpoint_id}"),
    ("delete", "/api/webhooks/{endpoint_id}"),
    ("post", "/api/webhooks/{endpoint_id}/rotate-secret"),
    ("post", "/api/webhooks/{endpoint_id}/test"),
    ("get", "/api/webhooks/{endpoint_id}/deliveries"),
    ("post", "/api/webhooks/{endpoint_id}/redeliver"),
}


async def test_openapi_document_describes_every_endpoint_and_error(client: Client) -> None:
    r = await client.get("/schema/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["info"]["title"] == "SpatialGen Direct Upload API"
    assert doc["info"]["version"] and "X-SPATIALGEN-APPKEY" in doc["info"]["description"]
    assert {(m, p) for p, item in doc["paths"].items() for m in item} == OPERATIONS
    scheme = doc["components"]["securitySchemes"]["apiKey"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "X-SPATIALGEN-APPKEY")

    for method, path in OPERATIONS:
        op = doc["paths"][path][method]
        assert op["summary"] and op["description"] and op["operationId"], (method, path)
        if path.startswith("/api/"):
            assert op["security"] == [{"apiKey": []}]
            assert {"401", "429", "503"} <= set(op["responses"])
        else:
            assert "security" not in op
        for status, response in op["responses"].items():
            assert response["description"]
            if status.startswith(("4", "5")):
                assert list(response["content"]) == [PROBLEM], (method, path, status)
                examples = response["content"][PROBLEM]["examples"]
                for name, example in examples.items():
                    value = example["value"]
                    assert value["status"] == int(status) and value["type"].endswith(value["code"])
                    assert name == value["code"] or name == "not-ready"
            else:
                assert response["content"], (method, path, status)
                assert all(media["examples"] for media in response["content"].values()), (method, path, status)
            if status in {"429", "503"}:
                assert "Retry-After" in response["headers"]

    start = doc["paths"][URL]["post"]
    body = start["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["examples"]["seed-request"]["value"] == SEED_REQUEST
    schema = body["content"]["application/json"]["schema"]
    assert set(schema["required"]) == {"videoName", "layout", "files"} and schema["additionalProperties"] is False
    assert set(schema["properties"]["files"]["items"]["required"]) == {"fileName", "fileRole", "sizeBytes"}
    assert {"Location", "Idempotent-Replayed"} <= set(start["responses"]["201"]["headers"])
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in start["parameters"])
    assert set(start["responses"]) == {"201", "400", "401", "403", "409", "413", "415", "429", "503"}
    assert set(start["responses"]["429"]["content"][PROBLEM]["examples"]) == {"rate_limited", "quota_exceeded"}
    assert set(start["responses"]["400"]["content"][PROBLEM]["examples"]) == {
        "invalid_request", "malformed_json", "invalid_header", "checksum_unsupported",
    }  # fmt: skip


async def test_openapi_document_describes_the_upload_steps(client: Client) -> None:
    doc = (await client.get("/schema/openapi.json")).json()
    part_urls = doc["paths"]["/api/videos/uploads/{session_id}/files/{upload_id}/part-urls"]["post"]
    props = part_urls["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert set(props) == {"partNumbers", "startPartNumber", "count", "checksumAlgorithm", "checksums"}
    assert set(part_urls["responses"]["503"]["content"][PROBLEM]["examples"]) == {
        "storage_not_ready", "dependency_unavailable",
    }  # fmt: skip
    complete = doc["paths"]["/api/videos/uploads/{session_id}/files/{upload_id}/complete"]["post"]
    assert set(complete["requestBody"]["content"]["application/json"]["schema"]["properties"]) == {"parts", "checksum"}
    assert {"200", "202"} <= set(complete["responses"])
    assert {"missing_parts", "checksum_mismatch"} <= set(complete["responses"]["409"]["content"][PROBLEM]["examples"])
    params = doc["paths"]["/api/videos/uploads/{session_id}/files/{upload_id}/parts"]["get"]["parameters"]
    assert {p["name"] for p in params} == {"session_id", "upload_id"} and all(p["description"] for p in params)
    assert set(doc["paths"]["/health/ready"]["get"]["responses"]) == {"200", "503"}
    assert {"type", "title", "status", "detail", "code"} <= set(doc["components"]["schemas"]["Problem"]["required"])


async def test_openapi_document_describes_the_checksum_errors(client: Client) -> None:
    doc = (await client.get("/schema/openapi.json")).json()
    part_urls = doc["paths"]["/api/videos/uploads/{session_id}/files/{upload_id}/part-urls"]["post"]
    examples = {
        code for status in ("400", "409") for code in part_urls["responses"][status]["content"][PROBLEM]["examples"]
    }
    assert {"checksum_unsupported", "checksum_required", "checksum_algorithm_required",
            "checksum_algorithm_conflict"} <= examples  # fmt: skip
    answers = part_urls["responses"]["200"]["content"]["application/json"]["examples"]
    assert "x-amz-checksum-crc64nvme" in answers["part-urls-with-checksums"]["value"]["parts"][0]["headers"]


async def test_openapi_document_is_valid_openapi_3_1(client: Client) -> None:
    validator = pytest.importorskip("openapi_spec_validator")  # installed with moto[server]
    doc = (await client.get("/schema/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    validator.validate(doc)


async def test_openapi_examples_match_real_answers(client: Client, upload_key: str) -> None:
    doc = (await client.get("/schema/openapi.json")).json()
    start = doc["paths"][URL]["post"]["responses"]
    example = start["201"]["content"]["application/json"]["examples"]["created"]["value"]
    real = (await client.post(URL, json=SEED_REQUEST, headers=h(upload_key))).json()
    assert list(example) == list(real)

    def without_ids(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in f.items() if k != "uploadId"} for f in files]

    assert without_ids(example["files"]) == without_ids(real["files"])
    bad = {**SEED_REQUEST, "layout": "3D"}
    problem = (await client.post(URL, json=bad, headers=h(upload_key))).json()
    documented = start["400"]["content"][PROBLEM]["examples"]["invalid_request"]["value"]
    assert list(documented) == list(problem)


async def test_docs_ui(client: Client) -> None:
    r = await client.get("/schema")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in r.text and "SpatialGen Direct Upload API" in r.text
    r = await client.get("/schema/redoc")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")


ASSET = re.compile(r"""<(?:script|link)\b[^>]*\b(?:src|href)=["']([^"']+)["']""")


@pytest.mark.parametrize(("page", "wanted"), [("/schema", ("swagger-ui-bundle.js", "swagger-ui.css")),
                                              ("/schema/redoc", ("redoc.standalone.js",))])  # fmt: skip
async def test_docs_pages_load_everything_from_the_api_itself(
    client: Client, page: str, wanted: tuple[str, ...]
) -> None:
    """No CDN: offline, or behind an egress policy, the docs pages still render (every script, style sheet and
    icon they reference is served by the API)."""
    html = (await client.get(page)).text
    assets = ASSET.findall(html)
    assert all(any(a.endswith(name) for a in assets) for name in wanted), assets
    assert [a for a in assets if not a.startswith("/schema/static/")] == [], "every asset from the API itself"
    assert "fonts.googleapis.com" not in html and "cdn." not in html
    for asset in assets:
        r = await client.get(asset)
        assert r.status_code == 200 and len(r.content) > 100, asset
        kind = {".js": "javascript", ".css": "text/css", ".png": "image/png"}[asset[asset.rindex(".") :]]
        assert kind in r.headers["content-type"], (asset, r.headers["content-type"])


async def test_options_allow_lists_every_method_of_the_path(client: Client) -> None:
    """Litestar 2 lists only the first handler's methods (GET and DELETE share a path here); ours lists all."""
    doc = (await client.get("/schema/openapi.json")).json()
    for template, item in doc["paths"].items():
        path = template.replace("{session_id}", str(uuid.uuid4())).replace("{upload_id}", str(uuid.uuid4()))
        r = await client.options(path)
        assert r.status_code == 204, (path, r.status_code)
        allowed = sorted(m.strip() for m in r.headers["allow"].split(","))
        assert allowed == sorted({m.upper() for m in item} | {"OPTIONS"}), (template, r.headers["allow"])


BODY_ROUTES = [URL, FILE + "/part-urls", FILE + "/complete"]


@pytest.mark.parametrize("route", BODY_ROUTES)
async def test_every_route_that_takes_a_body_answers_and_documents_413(
    client: Client, settings: Settings, upload_key: str, route: str
) -> None:
    doc = (await client.get("/schema/openapi.json")).json()
    op = doc["paths"][route]["post"]
    assert "requestBody" in op
    examples = op["responses"]["413"]["content"][PROBLEM]["examples"]
    assert set(examples) == {"body_too_large"}
    path = route.format(session_id=uuid.uuid4(), upload_id=uuid.uuid4())
    too_big = b'{"parts": [' + b'{"partNumber": 1, "etag": "x"},' * (settings.api.max_body_bytes // 30) + b"]}"
    r = await client.post(path, content=too_big, headers=h(upload_key))
    assert r.status_code == 413 and r.json()["code"] == "body_too_large", r.text
    # Every operation with a body documents it; none without one does.
    for item in doc["paths"].values():
        for operation in item.values():
            assert ("413" in operation["responses"]) == ("requestBody" in operation), operation["operationId"]


async def test_metrics_include_process_figures_and_speak_openmetrics_when_asked(client: Client) -> None:
    m = samples((await client.get("/metrics")).text)
    assert m["process_cpu_seconds_total"] > 0 and m["process_resident_memory_bytes"] > 0
    assert m["process_start_time_seconds"] > 1_700_000_000
    r = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.endswith("# EOF\n")
    assert "# TYPE spatialgen_http_requests counter" in r.text  # OpenMetrics names the family without _total
