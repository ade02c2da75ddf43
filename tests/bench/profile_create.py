"""Profile: where the API's CPU goes on POST /api/videos/uploads under load (py-spy, sampled, native frames off).

Starts Valkey and our app as bench_start.py does (granian, 1 worker, rate limits on but out of reach), runs it
under `py-spy record --subprocesses --nonblocking`, drives creates from bench_start.py's load process for
--seconds, then stops the server and reads py-spy's collapsed stacks. Prints where the samples land:

- by area, from each sample's innermost Python frame (self time): our code by module, Litestar, msgspec's
  Python side, redis-py, the event loop and server glue (msgspec's and granian's C code shows up as the Python
  frame that called it);
- the functions with the most self time;
- inclusive shares of the stages of a create (the handler, validation, the state script call, ...).

Not part of `make bench` (a profile, no baseline): `make profile`, or `python tests/bench/profile_create.py`.
The README's "Where a create's time goes" quotes a run of it.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import msgspec  # noqa: E402

from deploy.local.devstack import BIN, free_port, start_valkey, wait_for_port  # noqa: E402
from tests.bench.bench_start import UNREACHABLE_LIMITS, LoadJob, LoadResult, _create_key, _load_process  # noqa: E402
from tests.conftest import SEED_REQUEST  # noqa: E402

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]+)(?::\d+)?\)$")
SITE = "site-packages/"
STDLIB_LOOP = ("asyncio/", "selectors.py", "uvloop/", "concurrent/", "threading.py")
# Stages of a create: (label, function name, file suffix), matched anywhere in a sample's stack (inclusive share).
STAGES = (
    ("Litestar's ASGI call (routing, middleware, handler, response)", "__call__", "litestar/app.py"),
    ("  our handler, start_upload_group", "start_upload_group", "app/http/routes.py"),
    ("    authenticate (key cache or lookup)", "authenticate", "app/http/plumbing.py"),
    ("    read_body", "read_body", "app/http/plumbing.py"),
    ("    parse_start_request (decode and every rule)", "parse_start_request", "app/domain/rules.py"),
    ("    _new_group (ids, part plans, the record)", "_new_group", "app/uploads/start.py"),
    ("    the provisioning job document", "build", "app/state/jobs.py"),
    ("    create_group (script call: RESP, round trip, reply)", "create_group", "app/state/store.py"),
    ("    created_view (the answer document)", "created_view", "app/uploads/views.py"),
    ("    json_response", "json_response", "app/http/plumbing.py"),
)


def area(file: str) -> str:
    """The area a frame's file belongs to."""
    if SITE in file:
        package = file.split(SITE, 1)[1].split("/", 1)[0]
        return f"{package} (library)"
    rel = file.removeprefix(str(REPO) + "/")
    if rel.startswith(("app/", "worker/")):
        return rel
    if any(part in file for part in STDLIB_LOOP):
        return "event loop and threads (stdlib)"
    return "other stdlib" if "/lib/python" in file else rel


Stack = tuple[list[tuple[str, str]], int]  # frames (function, file), outermost first; sample count
NATIVE = "granian's native threads (a sample with no Python frame)"


def parse(raw: Path) -> list[Stack]:
    """py-spy's raw (collapsed) output, 'frame;frame;... count' per line; its `process N` frames dropped."""
    stacks = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = []
        for text in stack.split(";"):
            m = FRAME.match(text)
            if m:
                frames.append((m["func"], m["file"]))
        stacks.append((frames, int(count)))
    return stacks


def is_startup(frames: list[tuple[str, str]]) -> bool:
    """Importing modules, building the app, its lifespan (start and stop), the storage session prepared once in a
    thread at start: not serving a request."""
    startup = (".lifespan", "_prepared_session")
    return any(file.startswith("<frozen importlib") or func.endswith(startup) for func, file in frames)


def calls(frames: list[tuple[str, str]], func: str, suffix: str) -> bool:
    """Whether `func` (a plain or qualified name, e.g. 'UploadService._new_group') of `suffix` is on the stack."""
    return any((fn == func or fn.endswith("." + func)) and fl.endswith(suffix) for fn, fl in frames)


def report(stacks: list[Stack], top: int) -> None:
    """Print self time by area and function, and inclusive shares of the stages, of the serving samples."""
    startup = sum(n for frames, n in stacks if is_startup(frames))
    serving = [(frames, n) for frames, n in stacks if not is_startup(frames)]
    total = sum(n for _, n in serving)
    if not total:
        raise SystemExit("py-spy recorded no samples while serving")
    by_area: Counter[str] = Counter()
    by_func: Counter[str] = Counter()
    for frames, n in serving:
        if not frames:
            by_area[NATIVE] += n
            by_func[NATIVE] += n
            continue
        func, file = frames[-1]
        by_area[area(file)] += n
        by_func[f"{func} ({area(file)})"] += n
    print(f"{total} samples while serving (busy threads only; {startup} more at start-up and shutdown left out)")
    print("self time by area (innermost Python frame; C code counts for its Python caller):")
    for name, n in by_area.most_common(top):
        print(f"  {100 * n / total:5.1f} %  {name}")
    print(f"self time, top {top} functions:")
    for name, n in by_func.most_common(top):
        print(f"  {100 * n / total:5.1f} %  {name}")
    print("inclusive share of a create's stages (a sample counts for every stage whose function is on its stack):")
    for label, func, suffix in STAGES:
        n = sum(c for frames, c in serving if calls(frames, func, suffix))
        print(f"  {100 * n / total:5.1f} %  {label}")


def main() -> None:
    """Start Valkey and the server under py-spy, load it, stop it, report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of load (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections (default 32)")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second (default 250)")
    parser.add_argument("--top", type=int, default=15, help="rows per table (default 15)")
    parser.add_argument("--keep", type=Path, help="also keep py-spy's raw output at this path")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with tempfile.TemporaryDirectory(prefix="profile_create_") as tmp:
        vport = free_port()
        valkey = start_valkey(vport, Path(tmp) / "valkey", appendonly=False)
        server: subprocess.Popen[bytes] | None = None
        ctx = multiprocessing.get_context("spawn")
        pipe, child = ctx.Pipe()
        loader = ctx.Process(target=_load_process, args=(child,), name="profile-load", daemon=True)
        loader.start()
        raw = args.keep or Path(tmp) / "create.raw"
        try:
            url = f"redis://127.0.0.1:{vport}/0"
            key = asyncio.run(_create_key(url))
            env = {
                **os.environ,
                "SPATIALGEN_REDIS_URL": url,
                "SPATIALGEN_S3_ENDPOINT_URL": "http://127.0.0.1:9",  # a create never talks to S3
                "SPATIALGEN_S3_ACCESS_KEY_ID": "bench",
                "SPATIALGEN_S3_SECRET_ACCESS_KEY": "bench-secret",
                "SPATIALGEN_RATE_LIMITS": UNREACHABLE_LIMITS,
                "SPATIALGEN_QUOTA_LIVE_GROUPS": str(10**9),
                "SPATIALGEN_QUOTA_LIVE_BYTES": str(2**62),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            }
            port = free_port()
            cmd = [str(BIN / "py-spy"), "record", "--subprocesses", "--nonblocking", "--rate", str(args.rate),
                   "--format", "raw", "--output", str(raw), "--",
                   str(BIN / "granian"), "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
                   "--workers", "1", "--no-ws", "--log-level", "warning", "app.http.asgi:app"]  # fmt: skip
            server = subprocess.Popen(cmd, env=env, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL)
            wait_for_port(port, server)
            body = msgspec.json.encode(SEED_REQUEST)
            head = (f"POST /api/videos/uploads HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json"
                    f"\r\nX-SPATIALGEN-APPKEY: {key}\r\nContent-Length: {len(body)}\r\n\r\n")  # fmt: skip
            pipe.send(LoadJob(port, head.encode() + body, args.connections, 1.0, args.seconds))
            result: LoadResult = pipe.recv()
            print(f"load: {result.rps:.0f} creates/s under the profiler (it slows the server; compare bench_start), "
                  f"errors {dict(result.errors) or 'none'}", flush=True)  # fmt: skip
            os.killpg(server.pid, signal.SIGINT)  # as Ctrl-C: py-spy writes its output, granian stops
            server.wait(60)
        finally:
            pipe.send(None)
            loader.join(5)
            if server is not None and server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)
            valkey.stop()
        report(parse(raw), args.top)


if __name__ == "__main__":
    main()
