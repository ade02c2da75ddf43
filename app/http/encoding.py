"""Content negotiation of the part-urls answer: gzip when the request's Accept-Encoding allows it (RFC 9110 12.5.3),
and the compact form when its Accept names that media type. Other answers are small and always identity-coded.
"""

from __future__ import annotations

import asyncio
import zlib

from app.domain.answers import COMPACT_PART_URLS

GZIP_LEVEL = 1
"""zlib level of gzip answers. On all 10,000 URLs of a file (tests/bench/bench_part_urls.py measures both), level 1
makes the 7.13 MB full form 0.71 MB and the 0.99 MB compact form 0.44 MB; level 6 takes 2-3x as long for 0.61 and
0.43 MB."""
THREAD_MIN_BYTES = 64 * 1024
"""Larger chunks are compressed off the event loop (zlib releases the GIL), so a 350 KB piece holds no request up."""
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer around the deflate stream


def _codings(header: str) -> dict[str, float]:
    """The codings of an Accept-Encoding (or media ranges of an Accept) value with their q values (absent: 1)."""
    out: dict[str, float] = {}
    for item in header.split(","):
        name, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0  # an unreadable weight is not an acceptance
        if name:
            out[name.lower()] = q
    return out


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an answer may be gzip-coded: `gzip` (or `x-gzip`) listed with q > 0, or `*` with q > 0 and gzip not
    refused by name. No header: identity (a client that sends none gets what it always got)."""
    if not accept_encoding:
        return False
    codings = _codings(accept_encoding)
    for name in ("gzip", "x-gzip"):
        if name in codings:
            return codings[name] > 0
    return codings.get("*", 0.0) > 0


def wants_compact(accept: str | None) -> bool:
    """Whether the request's Accept names the compact part-urls form (with q > 0)."""
    if not accept or COMPACT_PART_URLS not in accept.lower():
        return False
    return _codings(accept).get(COMPACT_PART_URLS, 0.0) > 0


class Gzip:
    """One gzip stream written piece by piece: each piece is flushed to a byte boundary (Z_SYNC_FLUSH), so the
    client can decode everything sent so far while the rest is still being signed."""

    __slots__ = ("_z",)

    def __init__(self) -> None:
        self._z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)

    async def piece(self, data: bytes) -> bytes:
        """`data` compressed and flushed (one piece at a time: the stream is not for concurrent use)."""
        if len(data) < THREAD_MIN_BYTES:
            return self._flushed(data)
        return await asyncio.to_thread(self._flushed, data)

    def end(self, data: bytes) -> bytes:
        """The last bytes of `data` and the gzip trailer."""
        return self._z.compress(data) + self._z.flush(zlib.Z_FINISH)

    def _flushed(self, data: bytes) -> bytes:
        return self._z.compress(data) + self._z.flush(zlib.Z_SYNC_FLUSH)


async def gzip_whole(body: bytes) -> bytes:
    """A whole answer gzip-coded (off the event loop when large)."""
    if len(body) < THREAD_MIN_BYTES:
        return zlib.compress(body, GZIP_LEVEL, _GZIP_WBITS)
    return await asyncio.to_thread(zlib.compress, body, GZIP_LEVEL, _GZIP_WBITS)
