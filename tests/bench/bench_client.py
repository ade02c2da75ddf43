"""Benchmark: spatialgen-upload against boto3's managed upload_file (s3transfer) into the same local moto S3.

Same file, part size and concurrency; rounds alternate. Each uploader runs in a process of its own, which times its
upload call and whose peak RSS comes from wait4. Then both send the same parts to a trivial HTTP sink, to show how
much of the time is moto's. Never asserts; prints ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MIB = 1024 * 1024
GIB = 1024 * MIB
RATIO_TARGET = 1.0
MEMORY_PER_PART_MIB = 8
MEMORY_BASE_MIB = 60
ACCESS = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench-secret", "region_name": "us-east-1"}
BUCKET = "bench-uploads"


# ---------------------------------------------------------------------------------------------
# Child processes: each prints one JSON line {"seconds": ...} after timing only the upload call.
# ---------------------------------------------------------------------------------------------
class TimedLines(io.StringIO):
    """stdout for the command's --json events, noting when each event was written."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        if text.startswith("{"):
            self.times.append((time.perf_counter(), json.loads(text)["event"]))
        return super().write(text)


def child_ours(args: argparse.Namespace) -> dict[str, Any]:
    """The real command (`spatialgen-upload send`), in this process so its setup is not timed."""
    from app.client.cli import main

    # The key: SPATIALGEN_API_KEY, set by the parent (never an argument).
    argv = ["send", "--layout", "2D", "--name", f"bench {time.time()}", "--video", args.file, "--new", "--json",
            "--parallel", str(args.parallel), "--api-url", args.api_url,
            "--state-dir", args.state_dir, "--checksum", args.checksum]  # fmt: skip
    events = TimedLines()
    with contextlib.redirect_stdout(events):
        started = time.perf_counter()
        code = main(argv)
        ended = time.perf_counter()
    first = next(t for t, e in events.times if e == "file_started")
    last_part = max(t for t, e in events.times if e == "part_done")
    # setup: create the group; parts: first part-urls call to the last part stored; complete: the rest.
    phases = {"setup": first - started, "parts": last_part - first, "complete": ended - last_part}
    return {"seconds": ended - started, "exit": code, "phases": phases}


def boto3_checksums() -> str:
    """What s3transfer sends with each part here (botocore's default: a CRC32 when the operation supports one)."""
    import botocore
    from botocore import httpchecksum

    crc32 = httpchecksum._CHECKSUM_CLS["crc32"].__name__  # CrtCrc32Checksum when awscrt is installed
    return f"CRC32 per part (botocore {botocore.__version__}, {crc32})"


def _boto3_client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, config=Config(max_pool_connections=64), **ACCESS)


def child_boto3(args: argparse.Namespace) -> dict[str, Any]:
    """boto3's managed upload (s3transfer) with the same part size and concurrency."""
    from boto3.s3.transfer import TransferConfig

    s3 = _boto3_client(args.endpoint)
    config = TransferConfig(multipart_threshold=args.part_bytes, multipart_chunksize=args.part_bytes,
                            max_concurrency=args.parallel, use_threads=True)  # fmt: skip
    marks: dict[str, float] = {}

    def mark(name: str) -> Any:
        def handler(**kwargs: Any) -> None:  # a handler that returns something replaces the call's answer
            marks.setdefault(name, time.perf_counter())

        return handler

    for event in ("after-call.s3.CreateMultipartUpload", "before-call.s3.CompleteMultipartUpload"):
        s3.meta.events.register(event, mark(event))
    started = time.perf_counter()
    s3.upload_file(args.file, BUCKET, args.key, Config=config)
    ended = time.perf_counter()
    created = marks["after-call.s3.CreateMultipartUpload"]
    completing = marks["before-call.s3.CompleteMultipartUpload"]
    phases = {"setup": created - started, "parts": completing - created, "complete": ended - completing}
    return {"seconds": ended - started, "phases": phases}


def child_ours_parts(args: argparse.Namespace) -> dict[str, Any]:
    """The client's part PUTs alone (UploadClient.put_part, same bound on parts in flight) to a sink; with a
    checksum, each part's is computed first and sent as the command sends it (signed header, checked while sent)."""
    from app.client import UploadClient, checksums
    from app.client.plan import part_range

    size = os.path.getsize(args.file)
    numbers = list(range(1, -(-size // args.part_bytes) + 1))

    async def run() -> float:
        async with UploadClient("http://unused.invalid", "unused", parallel=args.parallel) as client:

            async def worker() -> None:
                while numbers:
                    n = numbers.pop(0)
                    start, end = part_range(n, args.part_bytes, size)
                    url = f"{args.endpoint}/{BUCKET}/{args.key}?partNumber={n}&uploadId=sink"
                    headers, expect = {}, None
                    if args.checksum != checksums.NONE:
                        value = await asyncio.to_thread(checksums.of_range, Path(args.file), start, end - start,
                                                        args.checksum)  # fmt: skip
                        headers = {checksums.header_name(args.checksum): value}
                        expect = (args.checksum, value) if args.checksum in checksums.CRCS else None
                    await client.put_part(url, Path(args.file), start, end - start, headers=headers, expect=expect)

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(args.parallel)))
            return time.perf_counter() - started

    return {"seconds": asyncio.run(run())}


# ---------------------------------------------------------------------------------------------
# A trivial S3 sink: enough of the protocol for upload_file (create, upload part, complete) and for
# plain part PUTs; bodies are counted and dropped. Keep-alive, one asyncio protocol per connection.
# ---------------------------------------------------------------------------------------------
_CREATED = (b"<?xml version='1.0' encoding='UTF-8'?><InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key>"
            b"<UploadId>sink</UploadId></InitiateMultipartUploadResult>")  # fmt: skip
_COMPLETED = (b"<?xml version='1.0' encoding='UTF-8'?><CompleteMultipartUploadResult><Location>l</Location>"
              b"<Bucket>b</Bucket><Key>k</Key><ETag>\"sink-1\"</ETag></CompleteMultipartUploadResult>")  # fmt: skip


class SinkProtocol(asyncio.Protocol):
    """Reads requests, discards bodies (Content-Length or chunked), answers S3-shaped 200s."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.head = bytearray()
        self.left = 0
        self.chunked = False
        self.target = b""

    def data_received(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.left:
                take = min(self.left, len(view))
                self.left -= take
                view = view[take:]
                if not self.left and not self.chunked:
                    self._answer()
                continue
            self.head += view
            view = memoryview(b"")
            if self.chunked:
                self._chunks()
                continue
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.head[:end]).split(b"\r\n")
            rest = bytes(self.head[end + 4 :])
            self.head = bytearray()
            self.target = lines[0].split(b" ")[1]
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
            if headers.get(b"expect", b"").lower() == b"100-continue":
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.chunked = headers.get(b"transfer-encoding", b"").lower() == b"chunked"
            self.left = 0 if self.chunked else int(headers.get(b"content-length", b"0"))
            if not self.left and not self.chunked:
                self._answer()
            view = memoryview(rest)

    def _chunks(self) -> None:
        while True:
            end = self.head.find(b"\r\n")
            if end < 0:
                return
            size = int(bytes(self.head[:end]).split(b";")[0], 16)
            if size == 0:  # last chunk: drop any trailer up to the blank line
                done = self.head.find(b"\r\n\r\n")
                if done < 0:
                    return
                rest = bytes(self.head[done + 4 :])
                self.head = bytearray()
                self.chunked = False
                self._answer()
                if rest:
                    self.data_received(rest)
                return
            if len(self.head) < end + 2 + size + 2:
                self.left = end + 2 + size + 2 - len(self.head)
                self.head = bytearray()
                return
            del self.head[: end + 2 + size + 2]

    def _answer(self) -> None:
        body = b""
        if b"?uploads" in self.target:
            body = _CREATED
        elif b"uploadId=" in self.target and b"partNumber=" not in self.target:
            body = _COMPLETED
        self.transport.write(b"HTTP/1.1 200 OK\r\nETag: \"sink\"\r\nContent-Type: application/xml\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip


def child_sink(args: argparse.Namespace) -> None:
    """Serve the sink on loopback until terminated."""

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(SinkProtocol, "127.0.0.1", args.port)
        async with server:
            await server.serve_forever()

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    asyncio.run(serve())


CHILDREN = {"ours": child_ours, "boto3": child_boto3, "ours-parts": child_ours_parts}


# ---------------------------------------------------------------------------------------------
# The parent: services, rounds, figures.
# ---------------------------------------------------------------------------------------------
@dataclass
class Run:
    """One upload by one child process."""

    seconds: float
    max_rss_mib: float
    cpu_seconds: float
    moto_cpu_seconds: float
    detail: dict[str, Any]


def run_child(mode: str, extra: list[str], moto_pid: int | None) -> Run:
    """Run one child upload: its own timing and peak RSS, and its CPU from wait4."""
    from tests.bench.bench_start import tree_cpu_seconds

    moto_before = tree_cpu_seconds(moto_pid) if moto_pid else 0.0
    proc = subprocess.Popen([sys.executable, __file__, "--child", mode, *extra], stdout=subprocess.PIPE, cwd=REPO)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} child exited with {proc.returncode}: {out[-2000:]}")
    detail = json.loads(out.strip().splitlines()[-1])
    moto_cpu = tree_cpu_seconds(moto_pid) - moto_before if moto_pid else 0.0
    return Run(detail["seconds"], detail["peak_rss_kib"] / 1024, usage.ru_utime + usage.ru_stime, moto_cpu, detail)


def peak_rss_kib() -> int:
    """This process's resident-set high-water mark (VmHWM).

    Not wait4's ru_maxrss: Linux folds the pre-exec address space into it, and a child spawned with vfork
    reports the parent's peak as its own.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def make_file(path: Path, size: int, *, sparse: bool) -> None:
    """A test file: sparse (zeros, no disk) or generated (a repeated 64 MiB random block)."""
    with open(path, "wb") as fh:
        if sparse:
            fh.truncate(size)
            return
        block = os.urandom(64 * MIB)
        left = size
        while left:
            left -= fh.write(block[: min(left, len(block))])


def phases(r: Run) -> str:
    """Where the seconds of a run went: setup, parts, complete."""
    return ", ".join(f"{k} {v:.1f} s" for k, v in r.detail.get("phases", {}).items())


def mib_s(size: int, seconds: float) -> float:
    """Throughput in MiB/s."""
    return size / MIB / seconds


def clear_bucket(s3: Any) -> None:
    """Delete every object and open upload, so moto's memory does not grow round after round."""
    for up in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=BUCKET, Key=up["Key"], UploadId=up["UploadId"])
    for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        s3.delete_object(Bucket=BUCKET, Key=obj["Key"])


async def _create_key(redis_url: str) -> str:
    from redis.asyncio import Redis

    from app.state.apikeys import create_key

    client = Redis.from_url(redis_url)
    try:
        secret, _ = await create_key(client, account="bench", role="upload", label="bench_client")
    finally:
        await client.aclose()
    return secret


def summary(name: str, size: int, runs: list[Run], server: str = "moto") -> str:
    """Median throughput, and each round's."""
    rates = ", ".join(f"{mib_s(size, r.seconds):.0f}" for r in runs)
    rate = statistics.median(mib_s(size, r.seconds) for r in runs)
    cpu = statistics.median(r.cpu_seconds for r in runs)
    server_cpu = statistics.median(r.moto_cpu_seconds for r in runs)
    return (f"{name:<8} median {rate:7.1f} MiB/s  (rounds: {rates}); peak RSS {max(r.max_rss_mib for r in runs):.0f} "
            f"MiB; CPU {cpu:.1f} s; {server} CPU {server_cpu:.1f} s")  # fmt: skip


def moto_complete_cost(endpoint: str, file: Path, part: int, size: int) -> tuple[float, float]:
    """Seconds moto spends in CompleteMultipartUpload for the same bytes sent two ways.

    Uploads sent with `--checksum none` are created without a checksum algorithm and their parts arrive through
    presigned URLs without checksum headers; s3transfer creates CRC32 uploads and sends each part's CRC32 (as the
    uploader's default sends CRC64NVME ones). moto assembles both,
    but not at the same cost; real S3 assembles server-side either way.
    """
    import httpx

    s3 = _boto3_client(endpoint)
    numbers = list(range(1, -(-size // part) + 1))
    out = []
    for presigned in (True, False):
        key = f"probe/{presigned}.mov"
        extra = {} if presigned else {"ChecksumAlgorithm": "CRC32"}
        upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key, **extra)["UploadId"]
        etags = []
        with open(file, "rb") as fh, httpx.Client(timeout=None) as http:
            for n in numbers:
                body = fh.read(min(part, size - (n - 1) * part))
                if presigned:
                    params = {"Bucket": BUCKET, "Key": key, "UploadId": upload, "PartNumber": n}
                    url = s3.generate_presigned_url("upload_part", Params=params)
                    etags.append(http.put(url, content=body).headers["etag"])
                else:
                    answer = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=n, Body=body,
                                            ChecksumAlgorithm="CRC32")  # fmt: skip
                    etags.append(answer["ETag"])
        parts = [{"PartNumber": n, "ETag": e} for n, e in zip(numbers, etags, strict=True)]
        started = time.perf_counter()
        s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})
        out.append(time.perf_counter() - started)
        s3.delete_object(Bucket=BUCKET, Key=key)
    return out[0], out[1]


def run(args: argparse.Namespace, tmp: Path, procs: list[Any]) -> None:  # noqa: PLR0915 - phases in sequence, each printed
    """Start Valkey, moto, the API and a worker; alternate rounds; then the sink comparison."""
    from deploy.local.devstack import (
        api_command,
        free_port,
        start_moto,
        start_valkey,
        stop,
        wait_for_port,
        worker_command,
    )

    size = int(args.size_gib * GIB)
    part = args.part_mib * MIB
    file = tmp / "bench.mov"
    make_file(file, size, sparse=args.sparse)
    valkey = start_valkey(free_port(), tmp / "valkey", appendonly=False)
    procs.append(valkey)
    moto_port = free_port()
    moto = start_moto(moto_port)
    procs.append(moto)
    endpoint = f"http://127.0.0.1:{moto_port}"
    s3 = _boto3_client(endpoint)
    s3.create_bucket(Bucket=BUCKET)
    api_port = free_port()
    env = {**os.environ, "SPATIALGEN_PORT": str(api_port), "SPATIALGEN_REDIS_URL": valkey.url,
           "SPATIALGEN_S3_ENDPOINT_URL": endpoint, "SPATIALGEN_S3_BUCKET": BUCKET,
           "SPATIALGEN_S3_ACCESS_KEY_ID": ACCESS["aws_access_key_id"],
           "SPATIALGEN_S3_SECRET_ACCESS_KEY": ACCESS["aws_secret_access_key"],
           "SPATIALGEN_PART_SIZE_BYTES": str(part), "SPATIALGEN_COMPLETE_WAIT_SECONDS": "30"}  # fmt: skip
    api = subprocess.Popen(api_command(), env=env, cwd=REPO, stderr=subprocess.DEVNULL)
    procs.append(api)
    worker = subprocess.Popen(worker_command(), env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(worker)
    wait_for_port(api_port, api)
    # The children read the key from the environment, as the command wants it (never an argument).
    os.environ["SPATIALGEN_API_KEY"] = asyncio.run(_create_key(valkey.url))
    print(f"file {size / GIB:.2f} GiB ({'sparse' if args.sparse else 'generated'}), part {args.part_mib} MiB "
          f"({-(-size // part)} parts), {args.parallel} parts in flight, our checksums {args.checksum}; boto3 "
          f"{boto3_checksums()}", flush=True)  # fmt: skip

    ours_args = ["--file", str(file), "--parallel", str(args.parallel), "--api-url", f"http://127.0.0.1:{api_port}",
                 "--state-dir", str(tmp / "state"), "--checksum", args.checksum]  # fmt: skip
    boto_args = ["--file", str(file), "--parallel", str(args.parallel), "--part-bytes", str(part),
                 "--endpoint", endpoint]  # fmt: skip
    ours: list[Run] = []
    boto: list[Run] = []
    for rnd in range(1, args.rounds + 1):
        pair = [("ours", ours_args, ours), ("boto3", [*boto_args, "--key", f"boto3/{rnd}.mov"], boto)]
        for mode, extra, runs in pair if rnd % 2 else pair[::-1]:
            r = run_child(mode, extra, moto.pid)
            runs.append(r)
            clear_bucket(s3)
            print(f"round {rnd} {mode:<6} {r.seconds:6.2f} s  {mib_s(size, r.seconds):7.1f} MiB/s  peak RSS "
                  f"{r.max_rss_mib:5.0f} MiB  CPU {r.cpu_seconds:5.1f} s  moto CPU {r.moto_cpu_seconds:5.1f} s  "
                  f"({phases(r)})", flush=True)  # fmt: skip
    if args.rounds:  # --rounds 0: the sink comparison alone
        ratio = statistics.median(r.seconds for r in boto) / statistics.median(r.seconds for r in ours)
        rss = max(r.max_rss_mib for r in ours)
        budget = args.parallel * MEMORY_PER_PART_MIB + MEMORY_BASE_MIB
        print(summary("ours", size, ours))
        print(summary("boto3", size, boto))
        print(f"throughput ratio ours/boto3 (moto): {ratio:.2f} (target >= {RATIO_TARGET:.1f})")
        for phase in ("setup", "parts", "complete"):
            mine = statistics.median(r.detail["phases"][phase] for r in ours)
            theirs = statistics.median(r.detail["phases"][phase] for r in boto)
            print(f"  {phase:<8} ours {mine:6.2f} s  boto3 {theirs:6.2f} s  (medians)")
        print(f"client peak RSS {rss:.0f} MiB (target <= {args.parallel} x {MEMORY_PER_PART_MIB} + {MEMORY_BASE_MIB} "
              f"= {budget} MiB): {'met' if rss <= budget else 'NOT met'}", flush=True)  # fmt: skip

    if args.probe_mib:
        probe_size = min(size, args.probe_mib * MIB)
        presigned, crc32 = moto_complete_cost(endpoint, file, part, probe_size)
        print(f"moto CompleteMultipartUpload of {probe_size // MIB} MiB: {presigned:.2f} s for presigned parts without "
              f"checksums (the service's uploads with --checksum none), {crc32:.2f} s for CRC32 parts (s3transfer's): "
              f"x{presigned / crc32:.2f}", flush=True)  # fmt: skip

    if args.sink_rounds:
        stop([api, worker])
        sink_port = free_port()
        sink = subprocess.Popen([sys.executable, __file__, "--child", "sink", "--port", str(sink_port)], cwd=REPO)
        procs.append(sink)
        wait_for_port(sink_port, sink)
        sink_url = f"http://127.0.0.1:{sink_port}"
        sink_args = ["--file", str(file), "--parallel", str(args.parallel), "--part-bytes", str(part),
                     "--endpoint", sink_url, "--key", "sink.mov", "--checksum", args.checksum]  # fmt: skip
        parts: list[Run] = []
        boto_sink: list[Run] = []
        for rnd in range(1, args.sink_rounds + 1):
            pair = [("ours-parts", parts), ("boto3", boto_sink)]
            for mode, runs in pair if rnd % 2 else pair[::-1]:
                r = run_child(mode, sink_args, sink.pid)
                runs.append(r)
                print(f"sink round {rnd} {mode:<10} {r.seconds:6.2f} s  {mib_s(size, r.seconds):7.1f} MiB/s  "
                      f"CPU {r.cpu_seconds:5.1f} s  sink CPU {r.moto_cpu_seconds:5.1f} s", flush=True)  # fmt: skip
        sink_ratio = statistics.median(r.seconds for r in boto_sink) / statistics.median(r.seconds for r in parts)
        print(summary("ours", size, parts, "sink") + "   (part PUTs only)")
        print(summary("boto3", size, boto_sink, "sink"))
        print(f"throughput ratio ours/boto3 (sink): {sink_ratio:.2f}", flush=True)


def main() -> None:
    """Parse options; run the parent, or one child."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gib", type=float, default=2.0, help="file size (default 2 GiB)")
    parser.add_argument("--part-mib", type=int, default=64, help="part size for both uploaders (default 64 MiB)")
    parser.add_argument("--parallel", type=int, default=8, help="parts in flight for both (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds against moto (default 3)")
    parser.add_argument("--sink-rounds", type=int, default=2, help="rounds against the sink (default 2; 0: none)")
    parser.add_argument("--probe-mib", type=int, default=2048,
                        help="MiB for the moto complete probe (default 2048, at most the file; 0: none)")  # fmt: skip
    parser.add_argument("--sparse", action=argparse.BooleanOptionalAction, default=True,
                        help="sparse file of zeros (default) or generated bytes on disk")  # fmt: skip
    parser.add_argument("--checksum", default="CRC64NVME", choices=["CRC64NVME", "CRC32C", "SHA256", "none"],
                        help="the uploader's --checksum (default CRC64NVME, its default)")  # fmt: skip
    # Child modes (used by the parent).
    parser.add_argument("--child", choices=[*CHILDREN, "sink"], help=argparse.SUPPRESS)
    for name in ("--file", "--api-url", "--state-dir", "--endpoint", "--key"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--part-bytes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "sink":
        child_sink(args)
        return
    if args.child:
        result = CHILDREN[args.child](args)
        print(json.dumps({**result, "peak_rss_kib": peak_rss_kib()}), flush=True)
        return
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    procs: list[Any] = []
    from deploy.local.devstack import stop

    with tempfile.TemporaryDirectory(prefix="bench_client_") as tmp:
        try:
            run(args, Path(tmp), procs)
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            sys.exit(130)
        finally:
            stop(procs)


if __name__ == "__main__":
    main()
