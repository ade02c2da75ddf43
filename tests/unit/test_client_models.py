"""The uploader's copies of the answer documents (app/client/models.py) against the server's OpenAPI document.

The client keeps its own Structs (lenient: unknown fields ignored, so an older client reads a newer service). This
keeps them from drifting: every field the client reads is in the server's schema, with a type the client decodes,
and a field the client requires is one the server always sends.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec
import pytest

from app.client import models
from app.domain.answers import COMPACT_PART_URLS
from app.http.app import create_app
from app.settings import Settings

PAIRS = {
    models.GroupCreated: "UploadGroupCreated",
    models.PartUrls: "PartUrlsView",
    models.PartUrl: "PartUrl",
    models.CompletedFile: "CompletedFileView",
    models.CanceledGroup: "CanceledGroupView",
    models.FileProgress: "FileProgressView",
    models.GroupStatus: "GroupStatusView",
    models.ReceivedParts: "ReceivedPartsView",
    models.ReceivedPart: "ReceivedPart",
    models.FileView: "UploadFileView",
    models.CompactPartUrls: "CompactPartUrlsView",
    models.CompactPart: "CompactPart",
    models.ProblemDoc: "Problem",
    models.FieldProblem: "ProblemFieldError",
}
CLIENT_ONLY = {"replayed"}
"""Fields the client sets itself (GroupCreated.replayed comes from the Idempotent-Replayed header)."""


@functools.cache
def server_schemas() -> dict[str, Any]:
    doc = create_app(Settings()).openapi_schema.to_schema()
    schemas: dict[str, Any] = doc["components"]["schemas"]
    # The compact part-urls answer is described inline, as the operation's second media type.
    part_urls = doc["paths"]["/api/videos/uploads/{session_id}/files/{upload_id}/part-urls"]["post"]
    compact = part_urls["responses"]["200"]["content"][COMPACT_PART_URLS]["schema"]
    return {**schemas, "CompactPartUrlsView": compact, "CompactPart": compact["properties"]["parts"]["items"]}


def resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A schema node with a local $ref followed (OpenAPI components or msgspec $defs)."""
    ref = node.get("$ref")
    return resolve(defs[ref.rsplit("/", 1)[-1]], defs) if ref else node


def types(node: dict[str, Any], defs: dict[str, Any]) -> set[str]:
    """The JSON types a schema node admits."""
    node = resolve(node, defs)
    if "type" in node:
        return {node["type"]} if isinstance(node["type"], str) else set(node["type"])
    found: set[str] = set()
    for key in ("oneOf", "anyOf"):
        for option in node.get(key, []):
            found |= types(option, defs)
    return found or {"any"}


@pytest.mark.parametrize("client_model", PAIRS, ids=lambda m: m.__name__)
def test_every_field_the_client_reads_is_in_the_servers_document(client_model: type[msgspec.Struct]) -> None:
    ours = msgspec.json.schema(client_model)
    ours_defs = ours.get("$defs", {})
    ours = resolve(ours, ours_defs)
    theirs = server_schemas()[PAIRS[client_model]]
    server_props, server_required = theirs["properties"], set(theirs.get("required", []))
    where = client_model.__name__
    for name, prop in ours["properties"].items():
        if name in CLIENT_ONLY:
            continue
        assert name in server_props, f"{where}.{name}: the server never sends it"
        sent = types(server_props[name], server_schemas())
        read = types(prop, ours_defs)
        assert "any" in read or sent <= read, f"{where}.{name}: server sends {sent}, client reads {read}"
    for name in ours.get("required", []):
        assert name in server_required, f"{where}.{name}: required by the client, optional on the server"


def test_every_answer_document_has_a_client_copy() -> None:
    answers = {"UploadGroupCreated", "PartUrlsView", "CompletedFileView", "CanceledGroupView", "GroupStatusView",
               "ReceivedPartsView"}  # fmt: skip
    assert answers <= set(PAIRS.values()) and answers <= set(server_schemas())
