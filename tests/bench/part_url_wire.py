"""The part-urls answer on the wire, for bench_part_urls.py: every URL of one file asked for in each form (full or
compact, identity or gzip), alternating; time to the last byte at the client, body bytes as sent, and what the
uploader spends reading each (gunzip, decode, expand). Ratios are against the identity full form of the same run.
Also zlib level 1 against 6 on the same answers, in this process, piece by piece as the server compresses them.
"""

from __future__ import annotations

import gzip
import http.client
import statistics
import time
import zlib
from dataclasses import dataclass, field

import msgspec

from app.client.models import CompactPartUrls, PartUrls
from app.domain.answers import COMPACT_PART_URLS
from app.storage.signer import PIECE_PARTS
from tests.bench.bench_start import tree_cpu_seconds

FORMS = {
    "identity": {},
    "gzip": {"Accept-Encoding": "gzip"},
    "compact": {"Accept": COMPACT_PART_URLS},
    "compact+gzip": {"Accept": COMPACT_PART_URLS, "Accept-Encoding": "gzip"},
}
"""The request headers of each form (what the uploader sends: compact+gzip)."""
TARGET_BYTES = 1.5e6
TARGET_MS = 50.0


@dataclass
class Form:
    """What one form cost, over the runs."""

    seconds: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0  # the server's (API process and its signing helper), over the runs
    read_seconds: list[float] = field(default_factory=list)
    body_bytes: int = 0
    plain: bytes = b""  # the last answer, decoded from gzip


def post(
    conn: http.client.HTTPConnection, path: str, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes, float]:
    """Status, headers, body as sent (http.client does not undo a Content-Encoding) and seconds to its last byte."""
    started = time.perf_counter()
    conn.request("POST", path, body=b"", headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, time.perf_counter() - started


def read(headers: dict[str, str], body: bytes) -> tuple[PartUrls, bytes]:
    """The answer as the uploader reads it (app/client/api.py), and its plain JSON."""
    plain = gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body
    if headers.get("content-type", "").startswith(COMPACT_PART_URLS):
        return msgspec.json.decode(plain, type=CompactPartUrls).expand(), plain
    return msgspec.json.decode(plain, type=PartUrls), plain


def measure_wire(
    port: int, api_key: str, path: str, total_parts: int, repeats: int, server_pid: int
) -> dict[str, Form]:
    """Each form `repeats` times, in rotating order so drift hits all alike, after one warm-up round; the server's
    CPU per request too (it varies less than wall time when other work shares the cores)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    base = {"Content-Type": "application/json", "X-SPATIALGEN-APPKEY": api_key}
    forms = {name: Form() for name in FORMS}
    names = list(FORMS)
    try:
        for run in range(repeats + 1):
            for name in names[run % len(names) :] + names[: run % len(names)]:
                cpu = tree_cpu_seconds(server_pid)
                status, headers, body, seconds = post(conn, path, {**base, **FORMS[name]})
                cpu = tree_cpu_seconds(server_pid) - cpu
                if status != 200:
                    raise SystemExit(f"part-urls ({name}) answered {status}: {body[:300]!r}")
                started = time.perf_counter()
                answer, plain = read(headers, body)
                read_s = time.perf_counter() - started
                if len(answer.parts) != total_parts or ("gzip" in name) != (headers.get("content-encoding") == "gzip"):
                    raise SystemExit(f"part-urls ({name}): {len(answer.parts)} parts, headers {headers}")
                if run:
                    f = forms[name]
                    f.seconds.append(seconds)
                    f.read_seconds.append(read_s)
                    f.cpu_seconds += cpu
                    f.body_bytes, f.plain = len(body), plain
    finally:
        conn.close()
    return forms


def gzip_pieces(plain: bytes, parts: int, level: int) -> tuple[float, int]:
    """(seconds, bytes) to gzip an answer piece by piece (PIECE_PARTS URLs each, one sync flush each), as served."""
    pieces = max(1, -(-parts // PIECE_PARTS))
    step = -(-len(plain) // pieces)
    best = float("inf")
    out = 0
    for _ in range(5):
        started = time.perf_counter()
        z = zlib.compressobj(level, zlib.DEFLATED, 31)
        out = sum(
            len(z.compress(plain[at : at + step]) + z.flush(zlib.Z_SYNC_FLUSH)) for at in range(0, len(plain), step)
        )
        out += len(z.flush())
        best = min(best, time.perf_counter() - started)
    return best, out


def report(forms: dict[str, Form], total_parts: int) -> None:
    """One line per form with its ratios to the identity full form, then the level comparison and the verdict."""
    base = forms["identity"]
    base_ms, base_bytes = statistics.median(base.seconds) * 1e3, base.body_bytes
    print(f"part-urls on the wire, all {total_parts:,} URLs (median of {len(base.seconds)}, time to the last byte):",
          flush=True)  # fmt: skip
    for name, f in forms.items():
        med, read_ms = statistics.median(f.seconds) * 1e3, statistics.median(f.read_seconds) * 1e3
        p90 = statistics.quantiles(f.seconds, n=10)[-1] * 1e3 if len(f.seconds) > 1 else med
        print(
            f"  {name:<13} {f.body_bytes / 1e6:6.3f} MB ({f.body_bytes / base_bytes:.3f}x) | median {med:6.1f} ms "
            f"({med / base_ms:.2f}x), best {min(f.seconds) * 1e3:.1f} ms ({min(f.seconds) / min(base.seconds):.2f}x), "
            f"p90 {p90:.1f} ms | server CPU {f.cpu_seconds / len(f.seconds) * 1e3:.1f} ms "
            f"({f.cpu_seconds / base.cpu_seconds:.2f}x) | the uploader reads it in {read_ms:.1f} ms",
            flush=True,
        )
    for name in ("identity", "compact"):
        plain = forms[name].plain
        (s1, b1), (s6, b6) = gzip_pieces(plain, total_parts, 1), gzip_pieces(plain, total_parts, 6)
        print(
            f"  zlib on the {name} answer ({len(plain) / 1e6:.2f} MB), piece by piece: level 1 {s1 * 1e3:.1f} ms "
            f"{b1 / 1e6:.3f} MB | level 6 {s6 * 1e3:.1f} ms {b6 / 1e6:.3f} MB ({s6 / s1:.1f}x the time for "
            f"{b6 / b1:.2f}x the bytes)",
            flush=True,
        )
    used = forms["compact+gzip"]
    used_ms, used_best = statistics.median(used.seconds) * 1e3, min(used.seconds) * 1e3
    print(
        f"  the uploader's form (compact+gzip): {used.body_bytes / 1e6:.3f} MB, {used_ms:.1f} ms median, "
        f"{used_best:.1f} ms best: {base_bytes / used.body_bytes:.1f}x fewer bytes, {base_ms / used_ms:.2f}x the "
        f"identity form's speed; targets <= {TARGET_BYTES / 1e6:.1f} MB and <= {TARGET_MS:.0f} ms",
        flush=True,
    )
