"""`make run`'s dev stack as a newcomer meets it: the README's curl walk-through pasted next to it, what the local
S3 then holds, and a second `make run` refused without touching the first (same data dir, same port, or a port
something else holds).

The stack is `python -m deploy.local.devstack` (what `make run` runs) with its own Valkey and moto, in a temporary
data dir and on a free port; parts of 5 MiB keep the walk-through small.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.settings import MIB
from deploy.local.devlock import DATA_LOCK_FILE, port_lock_path
from deploy.local.devstack import free_port

ROOT = Path(__file__).resolve().parents[2]
PART_SIZE = 5 * MIB
VIDEO_SIZE = 2 * PART_SIZE + 12345  # three parts, the last one short
START_SECONDS = 90.0


@dataclass
class RunningStack:
    """A dev stack process and where it keeps its files."""

    proc: subprocess.Popen[bytes]
    home: Path
    """The folder a newcomer works in: `.data/` (the data dir) is in it."""
    data: Path
    port: int
    env: dict[str, str]
    log: Path

    @property
    def dev_env(self) -> dict[str, str]:
        lines = (self.data / "dev.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def stack_env(data: Path, port: int, **extra: str) -> dict[str, str]:
    """The environment of `make run`: nothing of the caller's SPATIALGEN_* settings, a data dir and a port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPATIALGEN_") and k not in ("BASE", "KEY")}
    return env | {"SPATIALGEN_DATA_DIR": str(data), "SPATIALGEN_PORT": str(port), **extra}


def make_run(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "deploy.local.devstack"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


@pytest.fixture(scope="module")
def dev_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    home = tmp_path_factory.mktemp("newcomer")
    data, port = home / ".data", free_port()
    env = stack_env(data, port, SPATIALGEN_PART_SIZE_BYTES=str(PART_SIZE))
    log = home / "make-run.log"
    proc = make_run(env, log)
    stack = RunningStack(proc, home, data, port, env, log)
    try:
        deadline = time.monotonic() + START_SECONDS
        while not (data / "dev.env").exists():  # written once the API listens and the dev key exists
            assert proc.poll() is None, f"make run exited with {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"make run did not come up:\n{log.read_text()}"
            time.sleep(0.2)
        # As a person would be by the time they paste: the API's storage client is up (on a loaded machine it can
        # take longer than the walk-through's retries of 503 storage_not_ready).
        ready = f"http://127.0.0.1:{port}/health/ready"
        while httpx.get(ready).json().get("checks", {}).get("storage") != "ok":
            assert time.monotonic() < deadline, f"storage never ready:\n{log.read_text()}"
            time.sleep(0.2)
        yield stack
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def readme_walkthrough() -> str:
    """The README's curl walk-through: the one sh block between its markers."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- walkthrough:begin -->", 1)[1].split("<!-- walkthrough:end -->", 1)[0]
    match = re.fullmatch(r"\s*```sh\n(.*)```\s*", section, re.S)
    assert match, "the walk-through is one ```sh block between the markers"
    return match.group(1)


def test_the_readme_walkthrough_runs_as_pasted_next_to_make_run(dev_stack: RunningStack) -> None:
    # Pasted into bash in the folder `make run` runs in (it reads .data/dev.env); -e and pipefail so that any
    # command failing on the way fails the test, not only the last one.
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-e", "-o", "pipefail", "-c", readme_walkthrough()],
        cwd=dev_stack.home, env={**dev_stack.env, "SIZE": str(VIDEO_SIZE)}, capture_output=True, text=True,
        timeout=90, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    (sid,) = re.findall(r"^group (\S+): video \S+ \(multipart, 3 parts\)", out, re.M)
    assert len(re.findall(r"^part \d: bytes \d+-\d+ stored, ETag \"\w+\"$", out, re.M)) == 3
    (library_id,) = re.findall(r"^libraryId: (\d+)$", out, re.M)
    assert "subtitles stored: 200" in out and re.search(r'"status":"canceled"', out)

    dev = dev_stack.dev_env
    group = httpx.get(f"{dev['SPATIALGEN_API_URL']}/api/videos/uploads/{sid}",
                      headers={"X-SPATIALGEN-APPKEY": dev["SPATIALGEN_API_KEY"]}).json()  # fmt: skip
    assert (group["status"], group["libraryId"]) == ("completed", int(library_id))
    assert [f["uploadedBytes"] for f in group["files"]] == [VIDEO_SIZE, group["files"][1]["totalBytes"]]

    # What the local S3 now holds, as the README shows it.
    listed = subprocess.run([sys.executable, "-m", "deploy.local.s3ls", f"uploads/dev/{sid}/"], cwd=ROOT,
                            env=dev_stack.env, capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert "objects: 2 " in listed.stdout and f"{VIDEO_SIZE:,}" in listed.stdout, listed.stdout
    assert "open multipart uploads: 0" in listed.stdout


def test_dev_env_holding_the_dev_key_is_the_owners_alone(dev_stack: RunningStack) -> None:
    assert stat.S_IMODE((dev_stack.data / "dev.env").stat().st_mode) == 0o600


def refused(env: dict[str, str], log: Path) -> str:
    """Run a second `make run`; it must exit non-zero at once. Returns what it said."""
    proc = make_run(env, log)
    try:
        assert proc.wait(60) != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return log.read_text()


def test_a_second_make_run_refuses_and_leaves_the_first_alone(dev_stack: RunningStack, tmp_path: Path) -> None:
    dev_env = dev_stack.data / "dev.env"
    before = (dev_env.read_bytes(), dev_env.stat().st_mtime_ns)
    first = f"pid {dev_stack.proc.pid}, API http://127.0.0.1:{dev_stack.port}"

    # The same checkout again (same data dir), even on another port.
    said = refused(stack_env(dev_stack.data, free_port()), tmp_path / "same-data.log")
    assert f"a dev stack already runs on the data dir {dev_stack.data}" in said and first in said, said
    assert "SPATIALGEN_DATA_DIR=" in said and f"kill {dev_stack.proc.pid}" in said

    # Another checkout (its own data dir) on the same port.
    other = tmp_path / "other" / ".data"
    said = refused(stack_env(other, dev_stack.port), tmp_path / "same-port.log")
    assert f"port {dev_stack.port} is taken by another dev stack" in said and first in said, said
    assert f"SPATIALGEN_PORT={dev_stack.port + 1} make run" in said
    assert not (other / "dev.env").exists() and not (other / "valkey").exists()

    # A port something else listens on (no dev stack): named before any store starts.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        said = refused(stack_env(tmp_path / "third" / ".data", taken), tmp_path / "squatted.log")
    assert f"port {taken} on 127.0.0.1 is taken" in said, said

    # The first stack is untouched: its dev.env as it was, its API answering with its key.
    assert (dev_env.read_bytes(), dev_env.stat().st_mtime_ns) == before
    dev = dev_stack.dev_env
    r = httpx.get(f"{dev['SPATIALGEN_API_URL']}/api/videos/uploads/{'0' * 32}",
                  headers={"X-SPATIALGEN-APPKEY": dev["SPATIALGEN_API_KEY"]})  # fmt: skip
    assert r.status_code == 404 and r.json()["code"] == "session_not_found"


def test_stopping_removes_dev_env_and_lets_the_next_stack_start(dev_stack: RunningStack) -> None:
    os.kill(dev_stack.proc.pid, signal.SIGTERM)  # what the refusal suggests: `kill PID`
    assert dev_stack.proc.wait(30) == 0, dev_stack.log.read_text()
    assert not (dev_stack.data / "dev.env").exists()
    # The lock files stay (deleting one races with a stack opening it) but name nobody, and are free.
    assert (dev_stack.data / DATA_LOCK_FILE).read_text() == ""
    assert port_lock_path(dev_stack.port).read_text() == ""
