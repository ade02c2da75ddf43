"""Baseline for bench_start.py: a bare Litestar app with only the Start Upload Group route and no Redis.

It decodes the body with msgspec and answers a canned 201 of the same size as the real one (file in BENCH_BARE_ANSWER).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, post

ANSWER_ENV = "BENCH_BARE_ANSWER"
"""Path of a file holding a captured 201 answer: first line the Location header, then the JSON body."""


class BareFile(msgspec.Struct, rename="camel"):
    """One file of the seed request."""

    file_name: str
    file_role: str
    size_bytes: int
    language_tag: str | None = None


class BareStart(msgspec.Struct, rename="camel"):
    """The start request, typed just enough to make msgspec do real decoding work."""

    video_name: str
    layout: str
    files: list[BareFile]
    description: str | None = None
    perspective: str | None = None
    folder_name: str | None = None


def _load_answer() -> tuple[str, bytes]:
    path = os.environ.get(ANSWER_ENV)
    if not path:
        raise RuntimeError(f"set {ANSWER_ENV} to a file with a captured answer (bench_start.py does this)")
    location, _, body = Path(path).read_bytes().partition(b"\n")
    return location.decode(), body


LOCATION, ANSWER = _load_answer()
_decoder = msgspec.json.Decoder(BareStart)


@post("/api/videos/uploads", status_code=201)
async def start_upload_group(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Read and decode the body, then answer the pre-built 201."""
    _decoder.decode(await request.body())
    return Response(content=ANSWER, status_code=201, media_type="application/json", headers={"Location": LOCATION})


app = Litestar(route_handlers=[start_upload_group])
